"""int8 inference on CPU: a network quantized by MXNet's oneDNN (MKLDNN) backend, calibrated on sample batches.

Calibration runs the float32 network over a few batches to fix every int8 layer's range once (``naive``: the
observed min/max; ``entropy``: the KL-divergence threshold), so that inference never computes ranges on the fly.
Used through :func:`resnest_gluon.deploy.optimize` (``dtype='int8'``); the names follow MXNet's and GluonCV's
quantization scripts (``calib_mode``, ``num_calib_batches``, ``exclude_first_conv``).
"""
import json
import warnings

import mxnet as mx

from .regroup import amx_groups

__all__ = ["CALIB_MODES", "calibration_batches", "first_conv_name", "quantize"]

CALIB_MODES = ("naive", "entropy")
# Kept in float32: MXNet 1.9's int8 elementwise product fails when one input is uint8 (after a ReLU) and the other
# int8 (the split-attention channel scaling), and its output feeds float32 slices anyway.
EXCLUDED_OPERATORS = ("elemwise_mul",)


def _as_batch(item, where):
    """The image batch of one item of a calibration source: an NDArray / numpy array, a ``(data, label)`` pair as a
    gluon DataLoader yields, or an ``mx.io.DataBatch``."""
    if isinstance(item, mx.io.DataBatch):
        item = item.data[0]
    elif isinstance(item, (list, tuple)):
        if not item:
            raise ValueError(f"calib_data: {where} is an empty list/tuple; expected an image batch")
        item = item[0]
    if not isinstance(item, mx.nd.NDArray):
        try:
            item = mx.nd.array(item)
        except Exception:  # pylint: disable=broad-except
            raise ValueError(f"calib_data: {where} is a {type(item).__name__}, not an image batch (an NDArray of "
                             f"shape (N, 3, H, W), a (data, label) pair or an mx.io.DataBatch)") from None
    if item.ndim != 4:
        raise ValueError(f"calib_data: {where} has shape {item.shape}; expected (N, 3, H, W)")
    return item


def calibration_batches(calib_data, num_calib_batches=None):
    """The first ``num_calib_batches`` image batches (all if ``None``) of ``calib_data`` as float32 NDArrays.

    ``calib_data``: one NDArray batch, an iterable of batches (list, generator, gluon ``DataLoader``) or an
    ``mx.io.DataIter`` (reset first).
    """
    if calib_data is None:
        raise ValueError("int8 needs calibration data: pass calib_data= a few batches of images preprocessed "
                         "like the inputs (e.g. from the training set); random batches only suit timing")
    if num_calib_batches is not None and num_calib_batches < 1:
        raise ValueError(f"num_calib_batches must be >= 1, got {num_calib_batches}")
    if isinstance(calib_data, (mx.nd.NDArray,)) or hasattr(calib_data, "__array_interface__"):
        calib_data = [calib_data]
    if isinstance(calib_data, mx.io.DataIter):
        calib_data.reset()
    try:
        items = iter(calib_data)
    except TypeError:
        raise ValueError(f"calib_data must be an NDArray batch or an iterable of batches, got "
                         f"{type(calib_data).__name__}") from None
    batches = []
    for i, item in enumerate(items):
        if num_calib_batches is not None and i >= num_calib_batches:
            break
        batches.append(_as_batch(item, f"batch {i}").astype("float32", copy=False))
    if not batches:
        raise ValueError("calib_data gave no batches")
    return batches


class _BatchIter(mx.io.DataIter):
    """The calibration batches as the ``mx.io.DataIter`` that MXNet's calibration loop reads."""

    def __init__(self, batches, ctx):
        super().__init__(batch_size=batches[0].shape[0])
        self._batches = [b.as_in_context(ctx) for b in batches]
        self._pos = 0
        self.provide_data = [mx.io.DataDesc("data", batches[0].shape)]
        self.provide_label = None

    def reset(self):
        self._pos = 0

    def next(self):
        if self._pos >= len(self._batches):
            raise StopIteration
        batch = self._batches[self._pos]
        self._pos += 1
        return mx.io.DataBatch(data=[batch], provide_data=[mx.io.DataDesc("data", batch.shape)])


def first_conv_name(net):
    """The name of the first convolution of a traced (hybridized and called) network, e.g. the stem's."""
    graph = json.loads(net._cached_graph[1].tojson())
    for node in graph["nodes"]:
        if node["op"] == "Convolution":
            return node["name"]
    raise ValueError("the network has no Convolution to exclude (exclude_first_conv)")


def quantize(net, calib_data, ctx=mx.cpu(), calib_mode="naive", num_calib_batches=None, exclude_first_conv=False,
             quantized_dtype="auto", logger=None):
    """A calibrated int8 ``SymbolBlock`` of the float32 HybridBlock ``net`` (CPU; its parameters on ``ctx``).

    ``exclude_first_conv`` keeps the stem's first convolution (3 input channels, little compute, the layer most
    sensitive to rounding its signed input) in float32. ``quantized_dtype='auto'`` stores activations after a
    ReLU as uint8 (one more bit) and the others as int8. The classifier (``Dense``) stays quantized too.
    """
    if calib_mode not in CALIB_MODES:
        raise ValueError(f"calib_mode must be one of {', '.join(CALIB_MODES)}, got {calib_mode!r}")
    if ctx.device_type != "cpu":
        raise ValueError(f"int8 runs on CPU only (MXNet's oneDNN backend), got ctx={ctx}")
    from mxnet.contrib.quantization import quantize_net_v2

    batches = calibration_batches(calib_data, num_calib_batches)
    net(batches[0].as_in_context(ctx))  # initialises deferred parameters before the regrouping reads them
    net, _ = amx_groups(net, ctx, "int8")  # a SymbolBlock; `net` itself is unchanged
    net.hybridize()
    net(batches[0].as_in_context(ctx))  # trace the graph (for first_conv_name) with the calibration shape
    excluded = [first_conv_name(net)] if exclude_first_conv else []
    with warnings.catch_warnings():  # the SymbolBlock cannot type its inputs before the first call: harmless
        warnings.filterwarnings("ignore", message="Cannot decide type")
        qnet = quantize_net_v2(net, quantized_dtype=quantized_dtype, quantize_mode="full",
                               exclude_operators=list(EXCLUDED_OPERATORS),
                               exclude_layers=excluded, calib_data=_BatchIter(batches, ctx), calib_mode=calib_mode,
                               ctx=ctx, logger=logger)
    return qnet
