"""Tests of the PyTorch -> Gluon weight converter (resnest_gluon/convert.py, scripts/convert_torch_weights.py).

Everything here runs in the main environment, which has no torch: the name map and the checks work on numpy arrays.
The parity test against timm runs tests/torch_parity_check.py with the torch environment's interpreter.
"""
import importlib.util
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import resnest_gluon
from resnest_gluon import convert
from resnest_gluon.convert import (convert_file, convert_state_dict, gluon_to_torch_name, load_torch_checkpoint,
                                   torch_names, unwrap_state_dict)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO, "scripts", "convert_torch_weights.py")
PARITY = os.path.join(REPO, "tests", "torch_parity_check.py")
TORCH_PYTHON = os.path.join(REPO, ".venv-torch", "bin", "python")
TIMM_MODELS = ("resnest14d", "resnest26d", "resnest50d", "resnest101e", "resnest200e", "resnest269e",
               "resnest50d_1s4x24d", "resnest50d_4s2x40d")


def torch_python():
    """The torch environment's interpreter; its absence is a failure (the parity check is part of the suite)."""
    if not os.access(TORCH_PYTHON, os.X_OK):
        pytest.fail(f"{TORCH_PYTHON} not found: the PyTorch parity checks need the torch environment. "
                    f"Create it with: tools/setup_env.sh torch")
    return TORCH_PYTHON


# --------------------------------------------------------------------------- helpers


def torch_state_dict(net, values=True, seed=0):
    """``net``'s weights under their PyTorch names, as timm's state_dict() would give them (numpy arrays).

    With ``values=False`` only the shapes are right (zeros), enough for the checks and cheap for big models.
    BN layers get the ``num_batches_tracked`` counter PyTorch adds.
    """
    rng = np.random.RandomState(seed)
    params = net._collect_params_with_prefix()
    out = {}
    for g, t in torch_names(net).items():
        shape = params[g].shape
        out[t] = rng.standard_normal(shape).astype(np.float32) if values else np.zeros(shape, np.float32)
        if t.endswith(".running_var"):
            out[t[: -len("running_var")] + "num_batches_tracked"] = np.array(7, dtype=np.int64)
    return out


@pytest.fixture(scope="module")
def net14():
    return resnest_gluon.get_model("resnest14d")


@pytest.fixture(scope="module")
def sd14(net14):
    return torch_state_dict(net14)


# --------------------------------------------------------------------------- the name map


@pytest.mark.parametrize("gluon, torch", [
    ("conv1.0.weight", "conv1.0.weight"),
    ("conv1.1.gamma", "conv1.1.weight"),
    ("conv1.1.beta", "conv1.1.bias"),
    ("conv1.4.running_mean", "conv1.4.running_mean"),
    ("conv1.4.running_var", "conv1.4.running_var"),
    ("bn1.gamma", "bn1.weight"),
    ("layer2.0.conv1.weight", "layer2.0.conv1.weight"),
    ("layer2.0.bn1.beta", "layer2.0.bn1.bias"),
    ("layer2.0.conv2.conv.weight", "layer2.0.conv2.conv.weight"),
    ("layer2.0.conv2.bn.gamma", "layer2.0.conv2.bn0.weight"),
    ("layer2.0.conv2.bn.running_var", "layer2.0.conv2.bn0.running_var"),
    ("layer2.0.conv2.fc1.weight", "layer2.0.conv2.fc1.weight"),
    ("layer2.0.conv2.fc1.bias", "layer2.0.conv2.fc1.bias"),  # a conv bias, not a BN one
    ("layer2.0.conv2.bn1.gamma", "layer2.0.conv2.bn1.weight"),
    ("layer2.0.conv2.fc2.bias", "layer2.0.conv2.fc2.bias"),
    ("layer4.2.bn3.running_mean", "layer4.2.bn3.running_mean"),
    ("layer2.0.downsample.1.weight", "layer2.0.downsample.1.weight"),
    ("layer2.0.downsample.2.gamma", "layer2.0.downsample.2.weight"),
    ("fc.weight", "fc.weight"),
    ("fc.bias", "fc.bias"),
])
def test_gluon_to_torch_name(gluon, torch):
    assert gluon_to_torch_name(gluon) == torch


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_name_map_is_one_to_one_and_complete(name):
    net = resnest_gluon.get_model(name)
    names = torch_names(net)
    params = net._collect_params_with_prefix()
    assert set(names) == set(params)
    assert len(set(names.values())) == len(names)
    assert not any(".bn." in t or t.endswith((".gamma", ".beta")) for t in names.values())


