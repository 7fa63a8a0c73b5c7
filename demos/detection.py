"""Detection end to end on scenes the project draws: ``make demo-detection``.

Run from the repository root:

    make demo-detection          # runs `make demo` first if out/demo has no result yet: its checkpoint is the backbone
    .venv/bin/python -m demos.detection --backbone-from out/demo --out out/demo-detection   # ~9 min, 2 cores
    .venv/bin/python -m demos.detection --backbone-params BACKBONE.params --out /tmp/det --quick  # the tests

A detector is trained from an ImageNet backbone, never from scratch; here the classification demo's ResNeSt-14
(:mod:`demos.classification`: 10 shape classes, 32 px, ~99 % top-1) stands in for ImageNet. Steps: check the
environment and the backbone; draw Pascal VOC scenes of several shapes each (occlusion, truncation, clutter, sizes
8-30 % of the side; :mod:`demos.scenes`); pack them with ``python -m recordio_tools pack-detection`` and ``check``
the records; train Faster R-CNN FPN with ``horovodrun --gloo -np 2`` x ``scripts/train_detection.py
--backbone-params``; evaluate the checkpoint alone with ``scripts/eval_detection.py`` and stop if its VOC07 mAP
differs from training's last validation (or is below what a detector that learned gets); draw the detections of
sample validation scenes with ``scripts/detect.py`` and stop if how many objects it finds is implausible for
eval_detection's recall at the same score threshold; write ``report.md`` (``demos/templates/detection.md``) with
PNGs. As the classification demo: one line per command and per epoch on the terminal, every command's output in
OUT/logs/, a failing command stops the demo with the tail of its stderr.
"""
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from demos.steps import (REPO, DemoError, Steps, check_environment, epoch_echo, find_backbone, last_checkpoint,
                         parse_demo_args, prepare_out, pyplot, read_events, render, rows, run, run_demo, run_line,
                         shell_line)

COMMAND = "python -m demos.detection"  # how the report names this program
BACKBONE_COMMAND = "python -m demos.classification"  # the demo whose checkpoint --backbone-from finds
GENERATOR = "demos/scenes.py"

BACKBONE = "resnest14"
DETECTOR = f"faster_rcnn_fpn_{BACKBONE}"
WORLD = 2  # Horovod processes, one core each
BUDGET_S = 600
# detect.py's hits on the sample scenes must be plausible for eval_detection.py's recall at the same threshold: the
# binomial chance of so few (or fewer) must be at least this
PLAUSIBLE = 1e-3
# the least VOC07 mAP the full demo accepts: a detector that learned nothing scores ~0 (0.014 after 400 images
# from scratch, docs/dense-prediction.md)
MIN_MAP = 0.5
# what keeps the detector light on 2 cores (each travels in the checkpoint's model section): GluonCV's 2fc box
# head at a quarter of its width (a step ~1.2x faster), plain BatchNorm, fewer proposals and sampled RoIs, anchors
# for small images; stem and stage 1 frozen as in GluonCV's non-SyncBN recipes
DETECTOR_ARGS = ("box_head=2fc", "norm=bn", "num_sample=64", "rpn_train_pre_nms=1000",
                 "rpn_train_post_nms=256", "rpn_test_post_nms=100", "base_size=8",
                 "train_patterns=(?!.*moving)(?!resnest_conv1_|resnest_syncbatchnorm0_|resnest_layers1_).*")


@dataclass
class Settings:
    """Sizes and recipes of one run; measured on 2 cores (docs/dense-prediction.md)."""

    train_scenes: int = 800
    val_scenes: int = 120
    scene_size: int = 160  # generated JPEGs; the detector sees them at `short`
    short: int = 96  # detector input: shorter side (train and evaluation), longer side at most the same
    batch_size: int = 2  # detector images per process
    epochs: int = 5
    steps_per_epoch: int = 58
    lr: float = 0.08  # per 8 images, scaled linearly to WORLD x batch_size
    lr_warmup: int = 20  # updates
    draw_images: int = 8
    threshold: float = 0.5  # detect.py's score threshold (and eval_detection.py's operating point)
    seed: int = 0
    detector_args: tuple = field(default=DETECTOR_ARGS)


QUICK = Settings(train_scenes=24, val_scenes=8, epochs=1, steps_per_epoch=3, lr_warmup=2, draw_images=3)


# --------------------------------------------------------------------------------------------------- steps

