"""Detection accuracy of a trained detector on a detection .rec: VOC07 11-point mAP, VOC mAP and COCO mAP@[.5:.95]
(and Mask R-CNN's COCO mask AP on records packed with --masks).

    python scripts/eval_detection.py --rec-val data/voc07_test.rec --params runs/det/det.params
    horovodrun --gloo -np 2 -H localhost:2 python scripts/eval_detection.py --rec-val data/test.rec --params d.params

The model, its classes and its evaluation transform come with ``--params`` (its ``.json``; ``--model`` and
``--classes`` for a bare file); ``--short`` / ``--max-size`` replace the transform's sizes. The records are what
``recordio_tools pack-detection`` writes (their ``.idx`` beside them, or ``--rec-val-idx``); when its
``PREFIX_classes.txt`` is beside the .rec it must name the model's classes in the model's order. Every image is
evaluated once, alone, at the transform's size, its boxes scaled back to its own pixels (GluonCV's validation);
``--metrics`` chooses among ``voc07`` (11-point, IoU 0.5), ``voc`` (area under the curve), ``coco`` (pycocotools;
difficult objects as crowds) and ``mask`` (COCO's mask AP of a ``mask_rcnn_fpn_*`` model, when the records carry
instance masks: ``pack-detection --masks``; each detection's mask pasted at the image's size as GluonCV's ``fill``),
all by default: see :mod:`resnest_gluon.dense.detection_eval`.

Prints one line per metric, the precision and recall of the detections scoring >= ``--score-thresh`` (0.5, the
threshold detect.py draws at, by default), and a table of the classes (objects that count, VOC07 AP, COCO AP; a
class without objects has no AP and is left out of the means), and writes ``OUT/detection_eval.json`` (or
``--json``): model, params, records, data config, classes, ``world_size``, the metrics with ``per_class`` entries,
``images_per_sec`` (summed over ranks, from each rank's second image) and ``skipped_records`` ([{"index",
"message"}]).

Exit status as ``scripts/verify.py``'s (:mod:`resnest_gluon.exits`): 0 when evaluated, damaged records included (they
are skipped, listed and left out: the numbers are over the readable images); 2 with one line ``error: ...`` for a
missing or wrong file, a model that is not a detector, a class id of the records that the model does not have
(naming the record), records whose classes are not the model's, COCO asked for without pycocotools, or unusable
flags.
Under ``horovodrun`` each rank evaluates every world-th record, the images' results are gathered and the numbers
equal one process's; rank 0 prints and writes the JSON.
"""
import os
import sys

from resnest_gluon.atomic import write_json
from resnest_gluon.dense.cli import (add_dense_model_arguments, add_device_arguments, add_output_arguments,
                                     device_context, load_runner)
from resnest_gluon.dense.detection_data import evaluation_dataset
from resnest_gluon.dense.detection_eval import METRICS, evaluate_detection, has_masks
from resnest_gluon.dense.inference import Detector
from resnest_gluon.distributed import Distributed
from resnest_gluon.exits import ArgumentParser, run_script

REPORT = "detection_eval.json"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rec-val", required=True, help="detection .rec (recordio_tools pack-detection)")
    p.add_argument("--rec-val-idx", help="its .idx (default: the .idx next to the .rec)")
    add_dense_model_arguments(p)
    p.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated, of {', '.join(METRICS)} (default: all)")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="operating point of the precision and recall also reported (default 0.5, detect.py's)")
    add_output_arguments(p, REPORT, "eval", "the report")
    p.add_argument("-j", "--num-workers", type=int, default=2, help="processes decoding and resizing (default 2)")
    add_device_arguments(p)
    return p.parse_args(argv)


def chosen_metrics(text):
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"--metrics: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(METRICS)}")
    return names


def check_class_names(rec_path, names, model_names):
    """The records' class names (``PREFIX_classes.txt`` beside the .rec, when there) must be the model's."""
    from resnest_gluon.trained import load_class_names

    path = os.path.splitext(rec_path)[0] + "_classes.txt"
    if model_names is None or not os.path.isfile(path):
        return
    records = load_class_names(path)
    if records != list(names):
        raise ValueError(f"{path} names the classes of {rec_path} {records}, the model's are {list(names)}: "
                         f"class ids would mean other classes")


