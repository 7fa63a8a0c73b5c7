"""Training around undecodable records: find them once, name them, and give the fast path a .rec without them.

A bad disk block leaves a record's RecordIO framing and header intact and its image undecodable (or empty).
``mx.io.ImageRecordIter`` then raises ``MXNetError`` (OpenCV's ``!ssize.empty()`` in resize, ``!buf.empty()`` in
imdecode; SIGFPE on some records) from its decoding thread, after which every ``next()`` and ``reset()`` raise
again: the iterator cannot step over the record. Nor can an ``.idx`` leave it out: MXNet 1.9.1's reader
(dmlc-core ``indexed_recordio``) ignores the keys, sorts the offsets and reads each listed record up to the next
listed offset, so a record missing from the ``.idx`` is read as part of the one before it (measured with shuffle
on and off, 1 and 2 parts). So the fast path trains on a copy of the ``.rec`` without the bad records
(:func:`records_without_bad`), made once with ``os.copy_file_range`` (in-kernel; a reflink where the filesystem
has them) and only when there are bad records; the scan (``recordio_tools`` check, ``num_workers`` processes)
is cached in ``<rec>.bad.json`` keyed by the ``.rec``'s size and mtime, so it runs once per file. A record is
bad when PIL (strict: a JPEG cut short or with a broken data stream, which OpenCV fills with grey) or OpenCV
(MXNet's decoder) cannot decode it; the loader path skips only what OpenCV rejects.
"""
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass

from ..atomic import DiskFullError, free_bytes, write_json
from .checking import check  # PIL (strict: also cut JPEGs OpenCV would fill grey) and OpenCV
from .preflight import preflight
from .records import default_idx_path, read_idx_entries

__all__ = ["BadRecord", "TooManyBadRecords", "EXIT_BAD_RECORDS", "scan_bad_records", "records_without_bad",
           "check_bad_fraction", "BadRecordLimit", "cache_dir_for"]

EXIT_BAD_RECORDS = 7  # train_imagenet.py's exit code when the bad share passes --max-bad-records-fraction
_SCAN_VERSION = 4  # 3: records with broken framing are read past and listed; 4: damaged headers too


class TooManyBadRecords(RuntimeError):
    """More bad records than ``--max-bad-records-fraction`` allows: the data, not one record, is broken."""


@dataclass(frozen=True)
class BadRecord:
    rec: str
    index: int  # position in the .rec (record #index, 0-based, file order)
    key: int  # its .idx key
    offset: int  # byte offset in the .rec
    reason: str

    def describe(self):
        return (f"{self.rec} record #{self.index} (.idx key {self.key}) at byte offset {self.offset}: "
                f"{self.reason}")

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class BadRecordLimit:
    """How many undecodable records a run accepts: more than ``fraction`` of the file AND more than ``count``
    records stop it. The share catches a broken copy of a large file; the count lets a few damaged images through
    in a small one (2 of 1,437 images are 0.14 %, which a share alone of 0.1 % would refuse)."""

    fraction: float = 0.001
    count: int = 10

    def allows(self, bad_count, total):
        return bad_count <= self.count or bad_count <= self.fraction * total

    def describe(self):
        return (f"undecodable records are skipped and named; more than {self.fraction:.2%} of the file and more "
                f"than {self.count} stop the run")


def check_bad_fraction(bad_count, total, limit, rec_path):
    """Raises :class:`TooManyBadRecords` when ``limit`` (a :class:`BadRecordLimit`) does not allow ``bad_count``
    bad records out of ``total``."""
    if total and not limit.allows(bad_count, total):
        raise TooManyBadRecords(f"{rec_path}: {bad_count} of {total} records are undecodable "
                                f"({bad_count / total:.2%} > --max-bad-records-fraction {limit.fraction:g} and "
                                f"> --max-bad-records {limit.count}); not training on damaged data: re-copy or "
                                f"re-pack it (python -m recordio_tools check {rec_path} lists them), or raise the "
                                f"limits")


def _writable_dir(path):
    return os.path.isdir(path) and os.access(path, os.W_OK)


def cache_dir_for(rec_path):
    """Where the scan and the copy go: beside the .rec, else (read-only data) a per-file folder under
    ``$XDG_CACHE_HOME/resnest_gluon/records`` (default ``~/.cache``)."""
    here = os.path.dirname(os.path.abspath(rec_path))
    if _writable_dir(here):
        return here
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = hashlib.sha256(os.path.abspath(rec_path).encode()).hexdigest()[:16]
    path = os.path.join(base, "resnest_gluon", "records", tag)
    os.makedirs(path, exist_ok=True)
    return path


def _identity(rec_path, idx_path):
    rs, ist = os.stat(rec_path), os.stat(idx_path)
    return {"version": _SCAN_VERSION, "rec_size": rs.st_size, "rec_mtime_ns": rs.st_mtime_ns,
            "idx_size": ist.st_size, "idx_mtime_ns": ist.st_mtime_ns}