def describe_epoch(e):
    """The terminal's line for an epoch summary of train_detection.py."""
    val = f"  val VOC07 mAP {e['val_voc07_map']:.3f}" if "val_voc07_map" in e else ""
    return (f"  epoch {e['epoch']}: loss {e['loss']:.3f}  R-CNN accuracy {e['rcnn_acc']:.2%}{val}  "
            f"({e['time_s']:.0f} s, {e['img_per_sec']:.2f} img/s)")


def draw_scenes(out, s):
    from tqdm import tqdm

    from demos.scenes import make_scenes

    root = os.path.join(out, "data", "scenes")
    with tqdm(total=s.train_scenes + s.val_scenes, desc="drawing", unit="img", dynamic_ncols=True) as bar:
        summary = make_scenes(root, s.train_scenes, s.val_scenes, s.scene_size, seed=s.seed,
                              progress=lambda done, _: bar.update(1))
    print(f"{summary.total('images')} scenes ({s.train_scenes} train + {s.val_scenes} val, {s.scene_size} px), "
          f"{summary.total()} objects of {len(summary.classes)} classes ({', '.join(summary.classes)}; "
          f"{summary.total('difficult')} difficult, {summary.total('truncated')} truncated): {root}")
    return summary


def pack(out, logs, classes_file):
    """pack-detection + check for both splits; the pack reports (no problem may be found in generated scenes)."""
    scenes, rec = os.path.join(out, "data", "scenes"), os.path.join(out, "data", "rec")
    os.makedirs(rec, exist_ok=True)
    tool = [sys.executable, "-m", "recordio_tools"]
    reports = {}
    for split in ("train", "val"):
        prefix = os.path.join(rec, split)
        run(tool + ["pack-detection", scenes, prefix, "--format", "voc", "--split", split, "--classes", classes_file,
                    "--no-progress"], logs, f"pack-{split}")
        with open(prefix + ".report.json") as f:
            reports[split] = json.load(f)
        r = reports[split]
        if r["skipped_count"] or r["box_problem_count"] or r["packed"] != r["listed"]:
            raise DemoError(f"pack-detection found problems in the generated {split} scenes: see "
                            f"{prefix}.report.json")
        run(tool + ["check", prefix, "--detection", "--no-progress"], logs, f"check-{split}")
        print(f"{split}: {r['packed']} images, {r['boxes']} boxes -> {prefix}.rec")
    return reports


def model_arg_flags(s):
    """The ``--model-arg KEY=VALUE`` flags of the detector settings of ``s``."""
    return [a for arg in s.detector_args for a in ("--model-arg", arg)]


def training_command(out, s, horovodrun, backbone_params):
    """``(argv of the detector's training, its save folder)``: horovodrun x scripts/train_detection.py with ``s``."""
    save_dir = os.path.join(out, "detector")
    rec = os.path.join(out, "data", "rec")
    cmd = [horovodrun, "--gloo", "-np", str(WORLD), "-H", f"localhost:{WORLD}", sys.executable,
           os.path.join(REPO, "scripts", "train_detection.py"),
           "--rec-train", os.path.join(rec, "train.rec"), "--rec-val", os.path.join(rec, "val.rec"),
           "--model", DETECTOR, "--backbone-params", backbone_params, *model_arg_flags(s),
           "--short", str(s.short), "--max-size", str(s.short), "--val-short", str(s.short),
           "--val-max-size", str(s.short), "--batch-size", str(s.batch_size), "--num-epochs", str(s.epochs),
           "--max-steps-per-epoch", str(s.steps_per_epoch), "--lr", str(s.lr), "--lr-mode", "cosine",
           "--lr-warmup", str(s.lr_warmup), "--val-interval", str(s.epochs), "--save-interval", str(s.epochs),
           "--seed", str(s.seed), "-j", "1", "--log-interval", "10", "--save-dir", save_dir]
    return cmd, save_dir


def train_detector(out, s, logs, horovodrun, backbone_params):
    cmd, save_dir = training_command(out, s, horovodrun, backbone_params)
    run(cmd, logs, "train-detector", threads=1, echo=epoch_echo(describe_epoch))
    epochs = read_events(os.path.join(save_dir, "metrics.jsonl"))
    last = epochs[-1] if epochs else {}
    if last.get("epoch") != s.epochs or "val_voc07_map" not in last:
        raise DemoError(f"{save_dir}/metrics.jsonl has no validation of the final epoch {s.epochs}")
    params = last_checkpoint(save_dir)
    print(f"last validation (epoch {last['epoch']}): VOC07 mAP {last['val_voc07_map']:.4f}; checkpoint {params}")
    return {"command": cmd, "save_dir": save_dir, "epochs": epochs, "params": params}


