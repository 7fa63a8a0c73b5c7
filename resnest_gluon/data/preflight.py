"""A quick check of a ``.rec`` and its ``.idx`` before training: framing, index and labels, no image decoded.

A copy cut short, an ``.idx`` of another file or a label beyond ``--num-classes`` would otherwise fail hours into
a run, or hang Horovod when one rank's reader dies. Here each record costs one small read at its offset (its
8-byte RecordIO framing and the image header after it), so every rank can check its own files at start.
Undecodable images are the full check's job (``python -m recordio_tools check``, ``train_imagenet.py
--check-data``).

A record whose own framing is broken (a bad disk block in the middle of a file) is not a broken file when the
``.idx`` says where the next good record starts: it is listed in ``PreflightSummary.damaged`` and training leaves
it out like an undecodable image. Without an ``.idx`` nothing says where to read on, so it is refused. A record
whose framing is whole but whose header is damaged (more extra labels than it holds, a label that is not a number)
is listed there too, with or without an ``.idx``.
"""
import math
import os
import time
from dataclasses import dataclass

from .records import IR_HEADER, default_idx_path, header_damage, read_frame, read_idx_entries

__all__ = ["BadRecordFile", "PreflightSummary", "preflight"]


class BadRecordFile(ValueError):
    """A ``.rec``/``.idx`` that training cannot use; the message names the file and the first bad record."""


@dataclass(frozen=True)
class PreflightSummary:
    rec: str
    idx: str  # None: the .rec was walked record by record from its start
    records: int
    file_bytes: int
    label_min: float
    label_max: float
    seconds: float
    damaged: tuple = ()  # (position, .idx key, byte offset, reason) of records with broken framing, read past


def _damage(fd, offset, end, nxt, file_size):
    """Why the record at ``offset`` (walked to ``end``: an int, or the walk's problem) is not the whole span up to
    the next .idx offset ``nxt`` (None: the last record), or None when it is or when the file, not the record, is
    at fault (cut short, or a record missing from the .idx)."""
    if isinstance(end, str):
        return None if "cut short" in end else end
    if nxt is None or end == nxt:
        return None
    if end < nxt and _walk(fd, end, file_size)[0] is not None:
        return None  # a whole record follows it that the .idx does not list: the .idx is wrong
    return f"its framing says it ends at byte {end}, the next .idx entry is at byte {nxt}"


def _walk(fd, offset, file_size):
    """``(labels, end)`` of the record starting at ``offset``, or ``(None, problem)``; follows continuation parts.
    ``labels`` is the header's damage (a str, :func:`header_damage`) when the framing is whole but the header not."""
    frame = read_frame(fd, offset, IR_HEADER.size)
    if frame is None or frame[0] not in (0, 1):
        return None, "not the start of a record (no RecordIO framing there)"
    cflag, length, end, header = frame
    if length < IR_HEADER.size:
        return None, f"a record of {length} bytes is too short for an image header"
    flag, label, _, _ = IR_HEADER.unpack(header)
    labels = [label]
    if 0 < 4 * flag <= length - IR_HEADER.size:  # flag extra float32 labels follow the header
        extra = os.pread(fd, 4 * flag, offset + 8 + IR_HEADER.size)
        labels = list(memoryview(extra).cast("f")) if len(extra) == 4 * flag else [math.nan]
    labels = header_damage(flag, labels, length - IR_HEADER.size) or labels
    while cflag in (1, 2):  # a payload split at an embedded magic word: walk to its last part
        if end >= file_size:
            break
        frame = read_frame(fd, end)
        if frame is None or frame[0] not in (2, 3):
            return None, f"its continuation part at offset {end} has no RecordIO framing"
        cflag, _, end, _ = frame
    if end > file_size or cflag in (1, 2):
        return None, (f"the record runs to byte {end} but the file has {file_size} bytes "
                      f"(a copy cut short?)")
    return labels, end


def _next_good(fd, entries, position, file_size):
    """The first .idx entry after ``position`` at which a record with framing starts (``len(entries)`` when the
    damaged record is the last one), or None when none does: then the .idx, not a record, is wrong."""
    for p in range(position + 1, len(entries)):
        if entries[p][2] <= entries[p - 1][2]:
            return None  # a duplicate offset: refused by the caller
        if _walk(fd, entries[p][2], file_size)[0] is not None:
            return p
    return len(entries) if position == len(entries) - 1 else None


def _label_problem(labels, num_classes):
    for v in labels:
        if num_classes is not None and (v != int(v) or not 0 <= v < num_classes):
            return f"label {v:g} is outside --num-classes {num_classes} (must be an integer in [0, {num_classes}))"
    return None


