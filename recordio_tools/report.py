"""The pack report: what was packed, what was converted, what was skipped and why (also saved as JSON).

Skips are never silent: each one names the list index, the file and the reason, so a dataset owner can fix
the files or accept the loss knowingly.
"""
import json
from collections import Counter

from .atomic import atomic_files


class PackReport:
    def __init__(self, listed, options=None):
        self.listed = listed
        self.options = dict(options or {})
        self.packed = 0
        self.passed_through = 0
        self.skipped = []  # dicts: index, path, reason, detail
        self.converted = Counter()  # note -> count
        self.empty_classes = []
        self.seconds = 0.0

    def add_packed(self, notes, passed_through):
        self.packed += 1
        self.passed_through += int(passed_through)
        self.converted.update(notes)

    def add_skipped(self, index, path, reason, detail):
        self.skipped.append({"index": index, "path": path, "reason": reason, "detail": detail})

    def skip_counts(self):
        return dict(sorted(Counter(s["reason"] for s in self.skipped).items()))

    def as_dict(self):
        return {
            "listed": self.listed,
            "packed": self.packed,
            "skipped_count": len(self.skipped),
            "skip_reasons": self.skip_counts(),
            "skipped": self.skipped,
            "converted": dict(sorted(self.converted.items())),
            "passed_through": self.passed_through,
            "empty_classes": self.empty_classes,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.listed / self.seconds, 1) if self.seconds > 0 else None,
            "options": self.options,
        }

    def dump(self, path):
        """Writes the JSON to ``path`` as is (the caller provides atomicity, e.g. a temp file)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.as_dict(), f, indent=2)
            f.write("\n")

    def write_json(self, path):
        with atomic_files(path) as (tmp,):
            self.dump(tmp)

    def summary(self):
        """Human-readable lines for the end of a pack."""
        lines = ["packed %d of %d listed images in %.1f s (%.1f images/s)"
                 % (self.packed, self.listed, self.seconds, self.listed / max(self.seconds, 1e-9))]
        if self.converted:
            lines.append("converted: " + ", ".join("%s=%d" % kv for kv in sorted(self.converted.items())))
        if self.passed_through:
            lines.append("original bytes kept (pass-through): %d" % self.passed_through)
        if self.skipped:
            lines.append("skipped %d: %s" % (len(self.skipped), ", ".join(
                "%s=%d" % kv for kv in self.skip_counts().items())))
            for s in self.skipped:
                where = s["path"] if s["index"] is None else "#%d %s" % (s["index"], s["path"])  # None: no image
                lines.append("  skip %s: %s (%s)" % (where, s["reason"], s["detail"]))
        if self.empty_classes:
            lines.append("empty class folders (label kept, no images): " + ", ".join(self.empty_classes))
        return lines
