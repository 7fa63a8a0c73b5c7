"""A trained ResNeSt as an ONNX file that ONNX Runtime and OpenVINO run fast and that knows what it is.

``export_onnx(net, "resnest50.onnx")`` traces the network with MXNet's own exporter (``mx.onnx.export_model``) in
the split-attention blocks' ONNX layout (:func:`~resnest_gluon.splat.set_onnx_layout`: Transpose + Softmax +
ReduceSum, no fused operator, no ScatterND), then prepares the graph for the engines:

- the weights are constants, not graph inputs (MXNet's exporter lists every initializer as an input too, which
  stops ONNX Runtime from folding anything: 0.6x the speed of timm's export, measured);
- every BatchNormalization after a convolution is folded into that convolution's weights and bias;
- nodes and initializers nothing reads are dropped; the input is ``data`` (N, 3, H, W) with a dynamic batch axis,
  the output ``logits`` (N, classes);
- the model information (:class:`~resnest_gluon.trained.ModelInfo`: model name, classes, class names, evaluation
  data config) goes into ``metadata_props`` under ``resnest_gluon.model_info``, so :func:`read_onnx_info` (and
  :class:`~resnest_gluon.predict.Predictor`) need nothing else.

The image size is fixed at the data config's input size (the size the model is evaluated at: constant shapes
are what the engines optimise best; export with another ``data_config`` for another size). Needs ``onnx`` (1.17:
MXNet 1.9.1's exporter uses ``onnx.mapping``, gone in 1.18).
"""
import contextlib
import ctypes
import json
import logging
import os
import tempfile
import warnings

import mxnet as mx
import numpy as np

from ..atomic import atomic_write
from ..config import __version__
from ..splat import SplitAttentionConv, set_onnx_layout
from ..trained import ONNX_METADATA_KEY, info_of, is_dense, read_onnx_info

__all__ = ["METADATA_KEY", "INPUT_NAME", "OUTPUT_NAME", "export_onnx", "onnx_model", "read_onnx_info",
           "prepare_graph"]

METADATA_KEY = ONNX_METADATA_KEY
INPUT_NAME, OUTPUT_NAME = "data", "logits"


@contextlib.contextmanager
def quiet_logging():
    """Silences the root logger below ERROR and Python warnings for the block: MXNet's exporter logs every node it
    converts, ONNX Runtime's quantizer advises on pre-processing that our graph has had."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _onnx():
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: pip install -r requirements-deploy.txt") from err
    return onnx


def _layout_of(net):
    """Each split-attention block's current layout flags, to put back after the export."""
    blocks = []
    net.apply(lambda b: blocks.append(b) if isinstance(b, SplitAttentionConv) else None)
    return [(b, b.inference_layout, b.inference_dtype, b.fused_attention, b.onnx_layout) for b in blocks]


def _restore(layout):
    for block, inference, dtype, fused, onnx_layout in layout:
        block.inference_layout, block.inference_dtype = inference, dtype
        block.fused_attention, block.onnx_layout = fused, onnx_layout


def _trace(net, size):
    """The network's symbol (called on a symbolic input in the ONNX layout for ``size`` x ``size`` images) and its
    parameters on the CPU."""
    if not isinstance(net, mx.gluon.HybridBlock) or isinstance(net, mx.gluon.SymbolBlock):
        raise ValueError("export_onnx needs a network built by resnest_gluon (get_model, load_trained of a .params "
                         "file), not an imported SymbolBlock: load the .params file instead")
    layout = _layout_of(net)
    try:
        set_onnx_layout(net, size)
        sym = net(mx.sym.var(INPUT_NAME))
    finally:
        _restore(layout)
    needed = set(sym.list_inputs())
    params = {name: p.data(p.list_ctx()[0]).as_in_context(mx.cpu())
              for name, p in net.collect_params().items() if name in needed}
    return sym, params


class _ListedInputs(mx.sym.Symbol):
    """A symbol that lists its inputs once: MXNet 1.9.1's exporter asks ``list_inputs()`` again for every parameter
    (quadratic: 11 of the 27 s of exporting resnest200)."""

    __slots__ = ("_inputs",)

    def list_inputs(self):
        if getattr(self, "_inputs", None) is None:
            self._inputs = super().list_inputs()
        return self._inputs


def _with_listed_inputs(sym):
    """A copy of ``sym`` (a handle of its own) as a :class:`_ListedInputs`."""
    from mxnet.base import _LIB, SymbolHandle, c_str, check_call

    handle = SymbolHandle()
    check_call(_LIB.MXSymbolCreateFromJSON(c_str(sym.tojson()), ctypes.byref(handle)))
    return _ListedInputs(handle)


