"""Readies an MXNet Gluon network for timing in one dtype, the same way for our models and GluonCV's.

The preparation is the library's fast-inference path, :func:`resnest_gluon.deploy.optimize` (hybridize with static
memory, then float16 / bfloat16 conversion); ``latency.py --dtype`` offers exactly its dtypes.
"""
import mxnet as mx

from resnest_gluon.deploy import SUPPORTED_DEVICES, input_dtype, optimize

SUPPORTED_CTX = SUPPORTED_DEVICES  # dtype -> device types (checked before any model is built)


def make_step(net, batch_size, input_size, dtype, ctx, seed=0, fuse=True):
    """Initialises ``net`` with random weights (timing only), prepares it for ``dtype``; returns ``step()``.

    ``fuse``: oneDNN subgraph fusion (ours: on, as ``optimize`` does; GluonCV: off, as its users run it).
    ``step`` runs one batch and waits for the output with ``wait_to_read()``, so a timed batch is a finished batch.
    """
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = mx.nd.random.uniform(-1, 1, shape=(batch_size, 3, input_size, input_size), ctx=ctx)
    net = optimize(net, dtype, ctx, input_shape=x.shape, fuse=fuse)
    x = x.astype(input_dtype(dtype))

    def step():
        net(x).wait_to_read()

    return step


def context(kind):
    """``mx.cpu()`` or ``mx.gpu(0)``; a GPU request without a visible GPU raises with the reason."""
    if kind == "cpu":
        return mx.cpu()
    if mx.context.num_gpus() == 0:
        raise RuntimeError("--ctx gpu: MXNet sees no GPU (this is a CPU build of mxnet, or no CUDA device is "
                           "visible). Install mxnet-cu112==1.9.1 on a GPU machine, or use --ctx cpu.")
    return mx.gpu(0)