def _is_undecodable(problem):
    """The problems of a ``recordio_tools`` check that make a record unusable for training while the file stays
    readable: an image that does not decode, a header cut short or damaged, a record whose framing is broken where
    the .idx says where the next one starts (file-level framing, .idx and label problems are the start-up check's:
    they stop the run by name)."""
    error = problem["error"]
    return problem["source"] == "rec" and problem["offset"] is not None and (
        error.startswith(("cannot decode", "damaged header")) or "too short for an image header" in error
        or (error.startswith("unreadable record framing") and "read on at the next .idx offset" in error))


def scan_bad_records(rec_path, idx_path=None, num_workers=1, cache_dir=None):
    """The undecodable records of ``rec_path`` as :class:`BadRecord` (file order), from ``<rec>.bad.json`` when
    it was written for this .rec/.idx (same sizes and mtimes), else by decoding every image (``recordio_tools``
    check, ``num_workers`` processes) and writing it."""
    idx_path = idx_path or default_idx_path(rec_path)
    cache_dir = cache_dir or cache_dir_for(rec_path)
    cache = os.path.join(cache_dir, os.path.basename(rec_path) + ".bad.json")
    ident = _identity(rec_path, idx_path)
    if os.path.isfile(cache):
        try:
            with open(cache) as f:
                stored = json.load(f)
            if stored.get("identity") == ident and stored.get("idx") == os.path.abspath(idx_path):
                return [BadRecord(rec_path, **{k: b[k] for k in ("index", "key", "offset", "reason")})
                        for b in stored["bad"]]
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable cache is rebuilt
    summary = check(rec_path, num_workers=num_workers, progress=False, idx_path=idx_path, for_training=True)
    keys = {offset: key for _, key, offset in read_idx_entries(idx_path)}
    bad = [BadRecord(rec_path, p["position"], keys[p["offset"]], p["offset"], p["error"])
           for p in summary["bad"] if _is_undecodable(p) and p["offset"] in keys and p["position"] is not None]
    # What the sequential read cannot see: a record whose length field is wrong but still decodes.
    bad += [BadRecord(rec_path, position, key, offset, reason)
            for position, key, offset, reason in preflight(rec_path, idx_path).damaged]
    bad = sorted({b.offset: b for b in bad}.values(), key=lambda b: b.offset)
    write_json(cache, {"identity": ident, "idx": os.path.abspath(idx_path), "records": summary["records"],
                       "bad": [{k: v for k, v in b.to_dict().items() if k != "rec"} for b in bad]})
    return bad


def _copy_range(src, dst, start, end):
    while start < end:
        n = os.copy_file_range(src, dst, end - start, start)
        if n == 0:
            raise OSError(f"unexpected end of file copying bytes {start}..{end}")
        start += n


def records_without_bad(rec_path, idx_path, bad, cache_dir=None):
    """``(rec, idx)`` of a copy of ``rec_path`` without the ``bad`` records (same keys, new offsets), written once
    under ``cache_dir`` and named by the source's size and mtime and the records left out; ``(rec_path, idx_path)``
    when ``bad`` is empty."""
    if not bad:
        return rec_path, idx_path
    cache_dir = cache_dir or cache_dir_for(rec_path)
    st = os.stat(rec_path)
    left_out = hashlib.sha256(",".join(str(b.offset) for b in sorted(bad, key=lambda b: b.offset)).encode())
    stem = os.path.join(cache_dir, f"{os.path.splitext(os.path.basename(rec_path))[0]}.skip-bad-"
                                   f"{st.st_size}-{st.st_mtime_ns}-{left_out.hexdigest()[:8]}")
    out_rec, out_idx = stem + ".rec", stem + ".idx"
    if os.path.isfile(out_rec) and os.path.isfile(out_idx):
        return out_rec, out_idx
    entries = sorted(read_idx_entries(idx_path), key=lambda e: e[2])
    skip = {b.offset for b in bad}
    ends = [e[2] for e in entries[1:]] + [st.st_size]
    keep = [(key, off, end) for (_, key, off), end in zip(entries, ends) if off not in skip]
    needed = sum(end - off for _, off, end in keep)
    if free_bytes(cache_dir) < needed + (1 << 20):
        raise DiskFullError(out_rec, needed, free_bytes(cache_dir), cache_dir)
    fd, tmp_rec = tempfile.mkstemp(dir=cache_dir, suffix=".rec.tmp")
    lines, pos = [], 0
    try:
        with open(rec_path, "rb") as src:
            for key, off, end in keep:  # neighbouring good records are copied as one range
                lines.append(f"{key}\t{pos}\n")
                pos += end - off
            run_start = run_end = None
            for _, off, end in keep:
                if run_end == off:
                    run_end = end
                    continue
                if run_start is not None:
                    _copy_range(src.fileno(), fd, run_start, run_end)
                run_start, run_end = off, end
            _copy_range(src.fileno(), fd, run_start, run_end)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp_rec)
        raise
    os.close(fd)
    with open(out_idx + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(out_idx + ".tmp", out_idx)  # the .rec last: its presence means both are complete
    os.replace(tmp_rec, out_rec)
    return out_rec, out_idx