def _consumers(graph):
    users = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _fold_batch_norm(graph, onnx):
    """Folds each BatchNormalization that is the only reader of a Conv's output into that Conv (weight scaled per
    output channel, bias shifted). BatchNorms elsewhere stay as they are."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    users = _consumers(graph)
    dropped = []
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(users.get(bn.input[0], [])) != 1:
            continue
        if conv.input[1] not in inits or not all(name in inits for name in bn.input[1:5]):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[name]).astype(np.float64) for name in bn.input[1:5])
        weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2
                else np.zeros(weight.shape[0]))
        scale = gamma / np.sqrt(var + eps)
        weight = (weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(np.float32)
        bias = ((bias - mean) * scale + beta).astype(np.float32)
        weight_name, bias_name = conv.output[0] + "_folded_weight", conv.output[0] + "_folded_bias"
        graph.initializer.extend([numpy_helper.from_array(weight, weight_name),
                                  numpy_helper.from_array(bias, bias_name)])
        del conv.input[1:]
        conv.input.extend([weight_name, bias_name])
        conv.output[0] = bn.output[0]  # the Conv now writes what the BatchNorm wrote
        dropped.append(bn)
    for bn in dropped:
        graph.node.remove(bn)
    return len(dropped)


def _constant(graph, name):
    from onnx import numpy_helper

    init = next((i for i in graph.initializer if i.name == name), None)
    return None if init is None else numpy_helper.to_array(init)


def _is_no_op(graph, node):
    """Identity, Dropout (a no-op at inference), a division by the constant 1 (the softmax temperature of MXNet's
    exporter) and a Reshape of a Reshape's output whose shape copies only the batch axis (the pair becomes one)."""
    if node.op_type in ("Identity", "Dropout"):
        return True
    if node.op_type in ("Div", "Mul") and len(node.input) == 2:
        value = _constant(graph, node.input[1])
        return value is not None and value.size == 1 and float(value.reshape(())) == 1.0
    return False


def _merge_reshapes(graph):
    """A Reshape that reads only another Reshape's output takes that Reshape's input instead (when its target shape
    is constant and copies, with 0, at most the batch axis, which both share)."""
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape = _constant(graph, node.input[1])
        earlier = producer.get(node.input[0])
        if shape is None or earlier is None or earlier.op_type != "Reshape" or 0 in shape[1:]:
            continue
        earlier_shape = _constant(graph, earlier.input[1])
        if shape[0] == 0 and (earlier_shape is None or earlier_shape[0] != 0):
            continue
        node.input[0] = earlier.input[0]


def _bypass_identities(graph):
    """Removes nodes that pass their first input on unchanged (:func:`_is_no_op`), wiring their readers to it."""
    outputs = {o.name for o in graph.output}
    for node in [n for n in graph.node if _is_no_op(graph, n)]:
        source, target = node.input[0], node.output[0]
        if target in outputs:
            continue
        graph.node.remove(node)
        for other in graph.node:
            for i, name in enumerate(other.input):
                if name == target:
                    other.input[i] = source


def _prune(graph):
    """Drops nodes whose outputs nothing reads (repeatedly) and initializers no node reads; the weights stop being
    graph inputs."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(out in read for out in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | outputs
    live = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(live)
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)


def _rename(graph, old, new):
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def prepare_graph(model, onnx=None):
    """The engine-facing clean-up of an exported ONNX ``model`` (in place): BatchNorm folding, pruning, the weights
    out of the inputs, the input and output named ``data`` and ``logits`` with a dynamic batch axis."""
    onnx = onnx or _onnx()
    graph = model.graph
    _bypass_identities(graph)
    _merge_reshapes(graph)
    _prune(graph)  # first: with the weights out of the inputs, the folding sees them as constants
    folded = _fold_batch_norm(graph, onnx)
    _prune(graph)
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {[i.name for i in graph.input]} -> "
                         f"{[o.name for o in graph.output]}")
    _rename(graph, graph.input[0].name, INPUT_NAME)
    _rename(graph, graph.output[0].name, OUTPUT_NAME)
    for value, axis_names in ((graph.input[0], ("batch",)), (graph.output[0], ("batch",))):
        for dim, axis_name in zip(value.type.tensor_type.shape.dim, axis_names):
            if axis_name:
                dim.dim_param = axis_name
    return folded


def onnx_model(net, class_names=None, data_config=None):
    """``net`` (a network built by this package) as an ``onnx.ModelProto`` ready for the engines, and its
    :class:`~resnest_gluon.trained.ModelInfo` (also in the model's metadata). See :func:`export_onnx`."""
    onnx = _onnx()
    info = info_of(net, class_names, data_config)
    if is_dense(info.model):
        raise ValueError(f"export_onnx exports the classifiers, not {info.model}")
    size = info.data_config.input_size
    sym, params = _trace(net, size)
    with quiet_logging(), tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        mx.onnx.export_model(_with_listed_inputs(sym), params, [(1, 3, size, size)], np.float32, raw, dynamic=True,
                             dynamic_input_shapes=[(None, 3, size, size)])
        model = onnx.load(raw)
    prepare_graph(model, onnx)
    model.producer_name, model.producer_version = "resnest-gluon", _version()
    model.doc_string = f"{info.model}, {info.num_classes} classes; model information in metadata_props"
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info.to_dict())
    onnx.checker.check_model(model)
    return model, info


def export_onnx(net, path, class_names=None, data_config=None):
    """Writes ``net`` (a network built by this package) to the ONNX file ``path`` and returns its
    :class:`~resnest_gluon.trained.ModelInfo` (stored in the file's metadata).

    ``class_names`` / ``data_config`` default to the network's own (``net.class_names``, ``net.data_config``).
    The file takes images of the data config's input size, any batch size. The network is left as it was (layout,
    fused operator); the file appears complete or not at all.
    """
    model, info = onnx_model(net, class_names, data_config)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: _onnx().save(model, tmp))
    return info


def _version():
    return __version__