def test_dropblock_state_is_not_a_weight():
    net = resnest_gluon.get_model("resnest14d", dropblock_prob=0.1)
    assert any(k.endswith("drop_prob") for k in net._collect_params_with_prefix())
    assert not any(k.endswith("drop_prob") for k in torch_names(net))
    arrays = convert_state_dict(torch_state_dict(net, values=False), net)
    assert not any(k.endswith("drop_prob") for k in arrays)


# --------------------------------------------------------------------------- convert_state_dict


def test_round_trip_gives_identical_values(net14, sd14):
    arrays = convert_state_dict(sd14, net14)
    names = torch_names(net14)
    assert set(arrays) == set(names)
    for g, t in names.items():
        assert arrays[g].dtype == np.float32
        np.testing.assert_array_equal(arrays[g].asnumpy(), sd14[t], err_msg=g)


def test_round_trip_through_a_params_file(net14, sd14, tmp_path):
    path = str(tmp_path / "w.params")
    mx.nd.save(path, convert_state_dict(sd14, net14))
    net = resnest_gluon.load_weights(resnest_gluon.get_model("resnest14d"), path)
    for g, p in net._collect_params_with_prefix().items():
        np.testing.assert_array_equal(p.data().asnumpy(), sd14[gluon_to_torch_name(g)], err_msg=g)


def test_arrays_are_cast_to_the_parameter_dtype(net14):
    sd = {k: v.astype(np.float16) if v.dtype == np.float32 else v
          for k, v in torch_state_dict(net14, values=False).items()}
    arrays = convert_state_dict(sd, net14)
    assert {a.dtype for a in arrays.values()} == {np.float32}


@pytest.mark.parametrize("src, dst", [("resnest50d", "resnest101e"), ("resnest101e", "resnest50d"),
                                      ("resnest14d", "resnest26d"), ("resnest50d", "resnest50d_4s2x40d")])
def test_checkpoint_of_another_model_fails_clearly(src, dst):
    sd = torch_state_dict(resnest_gluon.get_model(src), values=False)
    with pytest.raises(ValueError) as info:
        convert_state_dict(sd, resnest_gluon.get_model(dst))
    msg = str(info.value)
    assert f"model {dst}" in msg
    assert "another model" in msg or "shape mismatch" in msg


def test_resnest50d_into_resnest101e_names_the_keys():
    sd = torch_state_dict(resnest_gluon.get_model("resnest50d"), values=False)
    with pytest.raises(ValueError, match="resnest101e") as info:
        convert_state_dict(sd, resnest_gluon.get_model("resnest101e"))
    msg = str(info.value)
    assert "shape mismatch: conv1.0.weight model (64, 3, 3, 3) vs checkpoint (32, 3, 3, 3)" in msg
    assert "missing from the checkpoint (first: layer3.10." in msg  # resnest50d has 6 blocks in layer3, 101e 23


def test_extra_blocks_are_reported_as_unused():
    sd = torch_state_dict(resnest_gluon.get_model("resnest26d"), values=False)
    with pytest.raises(ValueError) as info:
        convert_state_dict(sd, resnest_gluon.get_model("resnest14d"))
    msg = str(info.value)
    assert "checkpoint tensors that resnest14d does not have (first: layer1.1." in msg
    assert "missing" not in msg


