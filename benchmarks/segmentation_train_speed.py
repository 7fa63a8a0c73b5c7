#!/usr/bin/env python
"""DeepLabV3 training speed: our training step against GluonCV's scripts/segmentation/train.py loop on the same
model, batch and crop, timed side by side in one run.

    python -m benchmarks.segmentation_train_speed --threads 2     # resnest50, batch 2, crop 160 (GluonCV's: 480)

What one timed step is, per side (the data are made once before timing, so data loading is not timed):
- ours: the trainer's step, its real code: ``SegmentationTask.train_step`` (forward and backward under
  ``autograd.record``, :class:`~resnest_gluon.training.segmentation.SegmentationLoss` with the auxiliary head at 0.5),
  ``trainer.step(images)`` of the ``gluon.Trainer`` the trainer builds (SGD, the task's poly schedule, momentum 0.9,
  wd 1e-4), then the loss and the step's counts read as scalars, as the trainer reads them every step. The network is
  ``build_segmenter``'s, hybridized as the trainer does (``Task.hybridize``: static memory and shapes).
- GluonCV: the body of train.py's ``training`` loop for ``--model deeplab --backbone BACKBONE --aux --no-cuda``:
  ``DataParallelModel`` / ``DataParallelCriterion(MixSoftmaxCrossEntropyLoss(aux, aux_weight=0.5))`` on one CPU
  context, ``autograd.record(True)``, forward, loss, ``mx.nd.waitall()``, ``autograd.backward``,
  ``optimizer.step(batch_size)`` of its ``gluon.Trainer`` (SGD, LRSequential linear warm-up 0 + poly 0.9, momentum
  0.9, wd 1e-4, a local kvstore as ``--no-cuda`` sets), ``loss.asnumpy()``, ``mx.nd.waitall()`` (without its tqdm
  bar). Timed twice: as the script runs it (``--mode`` is parsed but unused there: the model is never hybridized;
  side ``gluoncv``) and with the model hybridized as ours is (side ``gluoncv-hybrid``; the loss stays imperative).

The models share their weights: GluonCV's DeepLabV3 (what ``get_segmentation_model(model='deeplab',
dataset='ade20k', ...)`` builds, with ``--classes`` classes; DropBlock off as train.py sets it) gets random weights,
is saved, and ours loads the file (``load_gluoncv_params``); one forward must give the same logits (main and
auxiliary) before anything is timed. Each side then trains its own copy from those weights on the same synthetic
batch: normalised random images and random labels with some ignored (-1) pixels. Rounds alternate the sides; all
run in this process, on the same MXNet and threads. The goal: ours >= 0.9 x GluonCV's images/s (as its script runs
it). Writes OUT/segmentation_train_speed.json and .png and prints a table; it measures, it does not assert the goal.
"""
import argparse
import os
import sys
import tempfile

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.segmentation_train_speed
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

# these helpers import no framework: threads must be set before mxnet loads
from . import _peers  # noqa: E402
from ._bench import alternate, in_process, machine_info, positive, set_threads  # noqa: E402
from ._report import format_table, header, noisy_notes, write_outputs  # noqa: E402
from ._timing import summarize, warm_up  # noqa: E402

SCHEMA = "resnest-gluon/segmentation-train-speed/1"
STEM = "segmentation_train_speed"
GOAL = 0.9  # ours / GluonCV's train.py images per second, at least (the issue: "within 10 %")
GLUONCV_LR = 0.01  # GluonCV's --lr for its ADE20K ResNeSt recipes (the speed does not depend on it)
MODES = {"script": ("gluoncv", False), "hybrid": ("gluoncv-hybrid", True)}  # --gluoncv -> (side, hybridized)
CHECK_TOLERANCE = 1e-3


