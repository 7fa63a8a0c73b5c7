"""Horovod glue with a single-process fallback, so training and evaluation run alike under ``horovodrun`` and as
plain python.

Horovod is imported and initialised only when the process was launched by horovodrun (``HOROVOD_RANK`` or
``OMPI_COMM_WORLD_RANK`` set) or when it is forced; otherwise the process is rank 0 of a world of 1.
"""
import os

import mxnet as mx

__all__ = ["Distributed", "launched_by_horovod"]


def launched_by_horovod():
    return "HOROVOD_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ


class Distributed:
    """``rank``, ``world``, ``local_rank`` and the few collective operations training and evaluation need.

    ``use_horovod``: None = only when launched by horovodrun, True = always (forced), False = never.
    """

    def __init__(self, use_horovod=None):
        use_horovod = launched_by_horovod() if use_horovod is None else use_horovod
        self.hvd = None
        if use_horovod:
            try:
                import horovod.mxnet as hvd
            except ImportError as err:
                raise RuntimeError(f"Horovod is wanted (horovodrun or forced) but horovod.mxnet does not import: "
                                   f"{err}") from None
            hvd.init()
            self.hvd = hvd
            self.rank, self.world, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        else:
            self.rank, self.world, self.local_rank = 0, 1, 0

    @property
    def is_root(self):
        return self.rank == 0

    def trainer(self, params, optimizer, optimizer_params):
        """A trainer whose ``step`` averages gradients over all ranks (Horovod) or a plain ``gluon.Trainer``."""
        if self.hvd is not None:
            return self.hvd.DistributedTrainer(params, optimizer, optimizer_params)
        return mx.gluon.Trainer(params, optimizer, optimizer_params, kvstore=None)

    def broadcast_parameters(self, params):
        """Copies rank 0's parameters to every rank: a sum over ranks to which the others contribute zeros.

        ``params`` (a ParameterDict or {name: Parameter}) must be initialised. Horovod's own broadcast is avoided:
        in Horovod 0.28.1 it logs the tensor's name after handing the tensor to the background thread, which may
        already have finished and freed it; under load that is a segfault (seen in CI, core dump in
        ``EnqueueTensorBroadcast``). Allreduce logs before. ``x + 0 == x`` exactly, so every rank gets rank 0's bits
        (up to the sign of zeros).
        """
        if self.hvd is None:
            return
        for name, p in sorted(params.items()):
            data = p.data()
            if self.rank != 0:
                data[:] = 0
            self.hvd.allreduce_(data, op=self.hvd.Sum, name=f"broadcast.{name}")
        mx.nd.waitall()

    def allreduce_sum(self, values, name):
        """Element-wise sum of a list of floats over ranks (e.g. correct/total counts), in float64."""
        arr = mx.nd.array(values, dtype="float64")
        if self.hvd is not None:
            arr = self.hvd.allreduce(arr, op=self.hvd.Sum, name=name)
        return [float(v) for v in arr.asnumpy()]

    def allgather_object(self, obj):
        """Every rank's ``obj`` (any picklable Python object), as a list in rank order."""
        return [obj] if self.hvd is None else self.hvd.allgather_object(obj)

    def from_root(self, obj):
        """Rank 0's ``obj`` (any picklable Python object) on every rank; the others' arguments are ignored."""
        return obj if self.hvd is None else self.hvd.allgather_object(obj if self.is_root else None)[0]
