"""An exported ONNX file (:func:`~resnest_gluon.deploy.export_onnx`) run in ONNX Runtime or OpenVINO.

``engine = open_engine("resnest50.onnx", "openvino", threads=2)``; ``logits = engine(batch)`` for a float32
``(N, 3, S, S)`` numpy batch preprocessed as the file's data config says. Each engine is set up the way its
documentation recommends for CPU latency and throughput: ONNX Runtime with all graph optimisations and
``threads`` intra-op threads; OpenVINO compiled for the CPU with ``threads`` inference threads and the precision
hint (``bfloat16`` only where the CPU has bfloat16 instructions: AVX-512 BF16 or AMX; OpenVINO would otherwise
fall back to float32 silently).
"""
import contextlib
import ctypes
import os
import sys

import numpy as np

from ..trained import is_onnx, read_onnx_info
from .onnx_export import onnx_model
from .onnx_quantize import onnx_precision, quantize_onnx

__all__ = ["BACKENDS", "ENGINE_BACKENDS", "ENGINE_DTYPES", "open_engine", "engine_for", "NDArrayCalls",
           "engine_bfloat16_supported",
           "OnnxRuntimeEngine", "OpenVinoEngine"]

BACKENDS = ("mxnet", "onnxruntime", "openvino")
ENGINE_BACKENDS = BACKENDS[1:]
ENGINE_DTYPES = {"onnxruntime": ("float32", "int8"), "openvino": ("float32", "bfloat16", "int8")}


def _model_bytes(model):
    """A path or an ``onnx.ModelProto`` as what both engines read."""
    if isinstance(model, (str, os.PathLike)):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"ONNX file not found: {os.fspath(model)!r}")
        return os.fspath(model)
    return model.SerializeToString()


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def _keep_signal_stack():
    """Gives the calling thread its alternate signal stack back after the block.

    OpenVINO's CPU plugin installs an alternate signal stack of its own on the thread that compiles a model and puts
    back the one it found when that model is destroyed. Two models destroyed in another order than they were made
    leave the thread on a freed stack, and the next signal handled there kills the process with SIGSEGV: Python runs
    its SIGTERM / SIGINT handlers on that stack (measured with OpenVINO 2026.4: two engines, the first deleted first,
    then ``signal.raise_signal(SIGTERM)``). Linux only; elsewhere the block runs as it is.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


class OnnxRuntimeEngine:
    """ONNX Runtime's CPU execution provider on the file; ``engine(batch)`` -> logits (numpy float32)."""

    backend = "onnxruntime"

    def __init__(self, model, threads=None, dtype="float32"):
        if dtype != "float32":
            raise ValueError(f"ONNX Runtime runs the file as it is (float32, or the int8 of a quantized file), not "
                             f"{dtype!r} (bfloat16: use the openvino backend)")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("the onnxruntime backend needs: pip install -r requirements-deploy.txt") from err
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # its per-initializer notes are about other exporters' files
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(_model_bytes(model), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape)

    def __call__(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]