def crop_size(text):
    """argparse type: GluonCV's DeepLabV3 wants a multiple of 8 (train.py asserts it), at least 32."""
    value = int(text)
    if value < 32 or value % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 and at least 32 (GluonCV's DeepLabV3), got {text}")
    return value


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnest50", choices=("resnest50", "resnest101"),
                   help="GluonCV has DeepLabV3 on both (default resnest50)")
    p.add_argument("--batch-size", type=positive, default=2, help="images per step (default 2; GluonCV's is 2 per GPU)")
    p.add_argument("--crop", type=crop_size, default=160,
                   help="square crop (default 160, small enough for 2 cores; GluonCV trains at 480)")
    p.add_argument("--classes", type=positive, default=150, help="classes (default 150, ADE20K's)")
    p.add_argument("--gluoncv", nargs="+", choices=tuple(MODES), default=list(MODES),
                   help="GluonCV's sides: script = as train.py runs it (not hybridized), hybrid = model hybridized "
                        "as ours (default both)")
    p.add_argument("--warmup", type=positive, default=1, help="untimed steps per side (default 1)")
    p.add_argument("--iters", type=positive, default=3, help="timed steps per round and side (default 3)")
    p.add_argument("--rounds", type=positive, default=3, help="alternating rounds (default 3)")
    p.add_argument("--threads", type=positive, help="CPU threads (exported before mxnet loads; default: all)")
    p.add_argument("--out", default=os.path.join(_peers.REPO, "out", STEM))
    return p