def test_missing_key(net14, sd14):
    sd = dict(sd14)
    del sd["layer1.0.conv2.bn0.running_var"]
    with pytest.raises(ValueError, match=r"1 weights of resnest14d missing .*layer1\.0\.conv2\.bn0\.running_var"):
        convert_state_dict(sd, net14)


def test_extra_key(net14, sd14):
    sd = dict(sd14, **{"layer1.0.se.fc.weight": np.zeros((4, 4), np.float32)})
    with pytest.raises(ValueError, match=r"1 checkpoint tensors that resnest14d does not have .*layer1\.0\.se\.fc"):
        convert_state_dict(sd, net14)


def test_num_batches_tracked_is_ignored_but_nothing_else(net14, sd14):
    assert any(k.endswith("num_batches_tracked") for k in sd14)
    convert_state_dict(sd14, net14)  # no error
    sd = {k: v for k, v in sd14.items() if not k.endswith("num_batches_tracked")}
    convert_state_dict(sd, net14)  # not required either


def test_shape_mismatch(net14, sd14):
    sd = dict(sd14, **{"layer1.0.conv1.weight": np.zeros((64, 64, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight model \(64, 64, 1, 1\) vs checkpoint "
                                         r"\(64, 64, 3, 3\)"):
        convert_state_dict(sd, net14)


def test_classifier_size_mismatch_suggests_classes(net14, sd14):
    sd = dict(sd14, **{"fc.weight": np.zeros((10, 2048), np.float32), "fc.bias": np.zeros(10, np.float32)})
    with pytest.raises(ValueError, match="convert with classes=10"):
        convert_state_dict(sd, net14)
    net10 = resnest_gluon.get_model("resnest14d", classes=10)
    assert convert_state_dict(sd, net10)["fc.weight"].shape == (10, 2048)


def test_non_array_entry(net14, sd14):
    sd = dict(sd14, **{"fc.bias": "not a tensor"})
    with pytest.raises(ValueError, match="not arrays: fc.bias"):
        convert_state_dict(sd, net14)


def test_convert_state_dict_accepts_wrapped_checkpoints(net14, sd14):
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd14.items()}}
    arrays = convert_state_dict(wrapped, net14)
    np.testing.assert_array_equal(arrays["layer1.0.conv2.bn.gamma"].asnumpy(), sd14["layer1.0.conv2.bn0.weight"])


# --------------------------------------------------------------------------- unwrapping


SD = {"conv1.0.weight": np.zeros(1), "fc.bias": np.ones(1)}


@pytest.mark.parametrize("wrapped", [
    SD,
    {"state_dict": SD},
    {"model": SD},
    {"epoch": 90, "arch": "resnest50d", "state_dict": SD, "optimizer": {"state": {}}},
    {"model": {"state_dict": SD}},
    {"module.conv1.0.weight": SD["conv1.0.weight"], "module.fc.bias": SD["fc.bias"]},
    {"state_dict": {"module.conv1.0.weight": SD["conv1.0.weight"], "module.fc.bias": SD["fc.bias"]}},
], ids=["plain", "state_dict", "model", "training-checkpoint", "nested", "module-prefix", "state_dict+module"])
def test_unwrap_state_dict(wrapped):
    out = unwrap_state_dict(wrapped)
    assert list(out) == list(SD)
    assert all(out[k] is SD[k] for k in SD)


def test_unwrap_keeps_keys_when_only_some_have_the_module_prefix():
    sd = {"module.a": 1, "b": 2}
    assert unwrap_state_dict(sd) == sd


def test_unwrap_rejects_non_dicts():
    with pytest.raises(ValueError, match="must be a dict"):
        unwrap_state_dict([np.zeros(1)])


# --------------------------------------------------------------------------- load_torch_checkpoint, convert_file


def test_load_torch_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_torch_checkpoint(tmp_path / "nope.pth")


def test_load_torch_checkpoint_without_torch_says_how_to_get_it(tmp_path, monkeypatch):
    src = tmp_path / "w.pth"
    src.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match=r"pip install torch.*tools/setup_env\.sh torch"):
        load_torch_checkpoint(src)


