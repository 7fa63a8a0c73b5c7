"""Tests of the pretrained-weights store against a local HTTP server and file:// mirrors (no internet)."""
import hashlib
import http.server
import logging
import socket
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import mxnet as mx
import numpy as np
import pytest

from resnest_gluon import store
from resnest_gluon.store import WeightsUnavailableError, get_model_file

NAME = "resnest_fake"


# --------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The user's mirror, MXNET_HOME or proxy settings must not leak into these tests."""
    for var in ("RESNEST_GLUON_REPO", "MXNET_GLUON_REPO", "MXNET_HOME",
                "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def weights(tmp_path):
    """A small real .params file (bytes and SHA-1), standing in for published weights."""
    path = tmp_path / "fake.params"
    mx.nd.save(str(path), {"arg:conv0_weight": mx.nd.arange(24).reshape((2, 3, 2, 2)),
                           "aux:bn0_running_mean": mx.nd.ones((3,))})
    data = path.read_bytes()
    return {"data": data, "sha1": hashlib.sha1(data).hexdigest()}


def publish(mirror, name, sha1, data, member=None):
    """Lay out a zip the way GluonCV's repository does: gluon/models/{name}-{sha1[:8]}.zip."""
    stem = f"{name}-{sha1[:8]}"
    models = mirror / "gluon" / "models"
    models.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(models / f"{stem}.zip", "w") as zf:
        zf.writestr(member or f"{stem}.params", data)
    return models / f"{stem}.zip"


@pytest.fixture
def mirror(tmp_path, weights):
    """A directory serving the fake weights under NAME."""
    directory = tmp_path / "mirror"
    publish(directory, NAME, weights["sha1"], weights["data"])
    return directory


@pytest.fixture
def root(tmp_path):
    """The cache folder (not created yet: the store must create it)."""
    return tmp_path / "models"


def files_in(path):
    """Every file in ``path``, hidden temporary files included."""
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 (free port) in a thread, recording the paths it is asked for."""

    def __init__(self, handler, **handler_kwargs):
        self.requests = []
        requests = self.requests

        class Recording(handler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

        factory = partial(Recording, **handler_kwargs)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=10)


@pytest.fixture
def serve():
    """``serve(directory)`` or ``serve(handler=...)`` starts a server; all are stopped after the test."""
    servers = []

    def start(directory=None, handler=None):
        server = Server(handler) if handler else Server(QuietHandler, directory=str(directory))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def dead_url():
    """A URL on a port that is bound but not listening: connecting to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    sock.close()


def assert_loads(path, weights):
    assert store.sha1_of(path) == weights["sha1"]
    loaded = mx.nd.load(path)
    np.testing.assert_array_equal(loaded["arg:conv0_weight"].asnumpy(), np.arange(24).reshape((2, 3, 2, 2)))


# --------------------------------------------------------------------------- download, verify, reuse


def test_downloads_verifies_then_reuses_cache_without_network(serve, mirror, root, weights):
    server = serve(mirror)
    path = get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)

    assert path == str(root / f"{NAME}-{weights['sha1'][:8]}.params")
    assert_loads(path, weights)
    assert server.requests == [f"/gluon/models/{NAME}-{weights['sha1'][:8]}.zip"]
    assert files_in(root) == [f"{NAME}-{weights['sha1'][:8]}.params"]  # the zip and temp files are gone

    server.stop()  # from now on any network access would fail
    again = get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    assert again == path


def test_progress_bar_does_not_change_the_result(serve, mirror, root, weights, capsys):
    server = serve(mirror)
    path = get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=True)
    assert_loads(path, weights)
    assert f"{NAME}-{weights['sha1'][:8]}.zip" in capsys.readouterr().err  # tqdm names the file


def test_base_url_from_env_var_with_or_without_trailing_slash(serve, mirror, root, weights, monkeypatch):
    server = serve(mirror)
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://127.0.0.1:9/not-used/")  # GluonCV's variable loses
    monkeypatch.setenv("RESNEST_GLUON_REPO", server.url.rstrip("/"))

    path = get_model_file(NAME, root=str(root), sha1=weights["sha1"], progress=False)
    assert_loads(path, weights)
    assert len(server.requests) == 1


