"""The ONNX sides of ``compare.py``: our exported file and timm's, each run in ONNX Runtime and OpenVINO by the same
engine code (``resnest_gluon.deploy.engines``), so the only difference between ``ours-X`` and ``timm-X`` is the file.

Our file is ``resnest_gluon.deploy.onnx_model`` of the network with random weights; timm's is written by the timm
worker (``timm.utils.onnx.onnx_export``, see ``_peer_worker.py``). int8 is either file quantized by
``deploy.onnx_quantize.quantize_onnx`` on random batches (speed only), timm's after ONNX Runtime's quantization
pre-processing, as its documentation asks. Each file is made once per model and reused
by every case.
"""
import os
import tempfile

import mxnet as mx
import numpy as np

from resnest_gluon.deploy.engines import engine_bfloat16_supported, open_engine
from resnest_gluon.deploy.onnx_quantize import quantize_onnx

from . import _mx_prep
from ._bench import build


FILE_OF = {"ours": "resnest_gluon.deploy.onnx_model (MXNet's exporter, then prepare_graph)",
           "timm": "timm.utils.onnx.onnx_export (exportable=True, TorchScript torch.onnx exporter, opset 17); "
                   "int8: onnxruntime.quantization quant_pre_process first"}
SETTINGS = {"onnxruntime": "CPUExecutionProvider, ORT_ENABLE_ALL graph optimisations, intra_op_num_threads = "
                           "--threads, inter_op_num_threads 1",
            "openvino": "CPU plugin, INFERENCE_NUM_THREADS = --threads, INFERENCE_PRECISION_HINT f32 (bf16 for the "
                        "bf16 cases), one infer request"}


def versions():
    """The engine and ONNX package versions of this process."""
    import onnx
    import onnxruntime
    import openvino

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


class OnnxFiles:
    """The float32 ONNX models of a run, per (side's implementation, model label), made on first use; int8 ones
    are quantized from them, also once. ``timm_worker`` (a loaded ``PeerWorker`` for timm) writes timm's files."""

    def __init__(self, timm_worker=None):
        self.timm_worker = timm_worker
        self._dir = tempfile.TemporaryDirectory(prefix="compare-onnx-")
        self._models = {}
        self.params = {}  # (who, label) -> trainable parameters of the network the file was made from

    def close(self):
        self._models.clear()
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def model(self, who, spec, timm_name, dtype):
        """The ONNX model (a ModelProto) of ``who`` ('ours' or 'timm') for ``spec``, in float32 or int8."""
        key = (who, spec.label, dtype)
        if key not in self._models:
            if dtype == "int8":
                source = self.model(who, spec, timm_name, "float32")
                if who == "timm":  # what ONNX Runtime asks of a torch.onnx file first (ours is prepared already)
                    source = self._pre_processed(source)
                self._models[key] = quantize_onnx(source, calib_data=_random_batches(spec.input_size))
            else:
                self._models[key] = self._ours(spec) if who == "ours" else self._timm(spec, timm_name)
        return self._models[key]

    def _ours(self, spec):
        from resnest_gluon import DataConfig, count_params
        from resnest_gluon.deploy import onnx_model

        net = build(spec.name)
        mx.random.seed(0)
        net.initialize(mx.init.Xavier())
        net(mx.nd.zeros((1, 3, spec.input_size, spec.input_size)))
        self.params[("ours", spec.label)] = count_params(net)
        return onnx_model(net, data_config=DataConfig(input_size=spec.input_size))[0]

    def _pre_processed(self, model):
        """ONNX Runtime's quantization pre-processing (``quant_pre_process``: shape inference and its basic graph
        optimisations; without sympy's symbolic shapes): timm's int8 file ran 15 img/s without it, 47 with it
        (resnest50d@224, batch 16, 2 threads)."""
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        source, out = os.path.join(self._dir.name, "pre-in.onnx"), os.path.join(self._dir.name, "pre-out.onnx")
        onnx.save(model, source)
        quant_pre_process(source, out, skip_symbolic_shape=True)
        processed = onnx.load(out)
        os.remove(source)
        os.remove(out)
        return processed

    def _timm(self, spec, timm_name):
        import onnx

        if self.timm_worker is None:
            raise RuntimeError("timm's ONNX file needs the timm worker (.venv-torch)")
        path = os.path.join(self._dir.name, f"timm-{timm_name}-{spec.input_size}.onnx")
        self.params[("timm", spec.label)] = self.timm_worker.export_onnx(timm_name, spec.input_size, path)
        model = onnx.load(path)
        os.remove(path)
        return model


def _random_batches(input_size, batch_size=8):
    rng = np.random.RandomState(0)
    return [mx.nd.array(rng.uniform(-1, 1, (batch_size, 3, input_size, input_size)).astype(np.float32))
            for _ in range(_mx_prep.CALIBRATION_BATCHES)]


def engine_step(model, engine, dtype, batch_size, input_size, threads):
    """One timed batch of ``model`` in ``engine``: ``step()`` runs a fixed random batch and returns once the logits
    are in a numpy array. bfloat16: OpenVINO's precision hint, refused (ValueError) where the CPU lacks it."""
    if dtype == "bfloat16" and not engine_bfloat16_supported(engine):
        raise ValueError(f"{engine} has no bfloat16 on this CPU (it needs AVX-512 BF16 or AMX)")
    runner = open_engine(model, engine, threads=threads, dtype="bfloat16" if dtype == "bfloat16" else "float32")
    x = np.random.RandomState(0).uniform(-1, 1, (batch_size, 3, input_size, input_size)).astype(np.float32)

    def step():
        runner(x)

    return step
