"""Semantic segmentation end to end on scenes the project draws: ``make demo-segmentation``.

Run from the repository root:

    make demo-segmentation       # runs `make demo` first if out/demo has no result yet: its checkpoint is the backbone
    .venv/bin/python -m demos.segmentation --backbone-from out/demo --out out/demo-segmentation
    .venv/bin/python -m demos.segmentation --backbone-params BACKBONE.params --out /tmp/seg --quick  # the tests

A segmenter is trained from an ImageNet backbone, never from scratch; here the classification demo's ResNeSt-14
(:mod:`demos.classification`) stands in for ImageNet. Steps: check the environment and the backbone; draw Pascal VOC
segmentation scenes (shapes over textured, cluttered backgrounds, soft edges marked 255 = not counted;
:mod:`demos.segscenes`); pack them with ``python -m recordio_tools pack-segmentation`` and ``check`` the records;
train DeepLabV3+ (the small recipe's decoder) with ``horovodrun --gloo -np 2`` x
``scripts/train_segmentation.py --recipe small --backbone-params``; evaluate the checkpoint alone with
``scripts/eval_segmentation.py`` and stop if its mIoU differs from training's last validation (or is below what a segmenter that learned gets); segment sample validation
scenes with ``scripts/segment.py`` and stop if their pixel accuracy against the masks contradicts the evaluation's;
write ``report.md`` (``demos/templates/segmentation.md``) with curves and overlays. As the other demos: one line per
command and per epoch on the terminal, every command's output in OUT/logs/.
"""
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass

import numpy as np

from demos.steps import (REPO, DemoError, Steps, check_environment, epoch_echo, find_backbone, last_checkpoint,
                         parse_demo_args, prepare_out, pyplot, read_events, render, rows, run, run_demo, run_line)

COMMAND = "python -m demos.segmentation"  # how the report names this program
BACKBONE_COMMAND = "python -m demos.classification"  # the demo whose checkpoint --backbone-from finds
GENERATOR = "demos/segscenes.py"

BACKBONE = "resnest14"
SEGMENTER = f"deeplab_{BACKBONE}"
WORLD = 2  # Horovod processes, one core each
BUDGET_S = 600
# the least mIoU the full demo accepts: a segmenter that learned nothing predicts background (0.14 here); one that
# learned the shapes scores far above (docs/segmentation.md has what the demo reaches)
MIN_MIOU = 0.35
# segment.py's pixel accuracy on the sample scenes may differ from eval_segmentation.py's over the validation set
# by sampling alone, but not by more than this
SAMPLE_TOLERANCE = 0.15


@dataclass
class Settings:
    """Sizes and schedule of one run; measured on 2 cores (docs/segmentation.md). Everything else is ``--recipe
    small``'s."""

    family: str = "shapes"
    train_scenes: int = 600
    val_scenes: int = 100
    scene_size: int = 96
    epochs: int = 6  # 0: the recipe's (the 10-minute budget allows 6 of its 8)
    steps_per_epoch: int = 0  # 0: every image once per epoch
    draw_images: int = 6
    seed: int = 0


QUICK = Settings(train_scenes=16, val_scenes=4, scene_size=64, epochs=1, steps_per_epoch=1, draw_images=2)


# --------------------------------------------------------------------------------------------------- steps

def describe_epoch(e):
    """The terminal's line for an epoch summary of train_segmentation.py."""
    val = f"  val mIoU {e['val_mean_iou']:.3f} (pixel accuracy {e['val_pixel_accuracy']:.2%})" \
        if "val_mean_iou" in e else ""
    return (f"  epoch {e['epoch']}: loss {e['loss']:.3f}  train pixel accuracy {e['pixel_acc']:.2%}{val}  "
            f"({e['time_s']:.0f} s, {e['img_per_sec']:.2f} img/s)")


def draw_scenes(out, s):
    from tqdm import tqdm

    from demos.segscenes import make_segmentation_scenes

    root = os.path.join(out, "data", "scenes")
    with tqdm(total=s.train_scenes + s.val_scenes, desc="drawing", unit="img", dynamic_ncols=True) as bar:
        summary = make_segmentation_scenes(root, s.family, s.train_scenes, s.val_scenes, s.scene_size, seed=s.seed,
                                           progress=lambda done, _: bar.update(1))
    classes = _classes(root)
    print(f"{s.train_scenes + s.val_scenes} scenes ({s.train_scenes} train + {s.val_scenes} val, {s.scene_size} px), "
          f"{len(classes)} classes ({', '.join(classes)}): {root}")
    return summary, classes


