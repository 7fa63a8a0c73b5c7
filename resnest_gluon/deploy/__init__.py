"""Running a trained ResNeSt fast: everything about inference speed, in one place.

- :func:`optimize` (:mod:`.optimize`): hybridize, oneDNN fusion, and float16 / bfloat16 / int8 in MXNet;
  :mod:`.bfloat16`, :mod:`.quantization` (int8 calibration), :mod:`.regroup` (grouped convolutions for Intel AMX),
  :mod:`.amx`;
- :func:`export_onnx` (:mod:`.onnx_export`): an ONNX file that carries its data config and class names;
- :mod:`.engines`: that file run in ONNX Runtime or OpenVINO, the ``backend=`` of
  :class:`~resnest_gluon.predict.Predictor` and ``--backend`` of the command lines.
"""
from .engines import BACKENDS, ENGINE_BACKENDS, ENGINE_DTYPES, NDArrayCalls, engine_for, open_engine
from .onnx_export import export_onnx, onnx_model, read_onnx_info
from .optimize import CALIB_MODES, DTYPES, SUPPORTED_DEVICES, input_dtype, optimize

__all__ = ["CALIB_MODES", "DTYPES", "SUPPORTED_DEVICES", "input_dtype", "optimize", "BACKENDS",
           "ENGINE_BACKENDS", "ENGINE_DTYPES", "open_engine", "engine_for", "NDArrayCalls", "export_onnx",
           "onnx_model", "read_onnx_info"]
