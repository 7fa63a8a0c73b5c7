"""Unit tests of the training building blocks: LR schedule, no-wd selection, DropBlock ramp, checkpoints,
per-epoch seeding of the input pipeline, recipe defaults and the resume check."""
import json
import math
import os

import importlib.util
import sys

import mxnet as mx
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import recgen  # noqa: E402
from resnest_gluon.atomic import atomic_write  # noqa: E402
from resnest_gluon.data import RecordTrainIter  # noqa: E402
from resnest_gluon.training import (CheckpointManager, MetricsLog, apply_no_wd, build_lr_scheduler,  # noqa: E402
                                    dropblock_prob_at, latest_checkpoint, plot_curves)
from resnest_gluon.training.classification import ClassificationTask, fresh_classifier_reason  # noqa: E402
from resnest_gluon.training.trainer import ResumeMismatch, check_resume  # noqa: E402
from resnest_gluon.trained import ModelInfo, write_info  # noqa: E402
from resnest_gluon.zoo import get_config, get_model  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "train_script", os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "train_imagenet.py"))
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)


def test_warmup_then_cosine():
    # 10 epochs x 100 steps, 2 warmup epochs from 0 to 0.4, then half a cosine down to 0
    s = build_lr_scheduler("cosine", 0.4, num_epochs=10, steps_per_epoch=100, warmup_epochs=2, warmup_lr=0.0)
    assert s(0) == pytest.approx(0.0)
    assert s(100) == pytest.approx(0.2)  # half-way through warmup
    assert s(200) == pytest.approx(0.4)  # warmup done: base lr
    assert s(600) == pytest.approx(0.4 * (1 + math.cos(math.pi * 400 / 800)) / 2)  # cosine mid-point = 0.2
    assert s(1000) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_decays_at_epochs():
    s = build_lr_scheduler("step", 0.1, num_epochs=90, steps_per_epoch=10, lr_decay=0.1, lr_decay_epoch=[30, 60])
    assert [round(s(u), 6) for u in (0, 299, 301, 601)] == [0.1, 0.1, 0.01, 0.001]


def test_schedule_rejects_bad_mode():
    with pytest.raises(ValueError, match="lr_mode"):
        build_lr_scheduler("linear", 0.1, 10, 10)


def test_no_wd_selects_bn_and_bias_only():
    net = get_model("resnest14", classes=10)
    changed = apply_no_wd(net)
    params = net.collect_params()
    assert changed and all(n.endswith(("gamma", "beta", "bias")) for n in changed)
    assert any(n.endswith("dense0_bias") or n.endswith("bias") for n in changed)
    for name, p in params.items():
        if name.endswith(("weight",)):
            assert p.wd_mult == 1.0, name
        if name.endswith(("running_mean", "running_var")):
            assert name not in changed


def test_dropblock_ramp_is_gluoncv_linear_up_to_final():
    # GluonCV's DropBlockScheduler(net, 0, 0.1, num_epochs): 0.1 * (epoch + 1) / num_epochs
    assert [dropblock_prob_at(e, 5, 0.1) for e in range(5)] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert dropblock_prob_at(3, 5, 0.0) == 0.0


class _FakeNet:
    def save_parameters(self, path):
        with open(path, "wb") as f:
            f.write(b"params")


class _FakeTrainer:
    def save_states(self, path):
        with open(path, "wb") as f:
            f.write(b"states")


def test_checkpoint_latest_complete_is_chosen(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=0)
    mgr.save(1, _FakeNet(), _FakeTrainer(), seed=3)
    mgr.save(2, _FakeNet(), _FakeTrainer(), seed=3)
    assert latest_checkpoint(str(tmp_path))["epoch"] == 2
    # a checkpoint whose params were truncated (e.g. disk full) is not complete: fall back to epoch 1
    with open(tmp_path / "ckpt-0002.params", "wb") as f:
        f.write(b"par")
    ckpt = latest_checkpoint(str(tmp_path))
    assert ckpt["epoch"] == 1 and ckpt["seed"] == 3 and ckpt["params"].endswith("ckpt-0001.params")
    # epoch 3 killed before its JSON was written: params present, but it does not count
    (tmp_path / "ckpt-0003.params").write_bytes(b"params")
    assert latest_checkpoint(str(tmp_path))["epoch"] == 1


def test_checkpoint_keeps_newest(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=2)
    for e in range(1, 5):
        mgr.save(e, _FakeNet(), _FakeTrainer())
    assert sorted(os.listdir(tmp_path)) == [f"ckpt-000{e}{x}" for e in (3, 4) for x in (".json", ".params",
                                                                                           ".states")]


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    path = str(tmp_path / "x.json")
    atomic_write(path, lambda tmp: open(tmp, "w").write("old"))

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["x.json"]