def evaluate(args, dist):
    metrics = chosen_metrics(args.metrics)
    if not 0 <= args.score_thresh <= 1:
        raise ValueError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    ctx = device_context(args, dist)
    detector = load_runner(Detector, args, ctx=ctx)
    masks = "mask" in metrics and has_masks(detector.net)
    dataset = evaluation_dataset(args.rec_val, args.rec_val_idx, masks=masks)
    check_class_names(args.rec_val, detector.names, detector.info.class_names)
    evaluation = evaluate_detection(detector.net, dataset, ctx, dist, detector.config, detector.names, metrics,
                                    progress=dist.rank == 0, num_workers=args.num_workers,
                                    score_thresh=args.score_thresh)
    note = None
    if masks and evaluation.result.mask_map is None:
        note = (f"no mask AP: the records of {args.rec_val} carry no instance masks (pack them with "
                f"python -m recordio_tools pack-detection ... --masks)")
    return {"model": detector.info.model, "params": args.params, "rec": args.rec_val, "idx": dataset.idx_path,
            "mask_note": note,
            "data_config": detector.config.to_dict(), "class_names": detector.names, "world_size": dist.world,
            **evaluation.result.to_dict(), "images_per_sec": evaluation.images_per_sec,
            "skipped_records": [{"index": int(i), "message": m} for i, m in evaluation.skipped]}


def _number(value):
    return "-" if value is None else f"{value:.4f}"


def print_summary(summary):
    cfg = summary["data_config"]
    print(f"{summary['model']} at short {cfg['short']} (max {cfg['max_size']}) on {summary['rec']}: "
          f"{summary['images']} images, {summary['detections']} detections, {summary['images_per_sec']:.2f} images/s")
    if "voc07" in summary["metrics"]:
        print(f"VOC07 mAP (11-point, IoU {summary['iou_thresh']:g}): {_number(summary['voc07_map'])}")
    if "voc" in summary["metrics"]:
        print(f"VOC mAP (area, IoU {summary['iou_thresh']:g}): {_number(summary['voc_map'])}")
    if summary["recall_at_thresh"] is not None or summary["precision_at_thresh"] is not None:
        print(f"at score >= {summary['score_thresh']:g}: precision {_number(summary['precision_at_thresh'])}, "
              f"recall {_number(summary['recall_at_thresh'])} (IoU {summary['iou_thresh']:g})")
    if "coco" in summary["metrics"]:
        print(f"COCO mAP@[.5:.95]: {_number(summary['coco_map'])}  (AP50 {_number(summary['coco_map50'])}, "
              f"AP75 {_number(summary['coco_map75'])}, small {_number(summary['coco_map_small'])}, "
              f"medium {_number(summary['coco_map_medium'])}, large {_number(summary['coco_map_large'])})")
    if summary.get("mask_map") is not None:
        print(f"COCO mask AP@[.5:.95]: {_number(summary['mask_map'])}  (AP50 {_number(summary['mask_map50'])}, "
              f"AP75 {_number(summary['mask_map75'])}, small {_number(summary['mask_map_small'])}, "
              f"medium {_number(summary['mask_map_medium'])}, large {_number(summary['mask_map_large'])})")
    elif summary.get("mask_note"):
        print(summary["mask_note"])
    width = max(len("class"), *(len(c["class"]) for c in summary["per_class"]))
    masks = summary.get("mask_map") is not None
    print(f"{'class':<{width}}  {'#gt':>6}  {'VOC07 AP':>8}  {'COCO AP':>8}" + (f"  {'mask AP':>8}" if masks else ""))
    for c in summary["per_class"]:
        note = "  (no ground truth: left out of the means)" if c["num_gt"] == 0 else ""
        print(f"{c['class']:<{width}}  {c['num_gt']:>6}  {_number(c['voc07_ap']):>8}  {_number(c['coco_ap']):>8}"
              + (f"  {_number(c['mask_ap']):>8}" if masks else "") + note)
    if summary["skipped_records"]:
        print(f"skipped {len(summary['skipped_records'])} damaged records (left out):")
        for s in summary["skipped_records"]:
            print(f"  {s['message']}")


def run(argv=None):
    """Evaluates, prints and writes the report (rank 0); returns the summary. Raises the library's errors."""
    args = parse_args(argv)
    dist = Distributed(use_horovod=True if args.horovod else None)
    summary = evaluate(args, dist)
    if dist.rank == 0:
        print_summary(summary)
        write_json(args.json or os.path.join(args.out, REPORT), summary)
    return summary


def main(argv=None):
    """The exit code of :func:`run`: 0, or a known failure's, its message one line on stderr."""
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
