"""Preparing a network for fast inference: the one place that hybridizes it and converts it to a lower precision.

``net = optimize(get_model('resnest50', pretrained=True), dtype='bfloat16')``; feed the result inputs of
``input_dtype(dtype)``. ``dtype='int8'`` also needs ``calib_data``. Used by ``scripts/verify.py``,
``scripts/predict.py`` (:class:`~resnest_gluon.predict.Predictor`) and the benchmarks.
"""
import mxnet as mx

from .amx import bfloat16_supported, cpu_flags, enable_amx
from .bfloat16 import to_bfloat16
from .quantization import CALIB_MODES, quantize
from ..splat import set_inference_layout

__all__ = ["DTYPES", "SUPPORTED_DEVICES", "CALIB_MODES", "optimize", "input_dtype"]

DTYPES = ("float32", "float16", "bfloat16", "int8")
# dtype -> the device types it is meaningful on (so command lines can refuse a combination before building)
SUPPORTED_DEVICES = {"float32": ("cpu", "gpu"), "float16": ("gpu",), "bfloat16": ("cpu",), "int8": ("cpu",)}
_DEVICE_ERRORS = {
    "float16": "float16 needs a GPU: MXNet's CPU float16 convolutions are not supported; use float32, bfloat16 or "
               "int8 on CPU",
    "bfloat16": "bfloat16 runs on CPU only (MXNet's oneDNN backend); use float16 on GPU",
    "int8": "int8 runs on CPU only (MXNet's oneDNN backend); use float16 on GPU",
}


def _contexts(ctx):
    return list(ctx) if isinstance(ctx, (list, tuple)) else [ctx]


def input_dtype(dtype):
    """The dtype an optimized network's input must have: float16 networks are cast throughout; bfloat16 and int8
    ones convert their float32 input inside."""
    return "float16" if dtype == "float16" else "float32"


def optimize(net, dtype="float32", ctx=mx.cpu(), input_shape=None, fuse=True, calib_data=None, calib_mode="naive",
             num_calib_batches=None, exclude_first_conv=False, amx=True):
    """Hybridizes ``net`` (static allocation and shapes) and converts it to ``dtype``; returns the network to call.

    ``net`` is prepared in place: its split-attention blocks take their inference layout
    (:func:`~resnest_gluon.splat.set_inference_layout`), which gives the same numbers.

    ``fuse`` (float32 and bfloat16 on CPU): oneDNN subgraph fusion (``optimize_for(backend='MKLDNN')``): convolution,
    folded BatchNorm, ReLU and the residual add run as one primitive. The parameters are not modified, and any batch
    size works afterwards. ``input_shape`` defaults to ``(1, 3, S, S)`` with ``S`` the model's data-config input size.

    ``float16`` casts every parameter (GPU only: MXNet's CPU float16 convolutions are not supported).
    ``bfloat16`` (CPU) and ``int8`` (CPU) return a new ``SymbolBlock`` on the first of ``ctx`` (a context or a list
    of them, where the parameters already are), with grouped convolutions regrouped for AMX where it is enabled
    (:mod:`resnest_gluon.deploy.regroup`): see :mod:`resnest_gluon.deploy.bfloat16` and
    :mod:`resnest_gluon.deploy.quantization`.
    ``int8`` is calibrated on ``calib_data`` (an NDArray batch, an iterable of batches or ``(data, label)`` pairs, a
    gluon ``DataLoader`` or an ``mx.io.DataIter``; its first ``num_calib_batches`` batches, all if ``None``) with
    ``calib_mode`` ``'naive'`` (min/max) or ``'entropy'`` (KL); ``exclude_first_conv`` keeps the stem's first
    convolution in float32.

    ``amx`` (bfloat16, int8): let oneDNN use Intel AMX (:func:`~resnest_gluon.deploy.amx.enable_amx`; effective
    only if no oneDNN operator has run in this process yet).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    contexts = _contexts(ctx)
    if any(c.device_type not in SUPPORTED_DEVICES[dtype] for c in contexts):
        raise ValueError(_DEVICE_ERRORS[dtype])
    if dtype != "int8" and calib_data is not None:
        raise ValueError(f"calib_data is only used with dtype='int8', got dtype={dtype!r}")
    if dtype == "bfloat16" and not bfloat16_supported():
        isa = "AVX2" if "avx2" in cpu_flags() else "no AVX-512"
        raise ValueError(f"bfloat16 needs a CPU with AVX-512 (MXNet 1.9.1's oneDNN has no bfloat16 convolutions for "
                         f"{isa} CPUs like this one); use float32 or int8 here")
    if dtype in ("bfloat16", "int8") and amx:
        enable_amx()
    set_inference_layout(net, dtype=dtype)
    if input_shape is None:
        size = getattr(getattr(net, "data_config", None), "input_size", 224)
        input_shape = (1, 3, size, size)
    if dtype == "int8":
        net = quantize(net, calib_data, contexts[0], calib_mode=calib_mode, num_calib_batches=num_calib_batches,
                       exclude_first_conv=exclude_first_conv)
    elif dtype == "bfloat16":
        return to_bfloat16(net, input_shape, contexts[0], fuse=fuse)
    net.hybridize(static_alloc=True, static_shape=True)
    if dtype == "float32" and fuse and all(c.device_type == "cpu" for c in contexts):
        net.optimize_for(mx.nd.zeros(input_shape, ctx=contexts[0]), backend="MKLDNN", static_alloc=True,
                         static_shape=True)
    elif dtype == "float16":
        net.cast("float16")
    return net