def evaluate(out, s, logs, trained, quick):
    """eval_detection.py with the checkpoint alone; its VOC07 mAP must be training's last validation's."""
    path = os.path.join(out, "eval.json")
    run([sys.executable, os.path.join(REPO, "scripts", "eval_detection.py"),
         "--rec-val", os.path.join(out, "data", "rec", "val.rec"), "--params", trained["params"],
         "--score-thresh", str(s.threshold), "-j", "1", "--json", path], logs, "eval", threads=2)
    with open(path) as f:
        result = json.load(f)
    check_same_map(result, trained)
    print(f"eval_detection.py: VOC07 mAP {result['voc07_map']:.4f} (= training's last validation), COCO mAP "
          f"{_num(result['coco_map'], 4)}; at score >= {s.threshold}: precision {_num(result['precision_at_thresh'])}, "
          f"recall {_num(result['recall_at_thresh'])}")
    if not quick and result["voc07_map"] < MIN_MAP:
        raise DemoError(f"VOC07 mAP {result['voc07_map']:.4f} is below {MIN_MAP}: the detector did not learn "
                        f"enough (see {trained['save_dir']}/curves.png)")
    return result


def check_same_map(evaluated, trained):
    """The checkpoint evaluated alone must score what training's last validation scored (the same images, the same
    transform from the checkpoint, the same weights)."""
    last = trained["epochs"][-1]
    if abs(evaluated["voc07_map"] - last["val_voc07_map"]) > 1e-4:
        raise DemoError(f"eval_detection.py's VOC07 mAP {evaluated['voc07_map']:.6f} differs from training's last "
                        f"validation {last['val_voc07_map']:.6f}: the evaluation protocols disagree")


