"""Pretrained-weights store: find, download and verify the published ResNeSt Gluon weights.

The on-disk and remote layout is GluonCV's (``{root}/{name}-{sha1[:8]}.params``, served as
``{base_url}gluon/models/{name}-{sha1[:8]}.zip``) so files GluonCV already cached under
``~/.mxnet/models`` are reused and existing GluonCV mirrors keep working.

A file is only ever returned after its SHA-1 has been checked, and it only appears under its final
name through an atomic write (:mod:`resnest_gluon.atomic`) of a verified temporary file. Temporary names
are unique per process and thread, so concurrent downloads into the same root are safe without a lock file.
"""
import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

import requests
from tqdm import tqdm

from .atomic import atomic_path
from .exits import WeightsUnavailableError

__all__ = [
    "MODEL_SHA1",
    "WeightsUnavailableError",
    "default_root",
    "default_base_url",
    "model_url",
    "sha1_of",
    "check_sha1",
    "get_model_file",
]

# SHA-1 of the published Gluon .params files (the same table GluonCV uses).
MODEL_SHA1 = {
    "resnest14": "7e0b0cae2fd7e9084d1e498b858af1429a6eb1cb",
    "resnest26": "364590740605b6a2b95f5bb77436d781a817436f",
    "resnest50": "bcfefe1dd1dd1ef5cfed5563123c1490ea37b42e",
    "resnest101": "5da943b3230f071525a98639945a6b3b3a45ac95",
    "resnest200": "0c5d117df664ace220aa6fc2922c094bb079d381",
    "resnest269": "11ae7f5da2bcdbad05ba7e84f9b74383e717f3e3",
}

