"""A trained model travels with what is needed to use it (resnest_gluon.trained): model, classes, class names and
the evaluation transform, through checkpoints, save_trained/load_trained, export, verify.py and predict.py.

The end-to-end test trains resnest14 at 40 px (not the registry's 224) on four colour classes with names, then
runs ``predict.py IMAGES --params CKPT`` and ``verify.py --rec-val VAL --params CKPT`` with no other flag.
"""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, randomize_bn
from resnest_gluon import trained
from resnest_gluon.trained import ModelInfo, export, load_trained, read_info, resolve, save_trained
from resnest_gluon.zoo import DataConfig, get_model

SCRIPTS = os.path.join(REPO, "scripts")
COLOURS = {"blue": (40, 60, 210), "green": (40, 190, 60), "red": (210, 40, 40), "yellow": (220, 210, 40)}
SIZE = 40  # training and evaluation size: not the registry's 224, so any flag-less step that ignored it would fail


def script(name, *args, check=True):
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def small_net(classes=3, size=SIZE, names=("a", "b", "c")):
    net = get_model("resnest14", classes=classes)
    mx.random.seed(3)
    net.initialize(mx.init.Xavier(magnitude=3))
    randomize_bn(net, seed=3)
    net.class_names = names
    net.data_config = DataConfig(size, 0.8, "bicubic")
    return net


# ------------------------------------------------------------------------------------------ the library

