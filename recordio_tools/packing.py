"""Pack a ``.lst`` (or a class tree) into ``PREFIX.rec`` + ``PREFIX.idx`` with several worker processes.

Workers decode/convert/encode; the parent alone writes, in list order (``Pool.imap`` keeps order), so the
output is byte-identical whatever ``num_workers`` is. Each record's IRHeader ``id`` and its ``.idx`` key are
the list's index and its ``label`` the list's label, so a skipped image never shifts a label onto another
image. Both files are written under temporary names and renamed together only when the pack completed.
"""
import contextlib
import logging
import multiprocessing
import os
import signal
import time
import warnings
from dataclasses import asdict, dataclass

import cv2
import mxnet as mx
from tqdm import tqdm

from . import images, listing
from .atomic import atomic_files
from .report import PackReport

log = logging.getLogger(__name__)


class PackError(ValueError):
    """A pack that produced nothing usable (e.g. wrong --root); previous outputs are left untouched."""


@dataclass(frozen=True)
class PackOptions:
    resize: int = 0  # shorter side in pixels; 0 keeps the decoded size
    quality: int = 95  # JPEG quality
    encoding: str = ".jpg"  # .jpg or .png
    png_compression: int = 3
    pass_through: bool = False  # keep original bytes of clean RGB JPEGs
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    downscale_huge: bool = True  # False: skip images over max_pixels instead of decoding them smaller

    def validate(self):
        if self.encoding.lower() not in (".jpg", ".jpeg", ".png"):
            raise ValueError("--encoding must be .jpg or .png, got %r" % self.encoding)
        if self.resize < 0:
            raise ValueError("--resize must be >= 0, got %d" % self.resize)
        if not 1 <= self.quality <= 100:
            raise ValueError("--quality must be in 1..100, got %d" % self.quality)
        if not 0 <= self.png_compression <= 9:
            raise ValueError("--png-compression must be in 0..9, got %d" % self.png_compression)
        if self.max_pixels <= 0:
            raise ValueError("--max-pixels must be > 0")
        if self.pass_through and self.resize:
            raise ValueError("--pass-through keeps the original bytes, so it cannot be combined with --resize")


_ROOT = None
_OPTIONS = None


def _init_worker(root, options, in_child=True):
    global _ROOT, _OPTIONS
    _ROOT, _OPTIONS = root, options
    cv2.setNumThreads(1)  # one image per process; OpenCV threads would oversubscribe the cores
    if in_child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, by the parent


def _read(entry):
    path = entry.path if os.path.isabs(entry.path) else os.path.join(_ROOT, entry.path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise images.ImageRejected("missing", "no such file: %s" % path) from None
    except OSError as e:
        raise images.ImageRejected("unreadable", "%s: %s" % (path, e)) from None


def encode_image(data, header, rgb, notes, info, options):
    """``(record, passed_through)``: the decoded ``rgb`` (or, with pass-through, the original ``data``) packed under
    ``header``, resized and re-encoded as ``options`` say. Shared by the classification and detection packers."""
    if options.pass_through and images.is_passthrough_jpeg(info, notes):
        return mx.recordio.pack(header, data), True
    rgb = images.resize_shorter(rgb, options.resize)
    png = options.encoding.lower() == ".png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pack_img calls ndarray.tostring()
        record = mx.recordio.pack_img(header, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),  # pack_img wants BGR
                                      quality=options.png_compression if png else options.quality,
                                      img_fmt=options.encoding)
    return record, False


def read_and_decode(entry):
    """``(original bytes, rgb, notes, info)`` of an entry's file (in a worker); raises ImageRejected."""
    data = _read(entry)
    rgb, notes, info = images.decode_rgb(data, _OPTIONS.max_pixels, _OPTIONS.downscale_huge)
    return data, rgb, notes, info


def encode_entry(entry):
    """One list entry to ``("ok", index, record, notes, passed_through)`` or ``("skip", index, reason, detail)``.

    Never raises for bad input: a bad file becomes a skip with a reason, so one file cannot stop a pack."""
    try:
        data, rgb, notes, info = read_and_decode(entry)
        header = mx.recordio.IRHeader(0, entry.label, entry.index, 0)
        record, passed = encode_image(data, header, rgb, notes, info, _OPTIONS)
        return "ok", entry.index, record, notes, passed
    except images.ImageRejected as e:
        return "skip", entry.index, e.reason, e.detail
    except Exception as e:  # a decoder/encoder failure on one file must not stop the whole pack
        return "skip", entry.index, "error", "%s: %s" % (type(e).__name__, e)