def test_gluoncv_env_var_is_honoured_when_ours_is_unset(serve, mirror, root, weights, monkeypatch):
    server = serve(mirror)
    monkeypatch.setenv("MXNET_GLUON_REPO", server.url)
    assert store.default_base_url() == server.url

    assert_loads(get_model_file(NAME, root=str(root), sha1=weights["sha1"], progress=False), weights)


def test_defaults_follow_gluoncv(monkeypatch, tmp_path):
    assert store.default_base_url() == "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/"
    assert store.model_url("resnest50") == (
        "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/resnest50-bcfefe1d.zip")

    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.default_root() == str(tmp_path / ".mxnet" / "models")
    monkeypatch.setenv("MXNET_HOME", "~/mxhome")
    assert store.default_root() == str(tmp_path / "mxhome" / "models")


def test_sha1_table_and_urls_match_gluoncv():
    gluoncv_store = pytest.importorskip("gluoncv.model_zoo.model_store")
    for name, sha1 in store.MODEL_SHA1.items():
        assert gluoncv_store._model_sha1[name] == sha1
        file_name = f"{name}-{gluoncv_store.short_hash(name)}"
        assert store.model_url(name) == gluoncv_store._url_format.format(
            repo_url=gluoncv_store.apache_repo_url, file_name=file_name)


def test_file_url_mirror_for_air_gapped_machines(mirror, root, weights):
    base_url = mirror.as_uri()  # file:///.../mirror (no trailing slash)
    path = get_model_file(NAME, root=str(root), base_url=base_url, sha1=weights["sha1"], progress=False)
    assert_loads(path, weights)
    assert files_in(root) == [f"{NAME}-{weights['sha1'][:8]}.params"]


def test_existing_file_in_gluoncv_layout_is_used_without_network(root, weights, dead_url):
    root.mkdir()
    (root / f"{NAME}-{weights['sha1'][:8]}.params").write_bytes(weights["data"])
    path = get_model_file(NAME, root=str(root), base_url=dead_url, sha1=weights["sha1"], progress=False)
    assert_loads(path, weights)


def test_corrupt_cached_file_is_replaced(serve, mirror, root, weights, caplog):
    server = serve(mirror)
    root.mkdir()
    cached = root / f"{NAME}-{weights['sha1'][:8]}.params"
    cached.write_bytes(weights["data"][:-10] + b"corruption")

    with caplog.at_level(logging.WARNING, logger="resnest_gluon.store"):
        path = get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    assert path == str(cached)
    assert_loads(path, weights)
    assert len(server.requests) == 1
    assert "downloading it again" in caplog.text


def test_concurrent_downloads_into_one_root_are_safe(serve, mirror, root, weights):
    server = serve(mirror)
    fetch = partial(get_model_file, NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: fetch(), range(4)))
    assert len(set(paths)) == 1
    assert_loads(paths[0], weights)
    assert files_in(root) == [f"{NAME}-{weights['sha1'][:8]}.params"]


# --------------------------------------------------------------------------- failures: clear errors, nothing left behind


def test_checksum_mismatch_raises_and_leaves_nothing(serve, tmp_path, root, weights):
    mirror = tmp_path / "bad-mirror"
    publish(mirror, NAME, weights["sha1"], b"not the published weights")  # right name, wrong content
    server = serve(mirror)

    with pytest.raises(WeightsUnavailableError) as err:
        get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    message = str(err.value)
    assert weights["sha1"] in message
    assert hashlib.sha1(b"not the published weights").hexdigest() in message
    assert f"{server.url}gluon/models/{NAME}-{weights['sha1'][:8]}.zip" in message
    assert "mirror" in message and "different file" in message
    assert files_in(root) == []


def test_connection_refused_says_to_set_a_mirror(dead_url, root, weights):
    with pytest.raises(WeightsUnavailableError) as err:
        get_model_file(NAME, root=str(root), base_url=dead_url, sha1=weights["sha1"], progress=False)
    message = str(err.value)
    assert "RESNEST_GLUON_REPO" in message
    assert dead_url in message
    assert f"copy {NAME}-{weights['sha1'][:8]}.params into {root}" in message
    assert files_in(root) == []