def pick_scenes(out, n, seed):
    """``n`` validation scene ids drawn at random (seeded)."""
    with open(os.path.join(out, "data", "scenes", "ImageSets", "Main", "val.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    picks = np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False)
    return [ids[i] for i in sorted(picks)]


def plausible_hits(hits, n, recall):
    """The binomial chance of ``hits`` or fewer found objects of ``n`` when each is found with chance ``recall``."""
    return sum(math.comb(n, k) * recall ** k * (1 - recall) ** (n - k) for k in range(hits + 1))


def score_drawn(out, ids, detected, classes):
    """detect.py's objects on the sample scenes against their VOC ground truth: the DetectionResult (recall and
    precision at detect.py's threshold among them)."""
    from recordio_tools.detection import read_voc
    from resnest_gluon.dense.detection_eval import DetectionMetrics

    scenes = os.path.join(out, "data", "scenes")
    truth = {os.path.splitext(os.path.basename(image))[0]: objects for _, image, objects in read_voc(scenes, "val")[0]}
    metrics = DetectionMetrics(classes, metrics=("voc07",), score_thresh=detected["threshold"])
    results = {os.path.splitext(os.path.basename(r["image"]))[0]: r for r in detected["results"]}
    if sorted(results) != sorted(ids):
        raise DemoError(f"detect.py reported {sorted(results)}, not the scenes it was given {ids}: see "
                        f"{detected.get('skipped')}")
    for image_id in ids:
        found, gt = results[image_id]["objects"], truth[image_id]
        metrics.update([o["box"] for o in found], [o["label"] for o in found], [o["score"] for o in found],
                       [o[1:5] for o in gt], [classes.index(o[0]) for o in gt], [o[5] for o in gt])
    return metrics.result()


def detect(out, s, logs, trained, evaluated, classes):
    """detect.py on sample validation scenes with the checkpoint alone; how many objects it finds must be
    plausible for eval_detection.py's recall at the same threshold."""
    ids = pick_scenes(out, s.draw_images, s.seed)
    images = [os.path.join(out, "data", "scenes", "JPEGImages", i + ".jpg") for i in ids]
    folder = os.path.join(out, "detections")
    run([sys.executable, os.path.join(REPO, "scripts", "detect.py"), *images, "--params", trained["params"],
         "--threshold", str(s.threshold), "--out", folder], logs, "detect", threads=2)
    with open(os.path.join(folder, "detections.json")) as f:
        detected = json.load(f)
    if detected["data_config"] != evaluated["data_config"]:
        raise DemoError(f"detect.py used {detected['data_config']}, eval_detection.py {evaluated['data_config']}: "
                        f"the same checkpoint must give the same transform")
    drawn = score_drawn(out, ids, detected, classes)
    n = sum(drawn.num_gt)
    hits = round(drawn.recall_at_thresh * n) if n else 0
    recall = evaluated["recall_at_thresh"] or 0.0
    chance = plausible_hits(hits, n, recall)
    print(f"detect.py: {sum(len(r['objects']) for r in detected['results'])} objects at score >= {s.threshold} in "
          f"{len(ids)} scenes; {hits} of their {n} objects found (eval_detection.py's recall {recall:.2%} expects "
          f"{recall * n:.1f})")
    if chance < PLAUSIBLE:
        raise DemoError(f"detect.py found {hits} of {n} objects, implausible at eval_detection.py's recall "
                        f"{recall:.2%} (chance {chance:.1e}): detect and eval disagree")
    return {"ids": ids, "detected": detected, "hits": hits, "objects": n,
            "precision": drawn.precision_at_thresh, "folder": folder}


# --------------------------------------------------------------------------------------------------- report

def scenes_png(out, classes, n=8):
    """Training scenes with their ground-truth boxes (dashed: difficult)."""
    from PIL import Image

    from recordio_tools.detection import read_voc
    from resnest_gluon.dense.drawing import draw_objects

    plt = pyplot()
    scenes = os.path.join(out, "data", "scenes")
    entries = read_voc(scenes, "train")[0][:n]
    fig, axes = plt.subplots(1, len(entries), figsize=(len(entries) * 1.9, 2.1), squeeze=False)
    for ax, (_, image, objects) in zip(axes[0], entries):
        rgb = np.asarray(Image.open(os.path.join(scenes, image)).convert("RGB"))
        boxes = [{"label": classes.index(o[0]), "class": o[0] + (" (d)" if o[5] else ""), "score": 1.0,
                  "box": list(o[1:5])} for o in objects]
        ax.imshow(draw_objects(rgb, boxes))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("training scenes with their boxes ((d): difficult, under 45 % visible)", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "scenes.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def detections_png(out, found):
    from PIL import Image
    plt = pyplot()
    results = found["detected"]["results"]
    fig, axes = plt.subplots(1, len(results), figsize=(len(results) * 1.9, 2.2), squeeze=False)
    for ax, image_id, r in zip(axes[0], found["ids"], results):
        ax.imshow(Image.open(os.path.join(found["folder"], r["drawing"])))
        ax.set_title(image_id, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"detect.py on validation scenes (score >= {found['detected']['threshold']})", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "detections.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pct(x):
    return "-" if x is None else f"{x:.2%}"


def _num(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def write_report(out, s, quick, env, scenes, reports, backbone, trained, evaluated, found, steps):
    """report.md (templates/detection.md, + summary.json)."""
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    total = steps.elapsed()
    first, load_end = run_line(COMMAND, quick, env)
    detector_time = dict(steps.times).get(f"train {DETECTOR} with horovodrun --gloo -np {WORLD}")
    top1 = f", validation top-1 {_pct(backbone['val_top1'])}" if backbone["val_top1"] is not None else ""
    recall = evaluated["recall_at_thresh"]
    fields = {
        "run_line": first, "detector": DETECTOR, "backbone": BACKBONE, "world": WORLD, "seed": s.seed,
        "voc07_map": _num(evaluated["voc07_map"], 4), "coco_map": _num(evaluated["coco_map"], 4),
        "val_images": evaluated["images"], "short": s.short, "total_s": f"{total:.0f}",
        "over_budget": f" (over the {BUDGET_S} s budget)" if total > BUDGET_S and not quick else "",
        "step_rows": rows(f"| {title} | {sec:.1f} s |" for title, sec in steps.times),
        # scenes
        "scene_images": scenes.total("images"), "generator": GENERATOR, "draw_s": f"{scenes.seconds:.1f}",
        "train_scenes": s.train_scenes, "val_scenes": s.val_scenes, "scene_size": s.scene_size,
        "num_classes": len(scenes.classes), "classes": ", ".join(scenes.classes), "objects": scenes.total(),
        "difficult": scenes.total("difficult"), "truncated": scenes.total("truncated"),
        "pack_rows": rows(f"| {sp} | {r['listed']} | {r['packed']} | {r['boxes']} | "
                          f"{r['skipped_count'] + r['box_problem_count']} | data/rec/{sp}.rec |"
                          for sp, r in reports.items()),
        # backbone
        "backbone_params": backbone["params"], "backbone_classes": backbone["num_classes"],
        "backbone_size": backbone["input_size"],
        "backbone_origin": f" by `{BACKBONE_COMMAND}` in `{backbone['from']}`{top1}" if backbone["from"] else "",
        # detector
        "batch_size": s.batch_size, "epochs": s.epochs, "steps_per_epoch": s.steps_per_epoch,
        "train_images": s.epochs * s.steps_per_epoch * s.batch_size * WORLD, "lr": s.lr, "lr_warmup": s.lr_warmup,
        "detector_args": shell_line(model_arg_flags(s)),
        "training_time": f"Training took {detector_time:.0f} s. " if detector_time else "",
        "epoch_rows": rows(f"| {e['epoch']} | {e['loss']:.3f} | {e.get('rpn_cls', 0):.3f} | "
                           f"{e.get('rpn_box', 0):.3f} | {e.get('rcnn_cls', 0):.3f} | "
                           f"{e.get('rcnn_box', 0):.3f} | {e['rcnn_acc']:.2%} | {e['lr']:.4g} | "
                           f"{e['img_per_sec']:.2f} | {_num(e.get('val_voc07_map'))} |"
                           for e in trained["epochs"]),
        # evaluation
        "params": rel(trained["params"]), "voc_map": _num(evaluated["voc_map"], 4),
        "coco_map50": _num(evaluated["coco_map50"]), "coco_map75": _num(evaluated["coco_map75"]),
        "score_thresh": evaluated["score_thresh"], "precision": _num(evaluated["precision_at_thresh"]),
        "recall": _num(recall), "eval_speed": f"{evaluated['images_per_sec']:.1f}",
        "class_rows": rows(f"| {c['class']} | {c['num_gt']} | {c['num_difficult']} | {_num(c['voc07_ap'])} | "
                           f"{_num(c['coco_ap'])} |" for c in evaluated["per_class"]),
        # detections
        "threshold": s.threshold, "drawn_scenes": len(found["ids"]), "hits": found["hits"],
        "drawn_objects": found["objects"], "expected_hits": f"{(recall or 0) * found['objects']:.1f}",
        "drawn_precision": _num(found["precision"]),
    }
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write(render("detection", fields))
    summary = {"quick": quick, "settings": asdict(s), "detector": DETECTOR, "world": WORLD,
               "classes": list(scenes.classes), "voc07_map": evaluated["voc07_map"], "coco_map": evaluated["coco_map"],
               "train_last_val_voc07_map": trained["epochs"][-1]["val_voc07_map"],
               "precision_at_thresh": evaluated["precision_at_thresh"],
               "recall_at_thresh": evaluated["recall_at_thresh"],
               "drawn": {"scenes": found["ids"], "objects": found["objects"], "found": found["hits"]},
               "backbone_params": backbone["params"], "params": trained["params"],
               "steps": [{"step": t, "seconds": sec} for t, sec in steps.times], "total_seconds": total,
               "environment": env, "loadavg_end": load_end}
    from resnest_gluon.atomic import write_json

    write_json(os.path.join(out, "summary.json"), summary, indent=1)
    return path


# --------------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    return parse_demo_args(COMMAND, __doc__.splitlines()[0], "out/demo-detection", BACKBONE, argv)


def main(argv=None):
    args = parse_args(argv)
    s = QUICK if args.quick else Settings()
    s = Settings(**{**asdict(s), "seed": args.seed})
    steps = Steps(7)

    def demo():
        out = prepare_out(args.out)
        logs = os.path.join(out, "logs")
        with steps("environment and backbone"):
            env, horovodrun = check_environment()
            backbone = find_backbone(args.backbone_from, args.backbone_params, BACKBONE, DETECTOR)
        with steps("scenes: draw Pascal VOC scenes"):
            scenes = draw_scenes(out, s)
            classes = list(scenes.classes)
            scenes_png(out, classes)
        with steps("RecordIO: pack-detection, check"):
            reports = pack(out, logs, os.path.join(out, "data", "scenes", "classes.txt"))
        with steps(f"train {DETECTOR} with horovodrun --gloo -np {WORLD}"):
            trained = train_detector(out, s, logs, horovodrun, backbone["params"])
            shutil.copy(os.path.join(trained["save_dir"], "curves.png"), os.path.join(out, "curves.png"))
        with steps("eval_detection.py on the validation .rec"):
            evaluated = evaluate(out, s, logs, trained, args.quick)
        with steps("detect.py on sample validation scenes"):
            found = detect(out, s, logs, trained, evaluated, classes)
        with steps("report"):
            detections_png(out, found)
            report = write_report(out, s, args.quick, env, scenes, reports, backbone, trained, evaluated, found, steps)
            print(f"wrote {report}")
        return f"VOC07 mAP {evaluated['voc07_map']:.4f} (eval_detection.py = training's last validation)", report

    return run_demo(steps, demo, BUDGET_S, args.quick)


if __name__ == "__main__":
    sys.exit(main())