def _results(entries, root, options, num_workers, work=None):
    """Yields ``work(entry)`` results (default :func:`encode_entry`, looked up at call time) in list order, from
    worker processes when num_workers > 1."""
    work = work or encode_entry
    if num_workers <= 1:
        _init_worker(root, options, in_child=False)
        for e in entries:
            yield work(e)
        return
    chunksize = max(1, min(32, len(entries) // (num_workers * 16)))
    # fork: workers inherit the imported modules (no re-import of mxnet per worker); they use no MXNet engine
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(root, options)) as pool:
        yield from pool.imap(work, entries, chunksize=chunksize)


def _classes_file_for(lst_path):
    base = lst_path[:-4] if lst_path.endswith(".lst") else lst_path
    candidates = [listing.classes_path(base)]
    for suffix in ("_train", "_val"):
        if base.endswith(suffix):
            candidates.append(listing.classes_path(base[: -len(suffix)]))
    candidates.append(os.path.join(os.path.dirname(os.path.abspath(lst_path)), "classes.txt"))
    return next((c for c in candidates if os.path.isfile(c)), None)


def _load_input(source, prefix, root, exts):
    """Returns ``(entries, root, empty_classes)`` for a ``.lst`` file or a class-per-folder tree."""
    if os.path.isdir(source):
        lists, classes, empty = listing.make_lists(source, prefix, exts=exts)
        return lists[prefix + ".lst"], source, empty
    if not os.path.isfile(source):
        raise FileNotFoundError("%s: no such .lst file or directory" % source)
    entries = listing.read_list(source)
    root = root if root is not None else os.path.dirname(os.path.abspath(source))
    empty = []
    classes_file = _classes_file_for(source)
    if classes_file:
        present = {e.label for e in entries if not isinstance(e.label, tuple)}
        empty = [n for i, n in enumerate(listing.read_classes(classes_file)) if float(i) not in present]
    return entries, root, empty


def _classes_beside(source, prefix):
    """Copies the class names of a ``.lst`` to ``PREFIX_classes.txt``, where training looks for them (a tree's
    make-list already wrote them there)."""
    found = _classes_file_for(source) if os.path.isfile(source) else None
    target = listing.classes_path(prefix)
    if found and os.path.abspath(found) != os.path.abspath(target):
        listing.write_classes(target, listing.read_classes(found))


def pack(source, prefix, root=None, options=PackOptions(), num_workers=1, exts=listing.DEFAULT_EXTS,
         progress=True):
    """Packs ``source`` (a .lst or a class tree) into ``PREFIX.rec``/``.idx``/``.report.json``; returns the report."""
    options.validate()
    entries, root, empty = _load_input(source, prefix, root, exts)
    report = PackReport(len(entries), dict(asdict(options), num_workers=num_workers, source=source, root=root))
    report.empty_classes = empty
    by_index = {e.index: e for e in entries}
    rec_path, idx_path = prefix + ".rec", prefix + ".idx"
    start = time.time()
    with atomic_files(rec_path, idx_path, prefix + ".report.json") as (tmp_rec, tmp_idx, tmp_report):
        writer = mx.recordio.MXIndexedRecordIO(tmp_idx, tmp_rec, "w")
        try:
            bar = tqdm(total=len(entries), unit="img", desc="pack " + os.path.basename(prefix),
                       disable=not progress, smoothing=0.1)
            results = _results(entries, root, options, num_workers)
            with bar, contextlib.closing(results):  # closing terminates the worker pool on any exception
                for result in results:
                    if result[0] == "ok":
                        _, index, record, notes, passed = result
                        writer.write_idx(index, record)
                        report.add_packed(notes, passed)
                    else:
                        _, index, reason, detail = result
                        report.add_skipped(index, by_index[index].path, reason, detail)
                    bar.update(1)
        finally:
            writer.close()
        report.seconds = time.time() - start
        if report.packed == 0:
            raise PackError("nothing packed from %s (%d listed, all skipped: %s); is --root %r right?"
                            % (source, len(entries), report.skip_counts(), root))
        report.dump(tmp_report)
    _classes_beside(source, prefix)
    log.info("packed %d images in %.1f s: %.1f images/s", report.packed, report.seconds,
             len(entries) / max(report.seconds, 1e-9))
    return report
