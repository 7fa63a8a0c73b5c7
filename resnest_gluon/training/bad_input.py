"""Bad training records during a run: each named once (stdout and ``metrics.jsonl``), and a stop when too many.

A few damaged records in a million should cost nothing; many mean a broken copy, which should not be trained on.
Every rank holds the same list (the fast path's scan is shared through its cache; the loader's reports are
gathered from all ranks after the step that met them), so all ranks reach the same decision at the same step.
"""
from ..data.bad_records import BadRecord, check_bad_fraction, records_without_bad, scan_bad_records
from ..data.records import count_records, default_idx_path

__all__ = ["BadRecordWatch", "prepare_fast_path"]


def prepare_fast_path(rec_path, idx_path, num_workers, limit, dist):
    """Rank 0 scans ``rec_path`` for undecodable records (cached) and, unless there are too many, writes the copy
    without them, while the other ranks wait; then every rank reads the scan from its cache. Raises
    :class:`~..data.bad_records.TooManyBadRecords` on every rank when ``limit`` (a
    :class:`~..data.bad_records.BadRecordLimit`) is exceeded."""
    failure, idx_path = None, idx_path or default_idx_path(rec_path)
    if dist.is_root:
        try:
            bad = scan_bad_records(rec_path, idx_path, num_workers)
            if limit.allows(len(bad), count_records(idx_path)):  # else every rank stops below, copying nothing
                records_without_bad(rec_path, idx_path, bad)
        except Exception as err:  # the other ranks must not wait for a copy that never comes
            failure = err
    if dist.allreduce_sum([failure is not None], name="bad_record_scan")[0]:
        if failure is not None:
            raise failure
        raise ValueError(f"--rec-train {rec_path}: rank 0 could not scan it for undecodable records (its message "
                         f"says why)")
    return scan_bad_records(rec_path, idx_path, num_workers)


class BadRecordWatch:
    """Names each bad record once (rank 0: a ``bad record:`` line and a ``"bad_record"`` event) and raises
    :class:`~..data.bad_records.TooManyBadRecords` when ``limit`` does not allow their number out of ``total``."""

    def __init__(self, rec_path, total, limit, dist, log=None):
        self.rec_path, self.total, self.limit, self.dist, self.log = rec_path, total, limit, dist, log
        self.seen = {}  # offset -> BadRecord

    def report(self, records, epoch, how):
        for b in sorted(records, key=lambda r: r.offset):
            if b.offset in self.seen:
                continue
            self.seen[b.offset] = b
            if self.dist.is_root:
                print(f"bad record: {b.describe()}; {how}", flush=True)
                if self.log is not None:
                    self.log.write("bad_record", epoch=epoch, **b.to_dict(), action=how)
        check_bad_fraction(len(self.seen), self.total, self.limit, self.rec_path)

    def gather(self, dataset, mine, epoch):
        """After a step in which some rank met bad records (every rank calls it): ``mine`` are this rank's dataset
        indices; the descriptions of all ranks' are gathered and reported."""
        own = []
        for i in sorted(set(mine)):
            key, offset, reason = dataset.problem(i)
            own.append(BadRecord(self.rec_path, i, key, offset, reason))
        everyone = [b for part in self.dist.allgather_object(own) for b in part]
        self.report(everyone, epoch, "replaced by the next decodable record")

    @property
    def count(self):
        return len(self.seen)