def test_save_then_load_gives_the_same_network_classes_and_transform(tmp_path):
    net = small_net()
    info = save_trained(net, tmp_path / "m.params")
    assert json.load(open(tmp_path / "m.json"))["model"]["class_names"] == ["a", "b", "c"]
    back = load_trained(tmp_path / "m.params")
    assert (back.model_name, back.class_names, back.data_config) == ("resnest14", ("a", "b", "c"), net.data_config)
    assert back.model_info == info
    x = mx.nd.random.uniform(shape=(2, 3, SIZE, SIZE))
    np.testing.assert_allclose(back(x).asnumpy(), net(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_export_carries_the_information_and_both_exported_files_load(tmp_path):
    net = small_net()
    sym, params = export(net, str(tmp_path / "deploy"))
    assert sorted(os.listdir(tmp_path)) == ["deploy-0000.json", "deploy-0000.params", "deploy-symbol.json"]
    x = mx.nd.random.uniform(shape=(2, 3, SIZE, SIZE))
    want = net(x).asnumpy()
    for path, kind in ((sym, mx.gluon.SymbolBlock), (params, type(net))):
        back = load_trained(path)
        assert isinstance(back, kind) and back.class_names == ("a", "b", "c") and back.data_config == net.data_config
        np.testing.assert_allclose(back(x).asnumpy(), want, rtol=1e-5, atol=1e-6)


def test_contradicting_the_file_is_an_error_naming_both_values(tmp_path):
    save_trained(small_net(), tmp_path / "m.params")
    with pytest.raises(ValueError, match=r"'resnest50' was asked for.*holds a resnest14"):
        load_trained(tmp_path / "m.params", model="resnest50")
    with pytest.raises(ValueError, match=r"5 classes were asked for.*has 3"):
        load_trained(tmp_path / "m.params", num_classes=5)
    with pytest.raises(ValueError, match=r"2 class names but the model .* has 3 classes"):
        load_trained(tmp_path / "m.params", class_names=["x", "y"])


def test_data_config_changes_apply_and_bad_values_are_refused(tmp_path):
    save_trained(small_net(), tmp_path / "m.params")
    assert load_trained(tmp_path / "m.params", input_size=64).data_config == DataConfig(64, 0.8, "bicubic")
    with pytest.raises(ValueError, match="crop_pct"):
        resolve(str(tmp_path / "m.params"), data_changes={"crop_pct": 1.5})


def test_a_bare_params_file_works_as_before(tmp_path):
    net = small_net()
    net.save_parameters(str(tmp_path / "bare.params"))
    info = resolve(str(tmp_path / "bare.params"), model="resnest14")
    assert (info.model, info.num_classes, info.class_names) == ("resnest14", 3, None)
    assert info.data_config == get_model("resnest14").data_config  # the registry's: nothing says otherwise
    assert resolve(str(tmp_path / "bare.params")).model == "resnest50"  # today's default model name


def test_an_older_checkpoint_gives_its_model_and_classes_and_unrelated_json_is_ignored(tmp_path):
    (tmp_path / "ckpt-0003.json").write_text(json.dumps({"epoch": 3, "run": {"model": "resnest26", "num_classes": 7}}))
    info = read_info(str(tmp_path / "ckpt-0003.params"))
    assert (info.model, info.num_classes, info.class_names) == ("resnest26", 7, None)
    (tmp_path / "other.json").write_text(json.dumps({"top1": 0.5}))
    assert read_info(str(tmp_path / "other.params")) is None
    (tmp_path / "bad.json").write_text(json.dumps({"model": {"schema": trained.SCHEMA, "model": "resnest14"}}))
    with pytest.raises(ValueError, match="bad.json: the model information .* is malformed"):
        read_info(str(tmp_path / "bad.params"))


def test_model_info_checks_itself():
    with pytest.raises(ValueError, match="unknown model"):
        ModelInfo("resnest51", 10, DataConfig())
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        ModelInfo("resnest14", 4, DataConfig(), ("a", "b", "c"))
    info = ModelInfo("resnest14", 2, DataConfig(40), ("a", "b"), {"final_drop": 0.2})
    assert ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


# ------------------------------------------------------------------------------------------ end to end

def colour_tree(root, per_class, seed):
    """Class-per-folder PNGs: a class's colour plus noise, 48 px (the network sees 40-px crops)."""
    rng = np.random.RandomState(seed)
    for name, colour in COLOURS.items():
        os.makedirs(root / name)
        for i in range(per_class):
            img = np.clip(np.array(colour) + rng.uniform(-30, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{name}_{i}.png")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Images -> recordio_tools -> train_imagenet.py at 40 px, single process; the classes come from the .rec."""
    d = tmp_path_factory.mktemp("trained")
    for split, n, seed in (("train", 24, 0), ("val", 6, 1)):
        colour_tree(d / "images" / split, n, seed)
        subprocess.run([sys.executable, "-m", "recordio_tools", "pack", str(d / "images" / split), str(d / split),
                        "--no-progress", "-q"], check=True, cwd=REPO, capture_output=True)
    save = d / "run"
    script("train_imagenet.py", "--rec-train", d / "train.rec", "--rec-val", d / "val.rec", "--model", "resnest14",
           "--input-size", SIZE, "--batch-size", 8, "--num-epochs", 4, "--lr", 0.08, "--warmup-epochs", 0,
           "--no-mixup", "--no-auto-aug", "--dropblock-prob", 0, "--min-random-area", 0.5, "--no-cuda", "-j", 1,
           "--save-dir", save, "--save-frequency", 4, "--eval-frequency", 4)
    last = [json.loads(line) for line in open(save / "metrics.jsonl") if '"epoch"' in line][-1]
    return d, save / "ckpt-0004.params", last


def images_of(d):
    return sorted(str(p) for p in (d / "images" / "val").rglob("*.png"))


def test_checkpoint_records_model_classes_and_validation_transform(run):
    d, ckpt, _ = run
    info = read_info(str(ckpt))
    assert info.model == "resnest14" and info.num_classes == 4  # --num-classes came from the classes file
    assert info.class_names == tuple(sorted(COLOURS))
    assert info.data_config.input_size == SIZE


def test_predict_and_verify_need_only_the_checkpoint(run, tmp_path):
    d, ckpt, last = run
    assert last["val_top1"] >= 0.9, last  # the colours are learnable: right names below mean the right model
    proc = script("predict.py", *images_of(d), "--params", ckpt, "--topk", 2, "--json", tmp_path / "p.json")
    predictions = json.load(open(tmp_path / "p.json"))
    assert predictions["data_config"]["input_size"] == SIZE
    right = [p["top"][0]["class"] == os.path.basename(os.path.dirname(p["image"])) for p in predictions["predictions"]]
    assert len(right) == 24 and np.mean(right) >= 0.9, proc.stdout
    script("verify.py", "--rec-val", d / "val.rec", "--params", ckpt, "--json", tmp_path / "v.json")
    verified = json.load(open(tmp_path / "v.json"))
    assert verified["model"] == "resnest14" and verified["num_classes"] == 4
    assert verified["images"] == last["val_images"] == 24
    assert verified["top1_correct"] == round(last["val_top1"] * last["val_images"])  # = training's validation
    assert np.mean(right) == verified["top1"]  # the same images, the same transform: the same answers


def test_exported_files_predict_and_verify_the_same(run, tmp_path):
    d, ckpt, last = run
    prefix = str(tmp_path / "deploy")
    export(load_trained(ckpt), prefix)
    script("predict.py", *images_of(d), "--params", prefix + "-symbol.json", "--json", tmp_path / "sym.json")
    script("predict.py", *images_of(d), "--params", ckpt, "--json", tmp_path / "ckpt.json")
    tops = [[p["top"][0]["class"] for p in json.load(open(tmp_path / f))["predictions"]]
            for f in ("sym.json", "ckpt.json")]
    assert tops[0] == tops[1]
    script("verify.py", "--rec-val", d / "val.rec", "--params", prefix + "-0000.params", "--json", tmp_path / "v.json")
    assert json.load(open(tmp_path / "v.json"))["top1_correct"] == round(last["val_top1"] * last["val_images"])


def test_flags_that_contradict_the_checkpoint_are_errors_naming_both(run):
    d, ckpt, _ = run
    proc = script("verify.py", "--rec-val", d / "val.rec", "--params", ckpt, "--model", "resnest26", check=False)
    assert proc.returncode == 2 and "'resnest26' was asked for" in proc.stderr and "holds a resnest14" in proc.stderr
    proc = script("predict.py", images_of(d)[0], "--params", ckpt, "--num-classes", 1000, check=False)
    assert proc.returncode == 2 and "1000 classes were asked for" in proc.stderr and "has 4" in proc.stderr


def test_predict_skips_unreadable_files_by_name_and_says_so_in_its_exit_status(run, tmp_path):
    d, ckpt, _ = run
    (tmp_path / "notes.png").write_text("not an image")
    good = images_of(d)[:2]
    proc = script("predict.py", good[0], tmp_path / "missing.jpg", tmp_path / "notes.png", good[1], "--params", ckpt,
                  "--json", tmp_path / "p.json", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "skipped 2 of 4 files" in proc.stderr
    assert "missing.jpg" in proc.stderr and "notes.png: not an image" in proc.stderr
    report = json.load(open(tmp_path / "p.json"))
    assert [p["image"] for p in report["predictions"]] == good
    assert [os.path.basename(s["image"]) for s in report["skipped"]] == ["missing.jpg", "notes.png"]
