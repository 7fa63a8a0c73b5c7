"""Which samples each rank reads, so that every rank runs the same number of steps per epoch.

Horovod hangs when ranks disagree on the step count, so equal counts per rank are a hard requirement.
"""
import math

import numpy as np

__all__ = ["steps_per_epoch", "ShardSampler"]


def steps_per_epoch(num_records, batch_size, world=1, what="dataset"):
    """Full batches every rank can run per epoch: ``floor(num_records / (world * batch_size))``."""
    steps = num_records // (world * batch_size)
    if steps < 1:
        raise ValueError(f"{what} has {num_records} records: fewer than world ({world}) x batch_size "
                         f"({batch_size}) = {world * batch_size}, so not one full step per rank")
    return steps


class ShardSampler:
    """Indices of one rank's shard: the same count on every rank, reshuffled each epoch from ``seed``.

    Each epoch deals ``world * per_rank`` distinct indices round-robin to the ranks (shards are disjoint). With
    ``last_batch='discard'`` ``per_rank = steps_per_epoch * batch_size`` (full batches only); with ``'keep'``
    ``per_rank = floor(N / world)`` (the last batch may be partial, equally on all ranks). The few indices an
    epoch cannot hand out equally are not lost: they open the next epoch (``carry``), before a fresh shuffle of
    the others, so every sample is seen within two consecutive epochs and none twice within one epoch.
    """

    def __init__(self, num_samples, batch_size=1, rank=0, world=1, shuffle=True, seed=0, last_batch="discard"):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world={world}), got rank={rank}")
        if last_batch not in ("discard", "keep"):
            raise ValueError(f"last_batch must be 'discard' or 'keep', got {last_batch!r}")
        self.num_samples, self.batch_size, self.rank, self.world = num_samples, batch_size, rank, world
        self.shuffle, self.seed, self.last_batch = shuffle, seed, last_batch
        if last_batch == "discard":
            self.per_rank = steps_per_epoch(num_samples, batch_size, world) * batch_size
        else:
            self.per_rank = num_samples // world
            if self.per_rank < 1:
                raise ValueError(f"{num_samples} samples cannot give each of {world} ranks one sample")
        self.epoch = self.skip = 0
        self._cache = (None, None)  # (epoch, (taken, carry)) to avoid replaying the chain every epoch

    def set_epoch(self, epoch, skip=0):
        """Selects the epoch whose order ``__iter__`` yields (the same on every rank for the same seed), leaving out
        the first ``skip`` indices of this rank's shard (resuming inside the epoch: nothing is read for them)."""
        if not 0 <= skip <= self.per_rank:
            raise ValueError(f"skip must be in [0, {self.per_rank}] (this rank's samples per epoch), got {skip}")
        self.epoch, self.skip = int(epoch), int(skip)

    def __len__(self):
        return self.per_rank - self.skip

    @property
    def num_batches(self):
        return math.ceil(self.per_rank / self.batch_size)

    def epoch_order(self, epoch):
        """``(taken, carry)``: the indices dealt in ``epoch`` (all ranks) and those carried to the next epoch."""
        cached_epoch, state = self._cache
        start, carry = (cached_epoch + 1, state[1]) if cached_epoch is not None and cached_epoch < epoch \
            else (0, np.empty(0, np.int64))
        if cached_epoch == epoch:
            return state
        used = self.per_rank * self.world
        for e in range(start, epoch + 1):
            rest = np.setdiff1d(np.arange(self.num_samples), carry, assume_unique=True)
            if self.shuffle:
                rest = np.random.RandomState((self.seed * 1000003 + e) % 2 ** 32).permutation(rest)
            pool = np.concatenate([carry, rest])
            state = (pool[:used], pool[used:])
            carry = state[1]
        self._cache = (epoch, state)
        return state

    def __iter__(self):
        taken, _ = self.epoch_order(self.epoch)
        return iter(taken[self.rank::self.world][self.skip:].tolist())