@pytest.fixture
def fake_checkpoint(monkeypatch):
    """convert_file reads checkpoints with torch; stand in a numpy state_dict (resnest14d, 10 classes)."""
    sd = torch_state_dict(resnest_gluon.get_model("resnest14d", classes=10), seed=1)
    calls = []

    def load(path):
        calls.append(path)
        return sd

    monkeypatch.setattr(convert, "load_torch_checkpoint", load)
    return sd, calls


def test_convert_file_infers_classes_and_writes_a_loadable_file(fake_checkpoint, tmp_path):
    sd, _ = fake_checkpoint
    dst = tmp_path / "out" / "w.params"  # the folder is created
    assert convert_file("ckpt.pth", dst, "resnest14d") == str(dst)
    assert os.listdir(tmp_path / "out") == ["w.params"]  # no temporary file left behind
    net = resnest_gluon.load_weights(resnest_gluon.get_model("resnest14d", classes=10), str(dst))
    assert net.fc.weight.shape == (10, 2048)
    for g, p in net._collect_params_with_prefix().items():
        np.testing.assert_array_equal(p.data().asnumpy(), sd[gluon_to_torch_name(g)], err_msg=g)


def test_convert_file_explicit_classes_must_match(fake_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="classes=10"):
        convert_file("ckpt.pth", tmp_path / "w.params", "resnest14d", classes=1000)
    assert os.listdir(tmp_path) == []


def test_convert_file_wrong_model_leaves_dst_untouched(fake_checkpoint, tmp_path):
    dst = tmp_path / "w.params"
    dst.write_bytes(b"previous")
    with pytest.raises(ValueError, match="resnest50d"):
        convert_file("ckpt.pth", dst, "resnest50d")
    assert dst.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["w.params"]


def test_convert_file_failure_after_writing_removes_the_temporary_file(fake_checkpoint, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert, "load_weights", broken)
    dst = tmp_path / "w.params"
    dst.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk full"):
        convert_file("ckpt.pth", dst, "resnest14d")
    assert dst.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["w.params"]


def test_convert_file_unknown_model_fails_before_reading(fake_checkpoint, tmp_path):
    _, calls = fake_checkpoint
    with pytest.raises(ValueError, match="unknown model 'resnest51d'"):
        convert_file("ckpt.pth", tmp_path / "w.params", "resnest51d")
    assert calls == []


TORCH_LOAD_CHECK = r"""
import argparse, json, os, sys, torch
from resnest_gluon.convert import load_torch_checkpoint
d = sys.argv[1]
sd = {"conv1.0.weight": torch.arange(6.).reshape(2, 3), "bn1.num_batches_tracked": torch.tensor(5),
      "fc.bias": torch.ones(2, dtype=torch.bfloat16)}
files = {
    "plain": sd,
    "wrapped": {"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}},
    "model": {"model": sd},
    "namespace": {"args": argparse.Namespace(lr=0.1), "state_dict": sd},
}
out = {}
for name, obj in files.items():
    torch.save(obj, os.path.join(d, name + ".pth"))
with open(os.path.join(d, "garbage.pth"), "wb") as f:
    f.write(b"not a checkpoint")
for name in list(files) + ["garbage"]:
    try:
        loaded = load_torch_checkpoint(os.path.join(d, name + ".pth"))
        out[name] = {k: [type(v).__name__, str(v.dtype), v.tolist()] for k, v in loaded.items()}
    except Exception as err:
        out[name] = {"error": type(err).__name__ + ": " + str(err)}
print(json.dumps(out))
"""