def _classes(root):
    with open(os.path.join(root, "classes.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def pack(out, logs):
    """pack-segmentation + check for both splits; nothing may be skipped in generated scenes."""
    scenes, rec = os.path.join(out, "data", "scenes"), os.path.join(out, "data", "rec")
    os.makedirs(rec, exist_ok=True)
    tool = [sys.executable, "-m", "recordio_tools"]
    reports = {}
    for split in ("train", "val"):
        prefix = os.path.join(rec, split)
        run(tool + ["pack-segmentation", scenes, prefix, "--format", "voc", "--split", split, "--no-progress"], logs,
            f"pack-{split}")
        with open(prefix + ".report.json") as f:
            reports[split] = r = json.load(f)
        if r["skipped_count"] or r["packed"] != r["listed"]:
            raise DemoError(f"pack-segmentation skipped generated {split} scenes: see {prefix}.report.json")
        run(tool + ["check", prefix, "--no-progress"], logs, f"check-{split}")
        print(f"{split}: {r['packed']} images -> {prefix}.rec")
    return reports


def train_segmenter(out, s, logs, horovodrun, backbone_params):
    save_dir = os.path.join(out, "segmenter")
    rec = os.path.join(out, "data", "rec")
    cmd = [horovodrun, "--gloo", "-np", str(WORLD), "-H", f"localhost:{WORLD}", sys.executable,
           os.path.join(REPO, "scripts", "train_segmentation.py"), "--recipe", "small",
           "--rec-train", os.path.join(rec, "train.rec"), "--rec-val", os.path.join(rec, "val.rec"),
           "--backbone-params", backbone_params, "--seed", str(s.seed), "-j", "1", "--save-dir", save_dir]
    if s.epochs:
        cmd += ["--num-epochs", str(s.epochs)]
    if s.steps_per_epoch:
        cmd += ["--max-steps-per-epoch", str(s.steps_per_epoch)]
    run(cmd, logs, "train-segmenter", threads=1, echo=epoch_echo(describe_epoch))
    epochs = read_events(os.path.join(save_dir, "metrics.jsonl"))
    last = epochs[-1] if epochs else {}
    if "val_mean_iou" not in last:
        raise DemoError(f"{save_dir}/metrics.jsonl has no validation of the final epoch")
    params = last_checkpoint(save_dir)
    print(f"last validation (epoch {last['epoch']}): mIoU {last['val_mean_iou']:.4f}; checkpoint {params}")
    return {"command": cmd, "save_dir": save_dir, "epochs": epochs, "params": params}


def evaluate(out, logs, trained, quick):
    """eval_segmentation.py with the checkpoint alone; its mIoU must be training's last validation's."""
    path = os.path.join(out, "eval.json")
    run([sys.executable, os.path.join(REPO, "scripts", "eval_segmentation.py"), "--data",
         os.path.join(out, "data", "rec", "val.rec"), "--params", trained["params"], "--json", path], logs, "eval",
        threads=2)
    with open(path) as f:
        result = json.load(f)
    check_same_scores(result, trained)
    print(f"eval_segmentation.py: mIoU {result['mean_iou']:.4f}, pixel accuracy {result['pixel_accuracy']:.2%} "
          f"(= training's last validation), {result['images']} images")
    if not quick and result["mean_iou"] < MIN_MIOU:
        raise DemoError(f"mIoU {result['mean_iou']:.4f} is below {MIN_MIOU}: the segmenter did not learn enough (see "
                        f"{trained['save_dir']}/curves.png)")
    return result


def check_same_scores(evaluated, trained):
    """The checkpoint evaluated alone must score what training's last validation scored (the same images, the same
    transform from the checkpoint, the same weights)."""
    last = trained["epochs"][-1]
    for key in ("mean_iou", "pixel_accuracy"):
        if abs(evaluated[key] - last[f"val_{key}"]) > 1e-6:
            raise DemoError(f"eval_segmentation.py's {key} {evaluated[key]:.6f} differs from training's last "
                            f"validation {last[f'val_{key}']:.6f}: the evaluation protocols disagree")


def check_sample(drawn, evaluated, n):
    """segment.py's pixel accuracy on ``n`` sample scenes may differ from eval_segmentation.py's by sampling, not
    by more than :data:`SAMPLE_TOLERANCE`."""
    if abs(drawn["pixel_accuracy"] - evaluated["pixel_accuracy"]) > SAMPLE_TOLERANCE:
        raise DemoError(f"segment.py's masks score {drawn['pixel_accuracy']:.2%} pixel accuracy on {n} scenes, "
                        f"eval_segmentation.py {evaluated['pixel_accuracy']:.2%}: more apart than sampling explains "
                        f"({SAMPLE_TOLERANCE:.0%}); segment and eval disagree")


def pick_scenes(out, n, seed):
    """``n`` validation scene ids drawn at random (seeded)."""
    with open(os.path.join(out, "data", "scenes", "ImageSets", "Segmentation", "val.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    picks = np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False)
    return [ids[i] for i in sorted(picks)]


def segment(out, s, logs, trained, evaluated, classes):
    """segment.py on sample validation scenes with the checkpoint alone; their pixel accuracy against the drawn masks
    (read back from segment.py's PNGs) must agree with eval_segmentation.py's within sampling error."""
    from PIL import Image

    from resnest_gluon.dense.segmentation_eval import SegmentationFolder, SegmentationScores

    ids = pick_scenes(out, s.draw_images, s.seed)
    scenes = os.path.join(out, "data", "scenes")
    images = [os.path.join(scenes, "JPEGImages", i + ".jpg") for i in ids]
    folder = os.path.join(out, "segments")
    run([sys.executable, os.path.join(REPO, "scripts", "segment.py"), *images, "--params", trained["params"],
         "--out", folder], logs, "segment", threads=2)
    with open(os.path.join(folder, "segments.json")) as f:
        segmented = json.load(f)
    if segmented["data_config"] != evaluated["data_config"]:
        raise DemoError(f"segment.py used {segmented['data_config']}, eval_segmentation.py "
                        f"{evaluated['data_config']}: the same checkpoint must give the same transform")
    truth = SegmentationFolder(scenes, split="val", layout="voc")
    position = {name: i for i, name in enumerate(truth.ids)}
    scores = SegmentationScores(len(classes))
    results = {os.path.splitext(os.path.basename(r["image"]))[0]: r for r in segmented["results"]}
    if sorted(results) != sorted(ids):
        raise DemoError(f"segment.py reported {sorted(results)}, not the scenes it was given {ids}")
    for image_id in ids:
        with Image.open(os.path.join(folder, results[image_id]["mask"])) as mask:
            predicted = np.array(mask, np.int64)
        scores.update(truth.labels(position[image_id]), predicted, where=image_id)
    drawn = scores.result()
    print(f"segment.py: {len(ids)} scenes, pixel accuracy {drawn['pixel_accuracy']:.2%} against their masks "
          f"(eval_segmentation.py: {evaluated['pixel_accuracy']:.2%} over {evaluated['images']} scenes)")
    check_sample(drawn, evaluated, len(ids))
    return {"ids": ids, "segmented": segmented, "folder": folder, "drawn": drawn}


# --------------------------------------------------------------------------------------------------- report

def overlays_png(out, found, classes):
    """Each sample scene: the image, its drawn mask (grey: not counted), segment.py's prediction."""
    from PIL import Image

    from resnest_gluon.dense.drawing import class_map_image

    plt = pyplot()
    scenes = os.path.join(out, "data", "scenes")
    results = {os.path.splitext(os.path.basename(r["image"]))[0]: r for r in found["segmented"]["results"]}
    n = len(found["ids"])
    fig, axes = plt.subplots(3, n, figsize=(n * 1.8, 5.6), squeeze=False)
    for col, image_id in enumerate(found["ids"]):
        truth = np.array(Image.open(os.path.join(scenes, "SegmentationClass", image_id + ".png")), np.int64)
        shown = class_map_image(np.where(truth == 255, 0, truth).astype(np.int32)).convert("RGB")
        shown = np.array(shown)
        shown[truth == 255] = 128
        panels = (Image.open(os.path.join(scenes, "JPEGImages", image_id + ".jpg")), shown,
                  Image.open(os.path.join(found["folder"], results[image_id]["mask"])).convert("RGB"))
        for row, panel in enumerate(panels):
            axes[row][col].imshow(panel)
            axes[row][col].set_xticks([])
            axes[row][col].set_yticks([])
        axes[0][col].set_title(image_id, fontsize=7)
    for row, label in enumerate(("image", "drawn mask", "segment.py")):
        axes[row][0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"validation scenes ({', '.join(classes)}; grey: not counted)", fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "segments.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pct(x):
    return "-" if x is None else f"{x:.2%}"


def write_report(out, s, quick, env, reports, classes, backbone, trained, evaluated, found, steps):
    """report.md (templates/segmentation.md) and summary.json."""
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    total = steps.elapsed()
    first, load_end = run_line(COMMAND, quick, env)
    top1 = f", validation top-1 {_pct(backbone['val_top1'])}" if backbone["val_top1"] is not None else ""
    with open(os.path.join(trained["save_dir"], os.path.basename(trained["params"])[:-len(".params")] + ".json")) as f:
        run_settings = json.load(f).get("run", {})
    fields = {
        "run_line": first, "segmenter": SEGMENTER, "backbone": BACKBONE, "world": WORLD, "seed": s.seed,
        "miou": f"{evaluated['mean_iou']:.4f}", "pixel_accuracy": _pct(evaluated["pixel_accuracy"]),
        "val_images": evaluated["images"], "total_s": f"{total:.0f}",
        "over_budget": f" (over the {BUDGET_S} s budget)" if total > BUDGET_S and not quick else "",
        "step_rows": rows(f"| {title} | {sec:.1f} s |" for title, sec in steps.times),
        "generator": GENERATOR, "family": s.family, "train_scenes": s.train_scenes, "val_scenes": s.val_scenes,
        "scene_size": s.scene_size, "num_classes": len(classes), "classes": ", ".join(classes),
        "pack_rows": rows(f"| {sp} | {r['listed']} | {r['packed']} | {r['skipped_count']} | data/rec/{sp}.rec |"
                          for sp, r in reports.items()),
        "backbone_params": backbone["params"], "backbone_classes": backbone["num_classes"],
        "backbone_size": backbone["input_size"],
        "backbone_origin": f" by `{BACKBONE_COMMAND}` in `{backbone['from']}`{top1}" if backbone["from"] else "",
        "settings": ", ".join(f"{k} {v}" for k, v in run_settings.items()
                              if k in ("base_size", "crop_size", "scale", "batch_size", "num_epochs", "lr",
                                       "aux_weight", "lr_mode")),
        "epoch_rows": rows(f"| {e['epoch']} | {e['loss']:.3f} | {e.get('main_loss', 0):.3f} | {e['pixel_acc']:.2%} | "
                           f"{e['lr']:.4g} | {e['img_per_sec']:.2f} | {_pct(e.get('val_pixel_accuracy'))} | "
                           f"{e.get('val_mean_iou', float('nan')):.4f} |" for e in trained["epochs"]),
        "params": rel(trained["params"]),
        "class_rows": rows(f"| {c['class']} | {c['pixels']} | {_pct(c['iou'])} |" for c in evaluated["per_class"]),
        "eval_speed": f"{evaluated['images_per_sec'] or 0:.1f}",
        "drawn_scenes": len(found["ids"]), "drawn_accuracy": _pct(found["drawn"]["pixel_accuracy"]),
        "drawn_miou": f"{found['drawn']['mean_iou']:.4f}", "tolerance": f"{SAMPLE_TOLERANCE:.0%}",
    }
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write(render("segmentation", fields))
    summary = {"quick": quick, "settings": asdict(s), "segmenter": SEGMENTER, "world": WORLD, "classes": classes,
               "mean_iou": evaluated["mean_iou"], "pixel_accuracy": evaluated["pixel_accuracy"],
               "train_last_val_mean_iou": trained["epochs"][-1]["val_mean_iou"],
               "drawn": {"scenes": found["ids"], "pixel_accuracy": found["drawn"]["pixel_accuracy"]},
               "backbone_params": backbone["params"], "params": trained["params"], "command": trained["command"],
               "steps": [{"step": t, "seconds": sec} for t, sec in steps.times], "total_seconds": total,
               "environment": env, "loadavg_end": load_end}
    from resnest_gluon.atomic import write_json

    write_json(os.path.join(out, "summary.json"), summary, indent=1)
    return path


# --------------------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    return parse_demo_args(COMMAND, __doc__.splitlines()[0], "out/demo-segmentation", BACKBONE, argv)


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
            backbone = find_backbone(args.backbone_from, args.backbone_params, BACKBONE, SEGMENTER)
        with steps("scenes: draw Pascal VOC segmentation scenes"):
            _, classes = draw_scenes(out, s)
        with steps("RecordIO: pack-segmentation, check"):
            reports = pack(out, logs)
        with steps(f"train {SEGMENTER} with horovodrun --gloo -np {WORLD}"):
            trained = train_segmenter(out, s, logs, horovodrun, backbone["params"])
            shutil.copy(os.path.join(trained["save_dir"], "curves.png"), os.path.join(out, "curves.png"))
        with steps("eval_segmentation.py on the validation .rec"):
            evaluated = evaluate(out, logs, trained, args.quick)
        with steps("segment.py on sample validation scenes"):
            found = segment(out, s, logs, trained, evaluated, classes)
        with steps("report"):
            overlays_png(out, found, classes)
            report = write_report(out, s, args.quick, env, reports, classes, backbone, trained, evaluated, found,
                                  steps)
            print(f"wrote {report}")
        return (f"mIoU {evaluated['mean_iou']:.4f}, pixel accuracy {evaluated['pixel_accuracy']:.2%} "
                f"(eval_segmentation.py = training's last validation)", report)

    return run_demo(steps, demo, BUDGET_S, args.quick)


if __name__ == "__main__":
    sys.exit(main())
