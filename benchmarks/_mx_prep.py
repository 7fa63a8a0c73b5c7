"""Readies an MXNet Gluon network for timing in one dtype, the same way for our models and GluonCV's.

``PREPARE`` maps a dtype to its preparation function ``(net, x, ctx) -> (net, x)``; ``latency.py --dtype`` offers
exactly its keys. To add int8 later, write ``_int8`` (calibrate with ``mx.contrib.quantization.quantize_net`` on a
few batches, then hybridize the result like ``_bfloat16`` does) and register it here: nothing else has to change.
"""
import mxnet as mx

HYBRIDIZE = dict(static_alloc=True, static_shape=True)  # the paper's / GluonCV's inference setting

# dtype -> contexts it is meaningful on (checked before any model is built, so the CLI can fail fast)
SUPPORTED_CTX = {"float32": ("cpu", "gpu"), "float16": ("gpu",), "bfloat16": ("cpu",)}


def _float32(net, x, ctx):
    net.hybridize(**HYBRIDIZE)
    return net, x


def _float16(net, x, ctx):
    """Pure float16 as GluonCV's verify script does (``net.cast``); MXNet's float16 conv is GPU-only in practice."""
    net.cast("float16")
    net.hybridize(**HYBRIDIZE)
    return net, x.astype("float16")


def _bfloat16(net, x, ctx):
    """MXNet AMP: the traced float32 graph gets bfloat16 casts around oneDNN-capable ops (conv, FC, ...).

    ``convert_hybrid_block`` needs a cached graph, hence one float32 forward first; the result is a SymbolBlock that
    takes the same float32 input, and is hybridized again with static memory.
    """
    import warnings

    from mxnet.contrib import amp

    net.hybridize(**HYBRIDIZE)
    net(x).wait_to_read()
    with warnings.catch_warnings():  # SymbolBlock cannot type the weights before they are loaded: harmless
        warnings.filterwarnings("ignore", message="Cannot decide type")
        net = amp.convert_hybrid_block(net, target_dtype="bfloat16", ctx=ctx)
    net.hybridize(**HYBRIDIZE)
    return net, x


PREPARE = {"float32": _float32, "float16": _float16, "bfloat16": _bfloat16}


def make_step(net, batch_size, input_size, dtype, ctx, seed=0):
    """Initialises ``net`` with random weights (timing only), prepares it for ``dtype``; returns ``step()``.

    ``step`` runs one batch and waits for the output with ``wait_to_read()``, so a timed batch is a finished batch.
    """
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = mx.nd.random.uniform(-1, 1, shape=(batch_size, 3, input_size, input_size), ctx=ctx)
    net, x = PREPARE[dtype](net, x, ctx)

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
