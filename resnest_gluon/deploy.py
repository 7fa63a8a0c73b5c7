"""Preparing a network for fast inference: the one place that hybridizes it and converts it to a lower precision.

``net = optimize(get_model('resnest50', pretrained=True), dtype='bfloat16')``; feed the result inputs of
``input_dtype(dtype)``. Used by ``scripts/verify.py`` and :class:`~resnest_gluon.predict.Predictor`.
"""
import mxnet as mx

__all__ = ["DTYPES", "SUPPORTED_DEVICES", "optimize", "input_dtype"]

DTYPES = ("float32", "float16", "bfloat16")
# dtype -> the device types it is meaningful on (so command lines can refuse a combination before building)
SUPPORTED_DEVICES = {"float32": ("cpu", "gpu"), "float16": ("gpu",), "bfloat16": ("cpu",)}


def _contexts(ctx):
    return list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]


def input_dtype(dtype):
    """The dtype an optimized network's input must have: float16 networks are cast throughout, bfloat16 ones cast
    inside (AMP) and take float32."""
    return "float16" if dtype == "float16" else "float32"


def optimize(net, dtype="float32", ctx=mx.cpu(), input_shape=None, fuse=True):
    """Hybridizes ``net`` (static allocation and shapes) and converts it to ``dtype``; returns the network to call.

    ``fuse`` (float32 on CPU): oneDNN subgraph fusion (``optimize_for(backend='MKLDNN')``): convolution, folded
    BatchNorm, ReLU and the residual add run as one primitive. The parameters are not modified, and any batch size
    works afterwards. ``input_shape`` defaults to ``(1, 3, S, S)`` with ``S`` the model's data-config input size.

    ``float16`` casts every parameter (GPU only: MXNet's CPU float16 convolutions are not supported).
    ``bfloat16`` traces one call of ``input_shape`` and returns AMP's converted block, a new ``SymbolBlock`` on the
    first of ``ctx`` (a context or a list of them, where the parameters already are).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    contexts = _contexts(ctx)
    if dtype == "float16" and any(c.device_type == "cpu" for c in contexts):
        raise ValueError("float16 needs a GPU: MXNet's CPU float16 convolutions are not supported; use float32 or "
                         "bfloat16 on CPU")
    net.hybridize(static_alloc=True, static_shape=True)
    if input_shape is None:
        size = getattr(getattr(net, "data_config", None), "input_size", 224)
        input_shape = (1, 3, size, size)
    if dtype == "float32" and fuse and all(c.device_type == "cpu" for c in contexts):
        net.optimize_for(mx.nd.zeros(input_shape, ctx=contexts[0]), backend="MKLDNN", static_alloc=True,
                         static_shape=True)
    elif dtype == "float16":
        net.cast("float16")
    elif dtype == "bfloat16":
        import warnings

        from mxnet.contrib import amp

        net.hybridize()
        net(mx.nd.zeros(input_shape, ctx=contexts[0]))  # convert_hybrid_block needs a traced graph
        with warnings.catch_warnings():  # the SymbolBlock cannot type its weights before they are loaded: harmless
            warnings.filterwarnings("ignore", message="Cannot decide type")
            net = amp.convert_hybrid_block(net, target_dtype="bfloat16", ctx=contexts[0])
        net.hybridize(static_alloc=True, static_shape=True)
    return net
