"""ONNX export (resnest_gluon.deploy.export_onnx, scripts/export_onnx.py) and the engine backends: the file runs in
ONNX Runtime and OpenVINO with MXNet's numbers, carries its model information, and is shaped for the engines."""
import collections
import dataclasses
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import onnx
import pytest
from PIL import Image

from conftest import REPO, randomize_bn
from recgen import make_image, make_rec
import resnest_gluon as rg
from resnest_gluon.deploy import export_onnx, onnx_model, open_engine, read_onnx_info
from resnest_gluon.deploy.onnx_quantize import PRECISION_KEY, onnx_precision, quantize_onnx
from resnest_gluon.predict import Predictor
from resnest_gluon.trained import load_trained, save_trained

EXPORT = os.path.join(REPO, "scripts", "export_onnx.py")
PREDICT = os.path.join(REPO, "scripts", "predict.py")
VERIFY = os.path.join(REPO, "scripts", "verify.py")
AGREEMENT = os.path.join(REPO, "benchmarks", "agreement.py")
NAMES = [f"shape_{i}" for i in range(5)]
# One name per architecture: the others are the same network under another name and data config (asserted below).
ARCHITECTURES = ["resnest14", "resnest26", "resnest50", "resnest101", "resnest200", "resnest269",
                 "resnest50_fast_1s1x64d", "resnest50_fast_2s1x64d", "resnest50_fast_4s1x64d",
                 "resnest50_fast_1s2x40d", "resnest50_fast_2s2x40d", "resnest50_fast_4s2x40d",
                 "resnest50_fast_1s4x24d"]
SIZE = 64  # the big models are checked at a small input size


def random_net(name, classes=5, seed=0):
    net = rg.get_model(name, classes=classes)
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(magnitude=2.5))
    return randomize_bn(net, seed=seed)


def _inference_arch(name):
    """The architecture as inference sees it: the final dropout is no operation there (and not in the file)."""
    return json.dumps({k: v for k, v in rg.get_config(name).arch.items() if k != "final_drop"}, sort_keys=True)


def test_every_registered_name_is_one_of_the_tested_architectures():
    tested = {_inference_arch(name) for name in ARCHITECTURES}
    assert len(tested) == len(ARCHITECTURES)
    for name in rg.list_models():
        assert _inference_arch(name) in tested, name


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_engines_compute_what_mxnet_computes(name):
    net = random_net(name)
    model, info = onnx_model(net, NAMES, dataclasses.replace(net.data_config, input_size=SIZE))
    batch = np.random.default_rng(1).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    expected = net(mx.nd.array(batch)).asnumpy()
    assert np.abs(expected).max() > 0.1  # logits that can show a difference
    assert not {"Dropout", "BatchNormalization", "ScatterND"} & {node.op_type for node in model.graph.node}
    for backend in ("onnxruntime", "openvino"):
        engine = open_engine(model, backend, threads=2)
        np.testing.assert_allclose(engine(batch), expected, atol=1e-4, rtol=0, err_msg=backend)
        np.testing.assert_allclose(engine(batch[1:2]), expected[1:2], atol=1e-4, rtol=0, err_msg=backend)


def test_the_graph_is_shaped_for_the_engines():
    net = random_net("resnest50_fast_2s2x40d")
    model, _ = onnx_model(net, NAMES, dataclasses.replace(net.data_config, input_size=SIZE))
    graph = model.graph
    ops = collections.Counter(node.op_type for node in graph.node)
    assert ops["Conv"] > 0 and ops["Transpose"] > 0 and ops["Softmax"] > 0
    for gone in ("BatchNormalization", "ScatterND", "Pad", "Shape", "Identity", "Dropout", "Div"):
        assert ops[gone] == 0, gone  # folded, or never made
    assert [i.name for i in graph.input] == ["data"] and [o.name for o in graph.output] == ["logits"]
    batch, *rest = graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param == "batch" and [d.dim_value for d in rest] == [3, SIZE, SIZE]
    read = {name for node in graph.node for name in node.input}
    assert all(init.name in read for init in graph.initializer)  # no dead weights
    onnx.checker.check_model(model)


