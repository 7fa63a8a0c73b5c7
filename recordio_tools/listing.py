"""Class-per-folder trees to im2rec-compatible ``.lst`` files, and ``.lst`` parsing with clear errors.

Labels are the position of the class folder in the sorted list of *all* class folders, empty ones included,
so that ImageNet synsets map to 0..999 like everyone else's (im2rec numbers only folders that hold images,
which shifts every later label when one folder is empty).
"""
import logging
import os
import random
from collections import namedtuple

from .atomic import atomic_files

log = logging.getLogger(__name__)

DEFAULT_EXTS = (".jpg", ".jpeg", ".png")

Entry = namedtuple("Entry", ["index", "label", "path"])  # label: float, or tuple of floats (multi-label .lst)


class ListError(ValueError):
    """A ``.lst`` or class tree that cannot be used; the message names the file (and line)."""


def class_folders(root):
    """Sorted names of the class sub-folders of ``root`` (hidden folders ignored)."""
    if not os.path.isdir(root):
        raise ListError("%s: not a directory" % root)
    names = sorted(n for n in os.listdir(root) if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    if not names:
        raise ListError("%s: no class sub-folders (expected ROOT/<class>/<image>)" % root)
    stray = [n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n)) and not n.startswith(".")]
    if stray:
        log.warning("%s: %d file(s) directly under the root are ignored (not in a class folder), e.g. %s",
                    root, len(stray), sorted(stray)[0])
    return names


def _class_files(folder, exts):
    """Image files below one class folder, recursively, in sorted (deterministic) order."""
    found = []
    for path, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(path, f) for f in sorted(files)
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts)
    return found


def scan_tree(root, exts=DEFAULT_EXTS):
    """Returns ``(entries, classes, empty)``: entries in class-then-path order with index = position."""
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)
    classes = class_folders(root)
    entries, empty = [], []
    for label, name in enumerate(classes):
        files = _class_files(os.path.join(root, name), exts)
        if not files:
            empty.append(name)
            log.warning("class folder %r (label %d) has no %s files; it keeps its label number",
                        os.path.join(root, name), label, "/".join(exts))
        for f in files:
            rel = os.path.relpath(f, root).replace(os.sep, "/")
            entries.append(Entry(len(entries), float(label), rel))
    if not entries:
        raise ListError("%s: no image files with extensions %s" % (root, " ".join(exts)))
    return entries, classes, empty


def split_stratified(entries, val_ratio, seed):
    """Per class, puts ``round(n * val_ratio)`` images (but never the last one of a class) in val.

    Stratified so that every class keeps the same share in train and val, also for small classes.
    """
    if not 0.0 < val_ratio < 1.0:
        raise ListError("--val-ratio must be in (0, 1), got %r" % val_ratio)
    rng = random.Random(seed)
    by_class = {}
    for e in entries:
        by_class.setdefault(e.label, []).append(e)
    train, val = [], []
    for label in sorted(by_class, key=str):
        items = list(by_class[label])
        rng.shuffle(items)
        n_val = min(int(round(len(items) * val_ratio)), len(items) - 1)
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return sorted(train), sorted(val)


def order(entries, shuffle, seed):
    """List order: sorted by index, or a seeded shuffle (indices stay attached to their images, as im2rec)."""
    entries = sorted(entries)
    if shuffle:
        random.Random(seed).shuffle(entries)
    return entries


def format_label(label):
    if isinstance(label, tuple):
        return "\t".join("%f" % x for x in label)
    return "%f" % label


def write_list(path, entries):
    """Writes one ``.lst`` atomically: ``index<TAB>label<TAB>relative/path``."""
    with atomic_files(path) as (tmp,):
        with open(tmp, "w", encoding="utf-8") as f:
            for e in entries:
                f.write("%d\t%s\t%s\n" % (e.index, format_label(e.label), e.path))


def write_classes(path, classes):
    """One class folder name per line, line number = label."""
    with atomic_files(path) as (tmp,):
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(name + "\n" for name in classes)


def read_classes(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def read_list(path):
    """Parses an im2rec ``.lst``; raises ListError naming the file and line on malformed or duplicate rows."""
    entries, seen = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 3:
                raise ListError("%s line %d: expected 'index<TAB>label<TAB>path', got %r" % (path, lineno, line))
            try:
                index = int(cols[0])
                labels = tuple(float(x) for x in cols[1:-1])
            except ValueError:
                raise ListError("%s line %d: index must be an integer and labels numbers, got %r"
                                % (path, lineno, line)) from None
            if index < 0:
                raise ListError("%s line %d: negative index %d" % (path, lineno, index))
            if index in seen:
                raise ListError("%s line %d: index %d already used on line %d (the .idx needs unique keys)"
                                % (path, lineno, index, seen[index]))
            seen[index] = lineno
            entries.append(Entry(index, labels[0] if len(labels) == 1 else labels, cols[-1]))
    if not entries:
        raise ListError("%s: empty list" % path)
    return entries


def classes_path(prefix):
    return prefix + "_classes.txt"


def make_lists(root, prefix, exts=DEFAULT_EXTS, shuffle=False, seed=0, val_ratio=0.0):
    """Writes ``PREFIX.lst`` (or ``PREFIX_train.lst`` + ``PREFIX_val.lst``) and ``PREFIX_classes.txt``.

    Returns ``{list path: entries}``, the class names and the empty class folders.
    """
    entries, classes, empty = scan_tree(root, exts)
    if val_ratio:
        train, val = split_stratified(entries, val_ratio, seed)
        lists = {prefix + "_train.lst": order(train, shuffle, seed), prefix + "_val.lst": order(val, shuffle, seed)}
    else:
        lists = {prefix + ".lst": order(entries, shuffle, seed)}
    for path, items in lists.items():
        write_list(path, items)
        log.info("wrote %s (%d images)", path, len(items))
    write_classes(classes_path(prefix), classes)
    log.info("wrote %s (%d classes, %d empty)", classes_path(prefix), len(classes), len(empty))
    return lists, classes, empty