def test_load_torch_checkpoint_with_torch(tmp_path):
    """Real torch.load in the torch environment: wrappers, bfloat16, and the errors of weights-only loading."""
    proc = subprocess.run([torch_python(), "-c", TORCH_LOAD_CHECK, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"conv1.0.weight": ["ndarray", "float32", [[0, 1, 2], [3, 4, 5]]],
                "bn1.num_batches_tracked": ["ndarray", "int64", 5],
                "fc.bias": ["ndarray", "float32", [1, 1]]}  # numpy has no bfloat16: widened
    for name in ("plain", "wrapped", "model"):
        assert out[name] == expected, name
    assert out["namespace"]["error"].startswith("ValueError: ")
    assert "argparse.Namespace" in out["namespace"]["error"] and "weights_only=False" in out["namespace"]["error"]
    assert out["garbage"]["error"].startswith(f"ValueError: {tmp_path / 'garbage.pth'} is not a readable PyTorch "
                                              f"checkpoint")


# --------------------------------------------------------------------------- import hygiene


IMPORT_CHECK = ("import sys, resnest_gluon, resnest_gluon.convert; "
                "bad = [m for m in ('torch', 'timm', 'gluoncv') if m in sys.modules]; "
                "print(','.join(bad)); sys.exit(1 if bad else 0)")


@pytest.mark.parametrize("env", ["main", "torch"])
def test_library_import_does_not_import_torch_or_gluoncv(env):
    # gluoncv is installed in the main environment, torch in the torch one: each checks what it can
    python = sys.executable if env == "main" else torch_python()
    proc = subprocess.run([python, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"importing resnest_gluon imported: {proc.stdout.strip()} {proc.stderr[-2000:]}"


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def cli():
    """The script as a module, for the cases that need no separate process."""
    spec = importlib.util.spec_from_file_location("convert_torch_weights", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_missing_source(tmp_path):
    """As the user runs it: a separate process, non-zero exit, a one-line message and no traceback."""
    src, dst = tmp_path / "nope.pth", tmp_path / "w.params"
    proc = subprocess.run([sys.executable, CLI, str(src), str(dst), "--model", "resnest50d"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: checkpoint not found: {src}"
    assert not dst.exists()


def test_cli_unknown_model(cli, tmp_path, capsys):
    assert cli.main([str(tmp_path / "x.pth"), str(tmp_path / "w.params"), "--model", "resnest51d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'resnest51d'") and "resnest50d" in err


def test_cli_without_torch(cli, tmp_path, capsys, monkeypatch):
    src = tmp_path / "w.pth"
    src.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)
    assert cli.main([str(src), str(tmp_path / "w.params"), "--model", "resnest50d"]) == 2
    assert "pip install torch" in capsys.readouterr().err


def test_cli_success_output(cli, fake_checkpoint, tmp_path, capsys):
    dst = tmp_path / "w.params"
    assert cli.main(["ckpt.pth", str(dst), "--model", "resnest14d"]) == 0
    out = capsys.readouterr().out
    # 10,611,688 trainable parameters with 1000 classes; 10 classes: 2048 * 990 + 990 fewer
    assert f"wrote {dst} for resnest14d: 129 tensors, {10_611_688 - 2048 * 990 - 990:,} parameters" in out


# --------------------------------------------------------------------------- parity with timm


@pytest.mark.slow
def test_parity_with_timm_all_eight_models():
    """Random timm weights -> .pth -> converter -> our model: same logits, imperative and hybridized (at 128 px:
    every layer is the same at any size, the big models convert in a third of the time)."""
    python = torch_python()
    proc = subprocess.run([python, PARITY, *TIMM_MODELS, "--cli", "resnest14d", "--size", "128"], capture_output=True,
                          text=True, timeout=1800, cwd=REPO)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["model"]] = result
    assert set(results) == set(TIMM_MODELS), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    errors = {n: r["error"] for n, r in results.items() if "error" in r}
    assert not errors, errors
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results["resnest14d"]["via"] == "cli"
    for name, r in results.items():
        assert r["logits_shape"] == [2, 1000], name
        assert r["max_abs_diff_imperative"] <= 1e-4, r
        assert r["max_abs_diff_hybrid"] <= 1e-4, r
        assert r["logits_std"] > 1e-2, r  # the comparison is not between two near-constant outputs