def test_http_404_names_the_url_and_status(serve, tmp_path, root, weights):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    server = serve(empty)
    with pytest.raises(WeightsUnavailableError) as err:
        get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    message = str(err.value)
    assert "HTTP 404" in message
    assert f"{server.url}gluon/models/{NAME}-{weights['sha1'][:8]}.zip" in message
    assert "RESNEST_GLUON_REPO" in message
    assert files_in(root) == []


def test_missing_file_on_file_url_mirror(tmp_path, root, weights):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError, match="RESNEST_GLUON_REPO") as err:
        get_model_file(NAME, root=str(root), base_url=empty.as_uri(), sha1=weights["sha1"], progress=False)
    assert empty.as_uri() in str(err.value)
    assert files_in(root) == []


def test_connection_closed_mid_transfer_leaves_no_partial_file(serve, mirror, root, weights):
    zip_bytes = (mirror / "gluon" / "models" / f"{NAME}-{weights['sha1'][:8]}.zip").read_bytes()

    class Truncating(http.server.BaseHTTPRequestHandler):
        """Promises the whole zip, sends half of it, then hangs up."""

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(zip_bytes)))
            self.end_headers()
            self.wfile.write(zip_bytes[: len(zip_bytes) // 2])
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = serve(handler=Truncating)
    with pytest.raises(WeightsUnavailableError) as err:
        get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    assert "before the whole file arrived" in str(err.value)
    assert files_in(root) == []


def test_interrupt_during_install_leaves_no_temp_files(serve, mirror, root, weights, monkeypatch):
    server = serve(mirror)

    def interrupted(*args, **kwargs):  # Ctrl-C after the download, before extraction
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile, "ZipFile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    assert len(server.requests) == 1
    assert files_in(root) == []


def test_zip_without_the_expected_member(serve, tmp_path, root, weights):
    mirror = tmp_path / "odd-mirror"
    publish(mirror, NAME, weights["sha1"], weights["data"], member="model.params")
    server = serve(mirror)
    with pytest.raises(WeightsUnavailableError) as err:
        get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    message = str(err.value)
    assert f"does not contain {NAME}-{weights['sha1'][:8]}.params" in message
    assert "model.params" in message
    assert files_in(root) == []


def test_mirror_serving_something_else_than_a_zip(serve, tmp_path, root, weights):
    mirror = tmp_path / "html-mirror"
    models = mirror / "gluon" / "models"
    models.mkdir(parents=True)
    (models / f"{NAME}-{weights['sha1'][:8]}.zip").write_text("<html>Please log in</html>")
    server = serve(mirror)
    with pytest.raises(WeightsUnavailableError, match="not a valid zip file"):
        get_model_file(NAME, root=str(root), base_url=server.url, sha1=weights["sha1"], progress=False)
    assert files_in(root) == []


def test_unknown_name_lists_published_weights_and_points_to_conversion(root):
    with pytest.raises(WeightsUnavailableError) as err:
        get_model_file("resnest50d_4s2x40d", root=str(root), progress=False)
    message = str(err.value)
    for name in store.MODEL_SHA1:
        assert name in message
    assert "scripts/convert_torch_weights.py" in message
    assert not root.exists()  # nothing is created for a name that cannot be served


def test_bad_arguments_are_rejected_before_any_file_access(root, weights):
    with pytest.raises(ValueError, match="40 hex digits"):
        get_model_file(NAME, root=str(root), sha1="bcfefe1d")
    with pytest.raises(ValueError, match="invalid model name"):
        get_model_file("../escape", root=str(root), sha1=weights["sha1"])
    assert not root.exists()


def test_sha1_helpers(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20))  # several chunks
    expected = hashlib.sha1(b"x" * (3 << 20)).hexdigest()
    assert store.sha1_of(str(path)) == expected
    assert store.check_sha1(str(path), expected.upper())
    assert not store.check_sha1(str(path), "0" * 40)
    assert not store.check_sha1(str(tmp_path / "missing"), expected)
