"""Training batches of one rank's shard for the dense tasks' loaders: what detection and segmentation share.

The items are keyed by (index, sample seed) (:class:`~.train._SeededSampler`), so an epoch's batches depend neither
on worker processes nor on the steps run before (resume); each batch's last field lists the items that could not be
read and were replaced (-1 for the others), gathered for :meth:`ShardedBatches.take_bad`.
"""
import numpy as np

from .sharding import ShardSampler
from .train import _SeededSampler
from .workers import close_loader

__all__ = ["ShardedBatches"]


class ShardedBatches:
    """``len()`` full batches per epoch, equal on every rank; ``set_epoch(E, skip=k)`` then iteration yields epoch E's
    batches from batch k on, the same as an uninterrupted epoch's. Subclasses set ``dataset`` and call
    :meth:`_start`; :meth:`_fields` shapes a batch's fields for the task's step."""

    def _start(self, num_samples, batch_size, rank, world, seed, batchify, num_workers):
        import mxnet as mx

        self.sampler = ShardSampler(num_samples, batch_size, rank, world, True, seed, "discard")
        self.steps, self.batch_size, self.epoch = self.sampler.num_batches, batch_size, 0
        self.loader = mx.gluon.data.DataLoader(self.dataset, batch_size=batch_size,
                                               sampler=_SeededSampler(self.sampler, seed), last_batch="keep",
                                               batchify_fn=batchify, num_workers=num_workers)
        self._bad = []

    def _fields(self, fields):
        return fields

    def __len__(self):
        return self.steps

    def set_epoch(self, epoch, skip=0):
        if not 0 <= skip <= self.steps:
            raise ValueError(f"skip must be in [0, {self.steps}] (batches per epoch), got {skip}")
        self.epoch = int(epoch)
        self.sampler.set_epoch(self.epoch, skip=skip * self.batch_size)

    def __iter__(self):
        for batch in self.loader:
            *fields, bad = batch
            self._bad.extend(int(i) for i in np.asarray(bad).reshape(-1) if i >= 0)
            yield self._fields(fields)

    def take_bad(self):
        """Dataset indices of the unreadable items replaced in the batches yielded since the last call."""
        bad, self._bad = self._bad, []
        return bad

    def close(self):
        close_loader(self.loader)