def test_export_leaves_the_network_as_it_was():
    net = random_net("resnest14")
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    before = net(x).asnumpy()
    flags = [(b.inference_layout, b.fused_attention, b.onnx_layout) for b in _splat_blocks(net)]
    onnx_model(net, NAMES, dataclasses.replace(net.data_config, input_size=SIZE))
    assert [(b.inference_layout, b.fused_attention, b.onnx_layout) for b in _splat_blocks(net)] == flags
    np.testing.assert_array_equal(net(x).asnumpy(), before)


def _splat_blocks(net):
    blocks = []
    net.apply(lambda b: blocks.append(b) if isinstance(b, rg.SplitAttentionConv) else None)
    return blocks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 'trained' resnest14 at 48 px with class names, as save_trained writes it, and its ONNX export."""
    d = tmp_path_factory.mktemp("onnx")
    net = random_net("resnest14", seed=3)
    config = rg.DataConfig(48, 0.8, "bicubic")
    save_trained(net, str(d / "r14.params"), class_names=NAMES, data_config=config)
    info = export_onnx(load_trained(str(d / "r14.params")), str(d / "r14.onnx"))
    images = []
    for i, (h, w) in enumerate([(70, 90), (60, 60), (80, 50)]):
        images.append(str(d / f"img{i}.png"))
        Image.fromarray(make_image(i, h, w, seed=7)).save(images[-1])
    return d, info, images


def test_the_file_carries_its_model_information(trained):
    d, info, _ = trained
    stored = read_onnx_info(str(d / "r14.onnx"))
    assert stored == info
    assert stored.model == "resnest14" and stored.class_names == tuple(NAMES)
    assert stored.data_config == rg.DataConfig(48, 0.8, "bicubic")
    props = {p.key: p.value for p in onnx.load(str(d / "r14.onnx")).metadata_props}
    assert json.loads(props["resnest_gluon.model_info"])["data_config"]["input_size"] == 48


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_predictor_on_the_file_matches_mxnet(trained, backend):
    d, _, images = trained
    reference = Predictor(params=str(d / "r14.params")).probabilities(images)
    predictor = Predictor(params=str(d / "r14.onnx"), backend=backend, threads=2)
    assert predictor.names == NAMES and predictor.config == rg.DataConfig(48, 0.8, "bicubic")
    np.testing.assert_allclose(predictor.probabilities(images), reference, atol=1e-5)
    exported_on_the_fly = Predictor(params=str(d / "r14.params"), backend=backend)
    np.testing.assert_allclose(exported_on_the_fly.probabilities(images), reference, atol=1e-5)


def test_backend_refusals(trained, tmp_path):
    d, _, _ = trained
    with pytest.raises(ValueError, match="is an ONNX file: run it with the onnxruntime or openvino backend"):
        Predictor(params=str(d / "r14.onnx"), backend="mxnet")
    with pytest.raises(ValueError, match="takes 48 x 48 images .* the input size 64 needs another export"):
        Predictor(params=str(d / "r14.onnx"), data_config=rg.DataConfig(64))
    with pytest.raises(ValueError, match="the onnxruntime backend runs float32, int8, not 'bfloat16'"):
        Predictor(params=str(d / "r14.onnx"), dtype="bfloat16")
    with pytest.raises(ValueError, match="is an ONNX file: it runs in ONNX Runtime or OpenVINO"):
        load_trained(str(d / "r14.onnx"))
    foreign = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ValueError, match=r"foreign.onnx: no resnest_gluon.model_info in its metadata_props"):
        read_onnx_info(str(tmp_path / "foreign.onnx"))
    with pytest.raises(ValueError, match="not an imported SymbolBlock"):
        prefix = str(tmp_path / "sym")
        rg.export(load_trained(str(d / "r14.params")), prefix)
        export_onnx(load_trained(prefix + "-symbol.json"), str(tmp_path / "x.onnx"))


def run(script, *args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=600)


def test_cli_exports_checks_and_predicts(trained, tmp_path):
    d, _, images = trained
    out = str(tmp_path / "model.onnx")
    proc = run(EXPORT, "--params", str(d / "r14.params"), "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "resnest14 float32, 5 classes, 48 x 48 px" in proc.stdout
    assert "onnxruntime matches MXNet within" in proc.stdout and "openvino matches MXNet within" in proc.stdout
    assert read_onnx_info(out).class_names == tuple(NAMES)
    # a check that fails leaves the earlier file untouched and no temporary file behind
    before = open(out, "rb").read()
    proc = run(EXPORT, "--params", str(d / "r14.params"), "--crop-size", "32", "--out", out, "--tolerance", "-1")
    assert proc.returncode == 2 and "the exported file disagrees with MXNet" in proc.stderr
    assert "left as it was" in proc.stderr and open(out, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.onnx"]
    # predict.py needs nothing but the file
    report = str(tmp_path / "pred.json")
    proc = run(PREDICT, *images, "--params", out, "--backend", "openvino", "--topk", "2", "--json", report)
    assert proc.returncode == 0, proc.stderr
    result = json.load(open(report))
    assert result["backend"] == "openvino" and result["model"] == "resnest14"
    expected = Predictor(params=str(d / "r14.params")).predict(images, topk=2)
    for pred, top in zip(result["predictions"], expected):
        assert [t["class"] for t in pred["top"]] == [name for name, _ in top]
        np.testing.assert_allclose([t["probability"] for t in pred["top"]], [p for _, p in top], atol=1e-5)
    # an int8 file, calibrated on a .rec; predict.py takes its precision from it
    make_rec(str(tmp_path / "calib"), 6, seed=6)
    int8 = str(tmp_path / "int8.onnx")
    proc = run(EXPORT, "--params", str(d / "r14.params"), "--out", int8, "--dtype", "int8", "--calib-rec",
               str(tmp_path / "calib.rec"), "--batch-size", "3", "--num-calib-batches", "2", "--min-agreement", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "resnest14 int8" in proc.stdout and "agrees with float32 on" in proc.stdout
    assert "of 6 calibration images" in proc.stdout
    proc = run(PREDICT, images[0], "--params", int8, "--json", report)
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(report))["dtype"] == "int8" and json.load(open(report))["backend"] == "onnxruntime"


def test_verify_counts_the_same_in_every_backend(trained, tmp_path):
    """verify.py's numbers with the ONNX file in both engines are MXNet's: same batches, same counting."""
    d, _, _ = trained
    rec = str(tmp_path / "val")
    make_rec(rec, 5, seed=4)  # labels 0..4: one image per class
    results = {}
    for backend, params in (("mxnet", "r14.params"), ("onnxruntime", "r14.onnx"), ("openvino", "r14.onnx")):
        out = str(tmp_path / f"{backend}.json")
        proc = run(VERIFY, "--rec-val", rec + ".rec", "--params", str(d / params), "--backend", backend,
                   "--batch-size", "2", "--num-workers", "1", "--json", out)
        assert proc.returncode == 0, proc.stderr
        results[backend] = json.load(open(out))
        assert results[backend]["backend"] == backend and results[backend]["images"] == 5
    for backend in ("onnxruntime", "openvino"):
        for key in ("top1_correct", "top5_correct", "data_config", "model"):
            assert results[backend][key] == results["mxnet"][key], (backend, key)
    proc = run(VERIFY, "--rec-val", rec + ".rec", "--params", str(d / "r14.onnx"), "--backend", "mxnet")
    assert proc.returncode == 2 and "is an ONNX file: run it with --backend onnxruntime or openvino" in proc.stderr


def test_int8_in_the_engines_is_calibrated_and_close_to_float32(trained, tmp_path):
    d, _, images = trained
    float32 = Predictor(params=str(d / "r14.onnx"))
    calib = [preprocess_batch(images, float32.config)] * 2
    model = quantize_onnx(onnx.load(str(d / "r14.onnx")), calib, num_calib_batches=1)
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # weights too
    assert onnx_precision(model) == "int8" and json.loads(
        {p.key: p.value for p in model.metadata_props}[PRECISION_KEY])["calib_images"] == 3
    onnx.save(model, str(tmp_path / "int8.onnx"))
    assert read_onnx_info(str(tmp_path / "int8.onnx")).class_names == tuple(NAMES)
    reference = float32.probabilities(images)
    for backend in ("onnxruntime", "openvino"):
        int8 = Predictor(params=str(tmp_path / "int8.onnx"), dtype="int8", backend=backend).probabilities(images)
        assert np.abs(int8 - reference).max() < 0.05, backend  # close, not equal: int8 did run
        assert np.abs(int8 - reference).max() > 0, backend
        on_the_fly = Predictor(params=str(d / "r14.params"), dtype="int8", backend=backend, calib_data=calib)
        np.testing.assert_allclose(on_the_fly.probabilities(images), int8, atol=1e-6)
    with pytest.raises(ValueError, match="is quantized .int8.: run it with dtype int8"):
        Predictor(params=str(tmp_path / "int8.onnx"), dtype="float32")
    by_itself = Predictor(params=str(tmp_path / "int8.onnx")).probabilities(images)  # the file says int8
    np.testing.assert_allclose(by_itself, Predictor(params=str(tmp_path / "int8.onnx"), dtype="int8").probabilities(
        images), atol=1e-6)
    with pytest.raises(ValueError, match="quantized already"):
        quantize_onnx(model, calib)
    with pytest.raises(ValueError, match="int8 needs calibration data"):
        Predictor(params=str(d / "r14.onnx"), dtype="int8")


def preprocess_batch(images, config):
    from resnest_gluon.data import preprocess_image

    return mx.nd.concat(*[preprocess_image(Image.open(path).convert("RGB"), config) for path in images], dim=0)


def test_agreement_in_an_engine(trained, tmp_path):
    d, _, _ = trained
    rec = str(tmp_path / "val")
    make_rec(rec, 5, seed=5)
    proc = run(AGREEMENT, "--rec-val", rec + ".rec", "--params", str(d / "r14.onnx"), "--backend", "openvino",
               "--calib-rec", rec + ".rec", "--batch-size", "2", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    doc = json.load(open(tmp_path / "agreement.json"))
    assert doc["backend"] == "openvino" and list(doc["results"])[0] == "float32" and "int8" in doc["results"]
    assert all(r["images"] == 5 for r in doc["results"].values())


def test_openvino_bfloat16_runs_where_the_cpu_has_it_and_is_refused_elsewhere(trained):
    d, _, images = trained
    from resnest_gluon.deploy.engines import engine_bfloat16_supported

    if not engine_bfloat16_supported("openvino"):
        with pytest.raises(ValueError, match="bfloat16 needs a CPU with bfloat16 instructions"):
            Predictor(params=str(d / "r14.onnx"), backend="openvino", dtype="bfloat16")
        return
    reference = Predictor(params=str(d / "r14.onnx")).probabilities(images)
    bf16 = Predictor(params=str(d / "r14.onnx"), backend="openvino", dtype="bfloat16").probabilities(images)
    assert np.abs(bf16 - reference).max() < 0.05


_TWO_OPENVINO_ENGINES = """
import ctypes, faulthandler, gc, signal
import numpy as np
from onnx import TensorProto, helper
from resnest_gluon.deploy import engines