APACHE_REPO_URL = "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/"
# (connect, read) seconds: fail fast on a dead host, but tolerate a slow mirror.
TIMEOUT = (10, 60)
_CHUNK = 1 << 20
_SHA1_RE = re.compile(r"^[0-9a-fA-F]{40}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

_log = logging.getLogger(__name__)


def default_root():
    """``$MXNET_HOME/models`` or ``~/.mxnet/models``: where GluonCV and MXNet keep their weights."""
    home = os.environ.get("MXNET_HOME")
    root = os.path.join(home, "models") if home else os.path.join("~", ".mxnet", "models")
    return os.path.expanduser(root)


def default_base_url():
    """``$RESNEST_GLUON_REPO``, else GluonCV's ``$MXNET_GLUON_REPO``, else Apache's S3 bucket."""
    url = os.environ.get("RESNEST_GLUON_REPO") or os.environ.get("MXNET_GLUON_REPO") or APACHE_REPO_URL
    return url if url.endswith("/") else url + "/"


def _resolve_sha1(name, sha1):
    """The expected SHA-1 for ``name``: the published one, or the caller's for a private file."""
    if sha1 is None:
        if name not in MODEL_SHA1:
            raise WeightsUnavailableError(
                f"No published Gluon weights for {name!r}. Models with published weights: "
                f"{', '.join(MODEL_SHA1)}. Models named as in timm (e.g. 'resnest50d_4s2x40d') have no "
                "Gluon weights: convert the PyTorch weights with scripts/convert_torch_weights.py and load "
                "the resulting .params file (or pass sha1= for a file you publish on your own mirror)."
            )
        return MODEL_SHA1[name]
    if not isinstance(sha1, str) or not _SHA1_RE.match(sha1):
        raise ValueError(f"sha1 must be 40 hex digits, got {sha1!r}")
    if not isinstance(name, str) or not _NAME_RE.match(name):  # it becomes part of a path
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '_', '.' and '-'")
    return sha1.lower()


def _stem(name, sha1):
    return f"{name}-{sha1[:8]}"


def model_url(name, base_url=None, sha1=None):
    """URL of the zip holding ``name``'s weights; useful to prepare a mirror or an offline copy."""
    sha1 = _resolve_sha1(name, sha1)
    base_url = base_url or default_base_url()
    if not base_url.endswith("/"):
        base_url += "/"
    return f"{base_url}gluon/models/{_stem(name, sha1)}.zip"


def sha1_of(path):
    """SHA-1 hex digest of a file, read in chunks so multi-hundred-MB weights don't fill memory."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha1(path, sha1):
    """True if ``path`` is a file whose SHA-1 equals ``sha1`` (case-insensitive)."""
    return os.path.isfile(path) and sha1_of(path) == sha1.lower()


class _UnsupportedURL(Exception):
    """A base URL whose scheme this store cannot fetch from."""


def _download(url, fileobj, progress, desc):
    """Stream ``url`` (http, https or file) into ``fileobj``; raise on any incomplete transfer."""
    if url.startswith(("http://", "https://")):
        with requests.get(url, stream=True, timeout=TIMEOUT) as resp:
            resp.raise_for_status()
            total = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
            chunks = resp.iter_content(chunk_size=_CHUNK)
            written = _copy(chunks, fileobj, total, progress, desc)
    elif url.startswith("file:"):
        with urllib.request.urlopen(url) as resp:
            total = resp.headers.get("Content-Length")
            encoded = False
            chunks = iter(lambda: resp.read(_CHUNK), b"")
            written = _copy(chunks, fileobj, total, progress, desc)
    else:
        raise _UnsupportedURL("unsupported URL scheme (use http://, https:// or file://)")
    # urllib3 already enforces Content-Length; this also covers file:// and older urllib3.
    if total is not None and not encoded and written != int(total):
        raise EOFError(f"the connection was closed before the whole file arrived ({written} of {total} bytes)")


def _copy(chunks, fileobj, total, progress, desc):
    written = 0
    with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
              desc=desc, disable=not progress) as bar:
        for chunk in chunks:
            fileobj.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    return written


def _describe_download_error(exc):
    """A short reason for a failed transfer, without a traceback's worth of urllib3 internals."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return "the server did not answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect (offline, firewall, proxy or wrong host?)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection was closed before the whole file arrived"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)


# Exceptions that mean "the file could not be fetched" (not e.g. a full disk, which speaks for itself).
_DOWNLOAD_ERRORS = (requests.RequestException, urllib.error.URLError, EOFError, _UnsupportedURL)


def get_model_file(name, root=None, base_url=None, sha1=None, progress=True):
    """Return the path of ``name``'s verified .params file, downloading it only when needed.

    ``root`` defaults to :func:`default_root`, ``base_url`` to :func:`default_base_url`; ``sha1``
    overrides :data:`MODEL_SHA1` (for weights on your own mirror). A cached file with the right
    SHA-1 is returned without touching the network; one with a wrong SHA-1 is downloaded again.
    Raises :class:`WeightsUnavailableError` with instructions when the weights cannot be had.
    """
    sha1 = _resolve_sha1(name, sha1)
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    stem = _stem(name, sha1)
    path = os.path.join(root, stem + ".params")

    if os.path.isfile(path):
        if check_sha1(path, sha1):
            return path
        _log.warning("%s does not have the expected SHA-1 %s (corrupt or a different version); "
                     "downloading it again.", path, sha1)

    url = model_url(name, base_url, sha1)
    os.makedirs(root, exist_ok=True)
    offline_hint = (f"If this machine is offline or the server is unreachable, either set RESNEST_GLUON_REPO to a "
                    f"mirror serving gluon/models/{stem}.zip (http://, https:// or file:// URL), or copy "
                    f"{stem}.params into {root}.")

    # The zip is scratch (never placed), removed on close; the .params inside is written atomically.
    with tempfile.NamedTemporaryFile(dir=root, prefix=f".{stem}.", suffix=".zip.part") as zip_file:
        try:
            _download(url, zip_file, progress, stem + ".zip")
        except _DOWNLOAD_ERRORS as exc:
            raise WeightsUnavailableError(
                f"Cannot download the weights of {name!r} from {url}: {_describe_download_error(exc)}. "
                + offline_hint) from exc
        zip_file.flush()
        zip_file.seek(0)
        try:
            _install_member(zip_file, path, name, sha1, url, offline_hint)
        except OSError:
            # e.g. Windows, when another process holds the final file open after placing it itself.
            if not check_sha1(path, sha1):
                raise
    return path


def _install_member(zip_file, path, name, sha1, url, offline_hint):
    """Extracts ``path``'s file from the downloaded zip onto ``path``, atomically and only if its SHA-1 is right."""
    member = os.path.basename(path)
    stem = member[:-len(".params")]
    root = os.path.dirname(path)
    try:
        with zipfile.ZipFile(zip_file) as zf:
            # GluonCV's zips hold the file at top level; accept it in a subfolder too.
            found = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == member]
            if not found:
                raise WeightsUnavailableError(
                    f"{url} does not contain {member} (it holds: {', '.join(zf.namelist()) or 'nothing'}). "
                    "The mirror serves a different archive; " + offline_hint)
            with atomic_path(path) as params_tmp:
                with open(params_tmp, "xb") as out, zf.open(found[0]) as src:
                    shutil.copyfileobj(src, out, _CHUNK)
                got = sha1_of(params_tmp)
                if got != sha1:
                    raise WeightsUnavailableError(
                        f"The weights of {name!r} downloaded from {url} have SHA-1 {got}, expected {sha1}: the "
                        "server (mirror) serves a different file than the published one. Fix the mirror or point "
                        f"RESNEST_GLUON_REPO elsewhere, or copy the correct {stem}.params into {root}.")
    except zipfile.BadZipFile as exc:
        raise WeightsUnavailableError(
            f"{url} is not a valid zip file ({exc}); the mirror may serve an error page. " + offline_hint) from exc
