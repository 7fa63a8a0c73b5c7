"""int8 for the engines: the exported ONNX graph quantized by ONNX Runtime's static quantization, calibrated the way
:func:`~resnest_gluon.deploy.optimize` calibrates MXNet's int8 (the same ``calib_data`` / ``calib_mode`` /
``num_calib_batches`` / ``exclude_first_conv``).

The result is a QDQ graph (QuantizeLinear / DequantizeLinear pairs around the float operators): ONNX Runtime runs
it with its int8 kernels and OpenVINO reads the same pairs as its own int8 layers, so one file serves both engines.
Weights are int8 per output channel in 7 bits (``reduce_range``), activations uint8: x86 CPUs without VNNI (AVX2,
AVX-512 before Cascade Lake) multiply uint8 by int8 into saturating 16-bit sums, which full-range weights overflow
(measured on the demo's checkpoint, AVX2: top-1 agreement with float32 97.3 % -> 99.8 % in ONNX Runtime,
98.5 % -> 99.5 % in OpenVINO).
"""
import json
import os
import tempfile

from .quantization import calibration_batches
from .onnx_export import METADATA_KEY, INPUT_NAME, _onnx, quiet_logging

__all__ = ["PRECISION_KEY", "quantize_onnx", "onnx_precision"]

PRECISION_KEY = "resnest_gluon.precision"


def onnx_precision(model):
    """``'int8'`` for a model :func:`quantize_onnx` made, else ``'float32'`` (``model``: a path or ModelProto)."""
    if not hasattr(model, "metadata_props"):
        model = _onnx().load(os.fspath(model), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props[PRECISION_KEY])["dtype"] if PRECISION_KEY in props else "float32"


def _first_conv(model):
    return next(node.name for node in model.graph.node if node.op_type == "Conv")


def quantize_onnx(model, calib_data=None, calib_mode="naive", num_calib_batches=None, exclude_first_conv=False):
    """The float32 ONNX ``model`` (a ModelProto from :func:`~resnest_gluon.deploy.onnx_model`) quantized to int8.

    ``calib_data`` and the keywords as in :func:`~resnest_gluon.deploy.optimize`: ``calib_mode`` ``'naive'``
    (min/max) or ``'entropy'``; ``exclude_first_conv`` keeps the stem's first convolution in float32. The model
    information is kept, and the calibration is recorded under ``resnest_gluon.precision``.
    """
    onnx = _onnx()
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError as err:
        raise ImportError("int8 for the engines needs onnxruntime's quantization tools: "
                          "pip install -r requirements-deploy.txt") from err
    if calib_mode not in ("naive", "entropy"):
        raise ValueError(f"calib_mode must be 'naive' or 'entropy', got {calib_mode!r}")
    if onnx_precision(model) == "int8":
        raise ValueError("this ONNX model is quantized already")
    batches = [b.asnumpy() for b in calibration_batches(calib_data, num_calib_batches)]

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.rest = iter(batches)

        def get_next(self):
            batch = next(self.rest, None)
            return None if batch is None else {INPUT_NAME: batch}

    method = CalibrationMethod.MinMax if calib_mode == "naive" else CalibrationMethod.Entropy
    with tempfile.TemporaryDirectory() as tmp:
        source, out = os.path.join(tmp, "float32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, source)  # a file: quantize_static moves a ModelProto's weights out to external data
        with quiet_logging():
            quantize_static(source, out, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, calibration_providers=["CPUExecutionProvider"],
                            nodes_to_exclude=[_first_conv(model)] if exclude_first_conv else None)
        quantized = onnx.load(out)
    info = {p.key: p.value for p in model.metadata_props}
    del quantized.metadata_props[:]
    for key, value in ((METADATA_KEY, info.get(METADATA_KEY)), (PRECISION_KEY, json.dumps({
            "dtype": "int8", "calib_mode": calib_mode, "calib_batches": len(batches),
            "calib_images": int(sum(len(b) for b in batches)), "exclude_first_conv": exclude_first_conv}))):
        if value is not None:
            entry = quantized.metadata_props.add()
            entry.key, entry.value = key, value
    return quantized