faulthandler.enable()  # as pytest does: the thread has an alternate signal stack of its own


def signal_stack():
    stack = engines._SignalStack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
    return stack.ss_sp, stack.ss_size


graph = helper.make_graph([helper.make_node("Relu", ["data"], ["logits"])], "relu",
                          [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
before = signal_stack()
first, second = (engines.OpenVinoEngine(model, threads=1) for _ in range(2))
assert (first(np.array([[-1, 0, 1, 2]], np.float32)) == [[0, 0, 1, 2]]).all()
del first
gc.collect()
del second
gc.collect()
print("signal stack kept" if signal_stack() == before else "signal stack changed", flush=True)
signal.signal(signal.SIGTERM, lambda *_: print("handler ran", flush=True))
signal.raise_signal(signal.SIGTERM)
"""


def test_openvino_engines_leave_python_signal_handlers_working():
    """Two OpenVINO engines, the first deleted first, then SIGTERM to a Python handler: the handler runs. OpenVINO's
    CPU plugin swaps the thread's alternate signal stack at compile time and restores it at deletion, so this order
    left the thread on a freed stack (SIGSEGV; it once killed test_preemption after this module's engines)."""
    proc = subprocess.run([sys.executable, "-c", _TWO_OPENVINO_ENGINES], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout}{proc.stderr[-2000:]}"
    assert proc.stdout.split() == ["signal", "stack", "kept", "handler", "ran"]