def preflight(rec_path, idx_path=None, num_classes=None):
    """Checks that ``rec_path`` is whole, that ``idx_path`` (default: the ``.idx`` beside it, if any) lists exactly
    its records' offsets, and that every label is an integer in ``[0, num_classes)``, reading only record headers.

    Returns a :class:`PreflightSummary`; raises :class:`BadRecordFile` naming the file and the first bad record
    (its position in the file, ``.idx`` key and line, byte offset), or ``FileNotFoundError``.
    """
    start = time.time()
    if not os.path.isfile(rec_path):
        raise FileNotFoundError(f"record file (.rec) not found: {rec_path!r}")
    idx_path = idx_path or default_idx_path(rec_path)
    entries = None
    if idx_path is not None:
        try:
            entries = sorted(read_idx_entries(idx_path), key=lambda e: e[2])
        except ValueError as err:
            raise BadRecordFile(str(err)) from None
        if not entries:
            raise BadRecordFile(f"{idx_path}: empty index (no records) for {rec_path}")
    file_size = os.path.getsize(rec_path)
    if entries and entries[-1][2] >= file_size:  # said first: it explains the gaps it leaves
        line, key, offset = next(e for e in entries if e[2] >= file_size)
        raise BadRecordFile(f"{rec_path}: {idx_path} line {line} (key {key}) points at byte offset {offset}, beyond "
                            f"the end of the file ({file_size} bytes): an .idx of another file, or a copy cut short")
    lo, hi, position, damaged = math.inf, -math.inf, 0, []

    def bad(offset, problem, entry=None):
        where = f"record #{position}" + (f" (.idx key {entry[1]}, {idx_path} line {entry[0]})" if entry else "")
        return BadRecordFile(f"{rec_path}: {where} at byte offset {offset}: {problem}")

    fd = os.open(rec_path, os.O_RDONLY)
    try:
        offset = 0  # where the next record must start
        while offset < file_size if entries is None else position < len(entries):
            entry = entries[position] if entries is not None else None
            if entry is not None and entry[2] != offset:
                if entry[2] < offset:
                    raise bad(entry[2], "the .idx points at or inside the previous record (a duplicate offset, or "
                                        "not a record start)", entry)
                if _walk(fd, entry[2], file_size)[0] is None:
                    raise bad(entry[2], "the .idx does not match the .rec: not a record start", entry)
                raise bad(entry[2], f"the .idx does not match the .rec: it skips bytes {offset}..{entry[2]} (a "
                                    f"record missing from the .idx)", entry)
            labels, end = _walk(fd, offset, file_size)
            if entries is not None:
                later = [e[2] for e in entries[position + 1:position + 2] if e[2] > offset]
                problem = _damage(fd, offset, end, later[0] if later else None, file_size)
                if problem is not None:
                    resume = _next_good(fd, entries, position, file_size)
                    if resume is not None:  # read on at the next record the .idx lists that has its framing
                        for p in range(position, resume):
                            damaged.append((p, entries[p][1], entries[p][2],
                                            problem if p == position else "no RecordIO framing at its .idx offset"))
                        position = resume
                        offset = entries[resume][2] if resume < len(entries) else file_size
                        continue
            if labels is None:
                raise bad(offset, end, entry)
            if isinstance(labels, str):  # framing whole, header damaged: the next record starts at `end`
                damaged.append((position, entry[1] if entry else None, offset, labels))
                offset, position = end, position + 1
                continue
            problem = _label_problem(labels, num_classes)
            if problem:
                raise bad(offset, problem, entry)
            lo, hi = min(lo, *labels), max(hi, *labels)
            offset, position = end, position + 1
        if position == 0 or len(damaged) == position:
            raise BadRecordFile(f"{rec_path}: no records (an empty file)" if position == 0 else
                                f"{rec_path}: no record at any offset of {idx_path} has RecordIO framing (an .idx "
                                f"of another file?)" if not any(d[3].startswith("damaged header") for d in damaged)
                                else f"{rec_path}: no usable record (the first: {damaged[0][3]})")
        if offset != file_size:
            labels, _ = _walk(fd, offset, file_size)
            raise BadRecordFile(f"{rec_path}: {file_size - offset} bytes after the last record listed in {idx_path} "
                                f"(byte offset {offset}): "
                                + ("records missing from the .idx" if labels else "not a record (trailing garbage)"))
    finally:
        os.close(fd)
    return PreflightSummary(rec_path, idx_path, position, file_size, lo, hi, round(time.time() - start, 3),
                            tuple(damaged))