class OpenVinoEngine:
    """OpenVINO's CPU plugin on the file (float32, or bfloat16 through its precision hint)."""

    backend = "openvino"

    def __init__(self, model, threads=None, dtype="float32"):
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"OpenVINO runs the file in float32 or bfloat16 (and a quantized file's int8 layers "
                             f"in int8), not {dtype!r}")
        try:
            import openvino as ov
        except ImportError as err:
            raise ImportError("the openvino backend needs: pip install -r requirements-deploy.txt") from err
        core = ov.Core()
        if dtype == "bfloat16" and not engine_bfloat16_supported("openvino"):
            raise ValueError("bfloat16 needs a CPU with bfloat16 instructions (AVX-512 BF16 or AMX); OpenVINO would "
                             "run float32 here: use float32")
        source = _model_bytes(model)
        network = core.read_model(source) if isinstance(source, str) else core.read_model(source, b"")
        config = {"INFERENCE_PRECISION_HINT": "bf16" if dtype == "bfloat16" else "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        with _keep_signal_stack():  # see there: OpenVINO leaves the thread's signal stack dangling otherwise
            self.compiled = core.compile_model(network, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_shape = tuple(d.get_length() if d.is_static else None
                                 for d in self.compiled.input(0).get_partial_shape())

    def __call__(self, batch):
        result = self.request.infer({0: np.ascontiguousarray(batch, np.float32)})
        return np.array(result[self.compiled.output(0)], dtype=np.float32)  # a copy: the request reuses its buffer


_ENGINES = {"onnxruntime": OnnxRuntimeEngine, "openvino": OpenVinoEngine}


def engine_bfloat16_supported(backend):
    """Whether ``backend`` computes in bfloat16 on this CPU (OpenVINO's CPU plugin lists BF16 among its
    capabilities when the CPU has AVX-512 BF16 or AMX)."""
    if "bfloat16" not in ENGINE_DTYPES.get(backend, ()):
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def open_engine(model, backend, threads=None, dtype="float32"):
    """The engine ``backend`` (``'onnxruntime'`` or ``'openvino'``) running ``model`` (an ONNX path or
    ``onnx.ModelProto``): ``dtype`` is the precision of its float layers (bfloat16: OpenVINO only); a quantized
    model's int8 layers run in int8."""
    if backend not in _ENGINES:
        raise ValueError(f"backend must be one of {', '.join(ENGINE_BACKENDS)} for an ONNX file, got {backend!r}")
    return _ENGINES[backend](model, threads=threads, dtype=dtype)


def engine_for(info, backend, params=None, net=None, threads=None, dtype="float32", **calibration):
    """The engine for a model described by ``info`` (:class:`~resnest_gluon.trained.ModelInfo`): running ``params``
    when it is an ONNX file (whose input size must be ``info``'s), else ``net`` exported on the fly with ``info``'s
    class names and data config (:func:`~resnest_gluon.deploy.onnx_model`). ``dtype='int8'`` runs a quantized
    file as it is, and quantizes a float one first (:func:`~resnest_gluon.deploy.onnx_quantize.quantize_onnx`
    with the ``calibration`` keywords, as for MXNet's int8)."""
    if dtype not in ENGINE_DTYPES.get(backend, ()):
        raise ValueError(f"the {backend} backend runs {', '.join(ENGINE_DTYPES.get(backend, ()))}, not {dtype!r}")

    if params is not None and is_onnx(params):
        stored = read_onnx_info(params).data_config.input_size
        if info.data_config.input_size != stored:
            raise ValueError(f"{params} takes {stored} x {stored} images (exported so); the input size "
                             f"{info.data_config.input_size} needs another export")
        source = params
    elif net is not None:
        source = onnx_model(net, info.class_names, info.data_config)[0]
    else:
        raise ValueError("engine_for needs an ONNX file as params, or the network to export")
    stored = onnx_precision(source)
    if dtype == "int8" and stored != "int8":
        model = source if not isinstance(source, str) else _load(source)
        source = quantize_onnx(model, **calibration)
    elif stored == "int8" and dtype != "int8":
        raise ValueError(f"{params} is quantized (int8): run it with dtype int8")
    elif calibration:
        raise ValueError(f"calibration keywords ({', '.join(calibration)}) are for dtype int8 of a float model")
    return open_engine(source, backend, threads, "float32" if dtype == "int8" else dtype)


def _load(path):
    import onnx

    return onnx.load(path)


class NDArrayCalls:
    """An engine called like a Gluon network, NDArray in and NDArray out: what the MXNet evaluation loop
    (:func:`~resnest_gluon.evaluation.evaluate`) calls."""

    def __init__(self, engine):
        self.engine = engine

    def __call__(self, x):
        import mxnet as mx

        return mx.nd.array(self.engine(x.asnumpy()), dtype="float32")