def synthetic_batch(batch, crop, classes, seed=0):
    """``(images (B, 3, crop, crop) float32, labels (B, crop, crop) int32)``: normalised noise, random classes with
    a band of ignored (-1) pixels at the bottom (a padded crop) and ~2 % more scattered."""
    import numpy as np

    rs = np.random.RandomState(seed)
    images = rs.standard_normal((batch, 3, crop, crop)).astype(np.float32)
    labels = rs.randint(0, classes, size=(batch, crop, crop)).astype(np.int32)
    labels[:, -crop // 16:, :] = -1
    labels[rs.random_sample(labels.shape) < 0.02] = -1
    return images, labels


def gluoncv_model(backbone, classes, crop):
    """GluonCV's DeepLabV3 as train.py builds it for ``--model deeplab --backbone BACKBONE --aux`` (BatchNorm, no
    pretrained base), DropBlock off as the script sets it."""
    import warnings

    import mxnet as mx
    from gluoncv.model_zoo.deeplabv3 import DeepLabV3
    from gluoncv.nn.dropblock import set_drop_prob

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DeepLabV3(classes, backbone=backbone, aux=True, pretrained_base=False, base_size=520, crop_size=crop,
                          norm_layer=mx.gluon.nn.BatchNorm, norm_kwargs={})
    model.apply(lambda block: set_drop_prob(0.0, block))
    model.cast("float32")
    return model


class OurSide:
    """Our trainer's step on ``build_segmenter``'s network loaded with GluonCV's file."""

    def __init__(self, backbone, classes, crop, batch, steps, params, ctx):
        from resnest_gluon.dense import load_gluoncv_params
        from resnest_gluon.distributed import Distributed
        from resnest_gluon.training.segmentation import SegmentationConfig, SegmentationLoss, SegmentationTask
        from resnest_gluon.training.trainer import RunConfig

        task = SegmentationTask(SegmentationConfig(model=f"deeplab_{backbone}", crop_size=crop))
        task.class_names = [f"class{i}" for i in range(classes)]  # what prepare() reads from the data
        run, dist = RunConfig(rec_train="(synthetic)", batch_size=batch, num_epochs=1), Distributed(use_horovod=False)
        self.net = task.build_model(run, dist, ctx)
        load_gluoncv_params(self.net, params, ctx=ctx)
        task.loss = SegmentationLoss(task.config.aux_weight)  # what build_data() sets
        self.setup = task.optimizer(self.net, run, dist, steps)
        self.task, self.ctx, self.dist = task, ctx, dist
        self.trainer = None

    def start(self):
        """After the parity check: hybridized and the trainer made, as the trainer does before its first step."""
        self.task.hybridize(self.net)
        self.trainer = self.dist.trainer(self.setup.params, self.setup.optimizer, self.setup.settings)

    def step(self, batch):
        result = self.task.train_step(self.net, batch, self.ctx, 0)
        self.trainer.step(result.images)
        values = [result.loss.mean(), *result.means.values(), *result.counts.values()]
        return [float(v.asscalar()) for v in values][0]


class GluonCVSide:
    """The body of GluonCV's train.py training loop on ``model`` (one CPU context, ``--no-cuda``)."""

    def __init__(self, model, batch, steps, ctx, hybridized):
        import mxnet as mx
        from gluoncv.loss import MixSoftmaxCrossEntropyLoss
        from gluoncv.utils import LRScheduler, LRSequential
        from gluoncv.utils.parallel import DataParallelCriterion, DataParallelModel

        if hybridized:
            model.hybridize(static_alloc=True, static_shape=True)
        self.net = DataParallelModel(model, [ctx], False)
        self.criterion = DataParallelCriterion(MixSoftmaxCrossEntropyLoss(True, aux_weight=0.5), [ctx], False)
        scheduler = LRSequential([LRScheduler("linear", base_lr=0, target_lr=GLUONCV_LR, nepochs=0,
                                              iters_per_epoch=steps),
                                  LRScheduler(mode="poly", base_lr=GLUONCV_LR, nepochs=1, iters_per_epoch=steps,
                                              power=0.9)])
        settings = {"lr_scheduler": scheduler, "wd": 1e-4, "momentum": 0.9, "learning_rate": GLUONCV_LR}
        self.optimizer = mx.gluon.Trainer(model.collect_params(), "sgd", settings, kvstore=mx.kv.create("local"))
        self.batch_size = batch

    def step(self, batch):
        import mxnet as mx
        import numpy as np
        from mxnet import autograd

        data, target = batch
        with autograd.record(True):
            outputs = self.net(data.astype("float32", copy=False))
            losses = self.criterion(outputs, target)
            mx.nd.waitall()
            autograd.backward(losses)
        self.optimizer.step(self.batch_size)
        train_loss = 0.0
        for loss in losses:
            train_loss += np.mean(loss.asnumpy()) / len(losses)
        mx.nd.waitall()
        return float(train_loss)


def same_logits(ours, theirs, x):
    """Max |difference| of the main and auxiliary logits of one forward (inference mode, before any step); exits
    when they disagree (the timed work would not be the same)."""
    import numpy as np

    diffs = [float(np.abs(a.asnumpy() - b.asnumpy()).max()) for a, b in zip(ours(x), theirs(x))]
    if len(diffs) != 2 or max(diffs) > CHECK_TOLERANCE:
        raise SystemExit(f"error: our DeepLabV3 and GluonCV's disagree on the benchmark batch (max |diff| main, aux: "
                         f"{diffs})")
    return {"max_abs_diff_main": diffs[0], "max_abs_diff_aux": diffs[1]}


def main(argv=None):
    args = build_parser().parse_args(argv)
    threads = set_threads(args.threads)
    import mxnet as mx

    from resnest_gluon.dense import randomize  # resnest_gluon before gluoncv (see resnest_gluon.dense.detection)

    machine = machine_info(threads)
    ctx, b, crop = mx.cpu(), args.batch_size, args.crop
    images, labels = synthetic_batch(b, crop, args.classes)
    steps = args.warmup + args.rounds * args.iters  # per side: the schedules run over exactly the steps taken
    model = f"deeplab_{args.backbone}"
    with tempfile.TemporaryDirectory() as folder:
        reference = gluoncv_model(args.backbone, args.classes, crop)
        randomize(reference, 7)
        params = os.path.join(folder, f"{model}_gluoncv.params")
        reference.save_parameters(params)
        ours = OurSide(args.backbone, args.classes, crop, b, steps, params, ctx)
        check = same_logits(ours.net, reference, mx.nd.array(images, ctx=ctx))
        sides = {"ours": ours}
        modes = list(dict.fromkeys(args.gluoncv))
        for mode in modes:
            side, hybridized = MODES[mode]
            theirs = reference if mode == modes[0] else gluoncv_model(args.backbone, args.classes, crop)
            if theirs is not reference:
                theirs.load_parameters(params, ctx=ctx)
            sides[side] = GluonCVSide(theirs, b, steps, ctx, hybridized)
    ours.start()
    # the same numbers for every side, each in the form its loop receives: our loader's numpy arrays, GluonCV's
    # DataLoader's NDArrays (int32 masks)
    batches = {side: (images, labels) if side == "ours" else (mx.nd.array(images, ctx=ctx),
                                                              mx.nd.array(labels, ctx=ctx, dtype="int32"))
               for side in sides}
    losses = {side: [] for side in sides}

    def stepper(side):
        return lambda: losses[side].append(sides[side].step(batches[side]))

    for side in sides:
        warm_up(stepper(side), args.warmup)
    print(f"{model}: training steps of batch {b} at {crop}x{crop}, ours vs GluonCV's train.py loop "
          f"({', '.join(s for s in sides if s != 'ours')})", file=sys.stderr)
    times = alternate(model, {side: in_process(stepper(side)) for side in sides}, args.rounds, iters=args.iters)

    row = {"model": model, "label": model, "case": f"train b{b} {crop}x{crop}", "backbone": args.backbone,
           "classes": args.classes, "batch_size": b, "crop": crop, "check": check, "hybridized": True,
           **summarize(times["ours"], b), "losses": losses["ours"], "peers": {}}
    for side in sides:
        if side != "ours":
            peer = {"hybridized": side == "gluoncv-hybrid", **summarize(times[side], b), "losses": losses[side]}
            peer["ours_over_peer"] = row["img_per_s"] / peer["img_per_s"]
            row["peers"][side] = peer
    machine["loadavg_end"] = list(os.getloadavg())
    protocol = {"ctx": "cpu", "dtype": "float32", "warmup": args.warmup, "iters": args.iters, "rounds": args.rounds,
                "data": "synthetic, made once before timing (data loading not timed)",
                "ours": "SegmentationTask.train_step + trainer.step + loss/count scalars; hybridized static_alloc, "
                        "static_shape",
                "gluoncv": "scripts/segmentation/train.py loop body; not hybridized (as the script runs it)",
                "gluoncv-hybrid": "the same loop, model hybridized static_alloc, static_shape",
                "gluoncv_lr": GLUONCV_LR, "ours_lr": ours.setup.learning_rate.effective,
                "img_per_s": "median over rounds of each round's images/s"}
    doc = {**header(SCHEMA, machine), "goal_ratio": GOAL, "protocol": protocol, "results": [row]}
    print("\n".join([table(row)] + noisy_notes([row])))
    write_outputs(args.out, STEM, doc, lambda png: _chart(png, row, machine))
    return doc


def table(row):
    """One line per side: images/s, ms per step, ours over it and the goal (ours >= GOAL x GluonCV's)."""
    lines = [["side", "hybridized", "img/s", "ms/step p50", "ours / side", f"goal ours >= {GOAL}x"]]
    for side, s in [("ours", row)] + list(row["peers"].items()):
        ratio = s.get("ours_over_peer")
        lines.append([side, "yes" if s["hybridized"] else "no (as train.py)", f"{s['img_per_s']:.3f}",
                      f"{s['latency_ms']['p50']:.0f}", "-" if ratio is None else f"{ratio:.2f}",
                      "-" if ratio is None else ("met" if ratio >= GOAL else "not met")])
    return (f"{row['model']}: batch {row['batch_size']}, crop {row['crop']}x{row['crop']}, {row['classes']} classes "
            f"(data loading not timed)\n" + format_table(lines))


def _chart(path, row, machine):
    from ._plot import compare_chart

    best = max((p["img_per_s"] for p in row["peers"].values()), default=None)
    sides = {"ours": {"available": True, "img_per_s": row["img_per_s"],
                      "over_best_peer": row["img_per_s"] / best if best else None},
             **{side: {**p, "available": True} for side, p in row["peers"].items()}}
    compare_chart(path, [{"case": row["case"], "label": row["model"], "sides": sides}], list(sides),
                  f"training, CPU, {machine['threads']} threads")


if __name__ == "__main__":
    main()