def test_metrics_log_and_png(tmp_path):
    log = MetricsLog(str(tmp_path / "m.jsonl"))
    for step in range(1, 4):
        log.write("step", epoch=1, step=step, global_step=step, lr=0.1, loss=2.0 / step, img_per_sec=10.0)
    log.write("epoch", epoch=1, loss=1.0, train_acc=0.3, val_top1=0.2, val_top5=0.6, lr=0.1, img_per_sec=9.0)
    log.write("step", epoch=2, step=1, global_step=4, lr=0.1, loss=float("nan"), img_per_sec=1.0)
    lines = [json.loads(line) for line in open(log.path)]
    assert lines[-1]["loss"] == "nan" and len(lines) == 5
    png = plot_curves(log.path, str(tmp_path / "c.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_trainer_states_carry_the_schedule_position(tmp_path):
    """Resume relies on this: the optimizer (update count + scheduler) travels in Trainer.save_states."""
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    sched = build_lr_scheduler("cosine", 0.1, 2, 5, warmup_epochs=1)
    tr = mx.gluon.Trainer(net.collect_params(), "nag", {"lr_scheduler": sched, "momentum": 0.9}, kvstore=None)
    for _ in range(7):
        with mx.autograd.record():
            loss = net(mx.nd.ones((4, 3))).sum()
        loss.backward()
        tr.step(4)
    tr.save_states(str(tmp_path / "s"))
    tr2 = mx.gluon.Trainer(net.collect_params(), "nag",
                           {"lr_scheduler": build_lr_scheduler("cosine", 0.1, 2, 5, warmup_epochs=1)}, kvstore=None)
    tr2.load_states(str(tmp_path / "s"))
    assert tr2._optimizer.num_update == 7 and tr2.learning_rate == pytest.approx(tr.learning_rate)


def _labels_of_epoch(it):
    return np.concatenate([y.asnumpy() for _, y in it])


def test_record_iter_epoch_depends_on_seed_epoch_rank_not_on_history(tmp_path):
    """Resume relies on this: epoch 2 of a fresh iterator (set_epoch) equals epoch 2 reached by iterating."""
    rec, idx, _ = recgen.make_rec(str(tmp_path / "d"), 40, seed=1)
    make = lambda: RecordTrainIter(rec, idx, batch_size=4, data_shape=32, num_workers=1, rank=1, world=2,  # noqa
                                   seed=3)
    walked = make()
    epochs = [_labels_of_epoch(walked) for _ in range(3)]
    jumped = make()
    jumped.set_epoch(2)
    x_jumped = np.concatenate([x.asnumpy() for x, _ in jumped])
    walked.set_epoch(2)
    x_walked = np.concatenate([x.asnumpy() for x, _ in walked])
    assert np.array_equal(x_jumped, x_walked)  # same order and same augmentation
    again = make()
    again.set_epoch(2)
    assert np.array_equal(_labels_of_epoch(again), epochs[2])
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_recipe_defaults_and_readable_wd_switches():
    base = ["--rec-train", __file__]
    args = train_script.parse_args(base)
    assert (args.dropblock_prob, args.final_drop, args.input_size, args.crop_ratio, args.no_wd) == \
        (0.1, None, None, None, True)
    assert train_script.parse_args(base + ["--wd-all"]).no_wd is False
    assert train_script.parse_args(base + ["--no-wd"]).no_wd is True
    assert train_script.parse_args(base + ["--no-no-wd"]).no_wd is False  # the old spelling still works


def test_min_random_area_flag_reaches_both_input_pipelines(tmp_path):
    """--min-random-area (GluonCV's name): the recipe's 0.08 by default, checked, and passed to the crop."""
    rec, idx, _ = recgen.make_rec(str(tmp_path / "d"), 8, seed=1)
    base = ["--rec-train", rec, "--input-size", "32", "--batch-size", "2", "--num-workers", "1"]
    assert train_script.parse_args(base).min_random_area == 0.08
    for bad in ("0", "1.5", "-0.2"):
        with pytest.raises(SystemExit):
            train_script.parse_args(base + ["--min-random-area", bad])
    from resnest_gluon.distributed import Distributed

    dist = Distributed(use_horovod=False)

    def data(flags):
        config, run = train_script.configs(train_script.parse_args(base + flags))
        return ClassificationTask(config).resolve(run.rec_train).build_data(run, dist)

    assert data(["--min-random-area", "0.4", "--no-auto-aug"]).iter_args["min_random_area"] == 0.4  # ImageRecordIter
    assert data(["--min-random-area", "0.4", "--auto-aug"]).transform.scale == (0.4, 1.0)  # DataLoader path


@pytest.mark.parametrize("model, train_size, final_drop", [("resnest50", 224, 0.0), ("resnest101", 224, 0.0),
                                                            ("resnest200", 256, 0.2), ("resnest269", 320, 0.2)])
def test_model_defaults_fill_size_and_final_dropout(model, train_size, final_drop):
    config, run = train_script.configs(train_script.parse_args(["--rec-train", __file__, "--model", model]))
    task = ClassificationTask(config).resolve(run.rec_train)
    assert (task.input_size, task.final_drop) == (train_size, final_drop)
    assert task.eval_data == get_config(model).data  # validation as scripts/verify.py: the model's own protocol


def test_eval_config_follows_given_size_and_ratio_like_verify():
    config, run = train_script.configs(train_script.parse_args(["--rec-train", __file__, "--model", "resnest269",
                                                                 "--input-size", "64", "--crop-ratio", "0.9"]))
    cfg = ClassificationTask(config).resolve(run.rec_train).eval_data
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation) == (64, 0.9, "bicubic")


def test_resume_check_names_each_difference():
    ckpt = {"meta_path": "d/ckpt-0002.json", "params": "d/ckpt-0002.params",
            "run": {"model": "resnest14", "num_classes": 10, "world": 2, "batch_size": 8, "steps_per_epoch": 9,
                    "optimizer": "nag", "lr": 0.1}}
    same = dict(ckpt["run"], lr=0.5)  # a new learning rate is allowed: it applies from the restored update on
    fixed = ClassificationTask.fixed_on_resume
    check_resume(ckpt, same, fixed)
    with pytest.raises(ResumeMismatch) as err:
        check_resume(ckpt, dict(same, world=4, batch_size=4, steps_per_epoch=4), fixed)
    msg = str(err.value)
    assert "world size (processes) 2 in the checkpoint, 4 now" in msg and "--batch-size 8 in the checkpoint, 4 now" \
        in msg and "steps per epoch 9 in the checkpoint, 4 now" in msg and "its weights (d/ckpt-0002.params)" in msg


def test_learning_rate_rule_and_old_runs_keep_their_meaning(tmp_path):
    from resnest_gluon.training.classification import ClassificationConfig
    from resnest_gluon.training.trainer import RunConfig

    def rate(run, **config):
        return ClassificationTask(ClassificationConfig(lr=0.05, **config))._learning_rate(run, world=2)

    run = RunConfig("t.rec", batch_size=32)
    assert rate(run).effective == 0.025  # 0.05 x 32/128 x 2
    assert rate(run, effective_lr=0.3).effective == 0.3
    # a checkpoint written before the rule: its --lr meant per worker whatever the batch (0.05 x 2 = 0.1)
    for ext in ("params", "states"):
        (tmp_path / f"ckpt-0001.{ext}").write_bytes(b"x")
    files = {"params": ["ckpt-0001.params", 1], "states": ["ckpt-0001.states", 1]}
    (tmp_path / "ckpt-0001.json").write_text(json.dumps({"epoch": 1, "files": files, "run": {"lr": 0.05}}))
    old = rate(RunConfig("t.rec", batch_size=32, resume=str(tmp_path)))
    assert old.effective == 0.1 and "from before the lr followed the batch" in old.describe()


def test_fine_tuning_gets_a_fresh_classifier_when_the_classes_are_others(tmp_path):
    """From a 10-class checkpoint of digits: another count, or 10 other names, start a new classifier; the same
    names keep it, and so does a file or a dataset whose class names are unknown."""
    digits = [str(i) for i in range(10)]
    shapes = ["arrow", "circle", "crescent", "cross", "frame", "heart", "ring", "square", "star", "triangle"]
    params = str(tmp_path / "ckpt-0008.params")
    mx.nd.save(params, {"fc.weight": mx.nd.zeros((10, 4)), "fc.bias": mx.nd.zeros(10)})

    def reason(num_classes, class_names):
        return fresh_classifier_reason(params, num_classes, class_names)

    assert reason(10, shapes) is None  # a bare .params: nothing says what its rows mean
    write_info(params, ModelInfo("resnest14", 10, get_config("resnest14").data, digits))
    assert reason(5, None) == "its 10 classes are not this dataset's 5"
    assert reason(10, shapes) == "its classes (0, 1, 2, ...) are not this dataset's (arrow, circle, crescent, ...)"
    assert reason(10, digits) is None and reason(10, None) is None
    assert fresh_classifier_reason(None, 10, None) is None
