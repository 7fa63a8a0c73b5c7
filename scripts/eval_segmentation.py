"""Segmentation accuracy of a trained segmenter on a Pascal VOC or ADE20K folder: pixel accuracy and mean IoU.

    python scripts/eval_segmentation.py --data VOCdevkit/VOC2012 --params runs/seg/seg.params
    python scripts/eval_segmentation.py --data val.rec --params runs/seg/ckpt-0050.params
    horovodrun --gloo -np 2 -H localhost:2 python scripts/eval_segmentation.py --data ADEChallengeData2016 --params p

The model, its classes and its evaluation transform come with ``--params`` (its ``.json``; ``--model`` and
``--classes`` for a bare file); ``--short`` / ``--max-size`` replace the transform's sizes. ``--data`` (or
``--rec-val``) is segmentation records (``python -m recordio_tools pack-segmentation``: class index per pixel, 255
not counted, whatever the source's convention) or a folder in
Pascal VOC's layout (``ImageSets/Segmentation/SPLIT.txt``, ``JPEGImages/``, ``SegmentationClass/``; 255 is not
counted) or ADE20K's (``images/validation/``, ``annotations/validation/``; 0 is not counted, classes are the mask's
value - 1), found by itself or named by ``--layout``: see :mod:`resnest_gluon.dense.segmentation_eval`. Every image
is segmented whole at the transform's size and compared in its own pixels.

Prints the pixel accuracy, the mean IoU (over the classes labelled or predicted; GluonCV's mean over all classes
too when they differ) and a table of the classes (labelled pixels, IoU), and writes ``OUT/segmentation_eval.json``
(or ``--json``): model, params, data, layout, split, data config, the numbers with ``per_class`` entries,
``images``, ``images_per_sec`` and ``skipped`` ([{"image", "reason"}]).

Exit status as ``scripts/eval_detection.py``'s (:mod:`resnest_gluon.exits`): 0 when evaluated, unreadable images or
masks and masks of another size than their image included (skipped, listed, left out); 2 with one line
``error: ...`` for a missing or wrong file or folder, a model that is not a segmenter, a class index in a mask that
the model does not have (naming the mask), or unusable flags. Under ``horovodrun`` each rank segments every world-th
image and the pixel counts are summed: the numbers equal one process's; rank 0 prints and writes the JSON.
"""
import os
import sys

from resnest_gluon.atomic import write_json
from resnest_gluon.dense.cli import (add_dense_model_arguments, add_device_arguments, add_output_arguments,
                                     device_context, load_runner)
from resnest_gluon.dense.inference import Segmenter
from resnest_gluon.dense.segmentation_data import open_segmentation_data
from resnest_gluon.dense.segmentation_eval import LAYOUTS, evaluate_segmentation
from resnest_gluon.distributed import Distributed
from resnest_gluon.exits import ArgumentParser, run_script

REPORT = "segmentation_eval.json"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", "--rec-val", dest="data", required=True,
                   help="segmentation records (a .rec of recordio_tools pack-segmentation, its .idx beside it) or a "
                        "dataset folder (Pascal VOC's VOC2012 or ADE20K's ADEChallengeData2016 layout)")
    p.add_argument("--split", default="val", help="which images (default val: VOC's val.txt, ADE20K's validation)")
    p.add_argument("--layout", choices=sorted(LAYOUTS), help="the folder's layout (default: found from its folders)")
    add_dense_model_arguments(p)
    add_output_arguments(p, REPORT, "eval", "the report")
    add_device_arguments(p)
    return p.parse_args(argv)


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def report_lines(result):
    """The lines printed for a result of :func:`evaluate_segmentation`."""
    lines = [f"pixel accuracy: {_percent(result['pixel_accuracy'])}",
             f"mean IoU: {_percent(result['mean_iou'])} over the {result['classes_in_mean']} classes labelled or "
             f"predicted"]
    if result["classes_in_mean"] < len(result["per_class"]):
        lines.append(f"mean IoU over all {len(result['per_class'])} classes (GluonCV's): "
                     f"{_percent(result['mean_iou_all_classes'])}")
    width = max(len("class"), *(len(c["class"]) for c in result["per_class"]))
    lines.append(f"{'class':<{width}}  {'pixels':>12}  {'IoU':>8}")
    lines += [f"{c['class']:<{width}}  {c['pixels']:>12}  {_percent(c['iou']):>8}" for c in result["per_class"]]
    speed = result["images_per_sec"]
    lines.append(f"{result['images']} images" + (f", {speed:.2f} img/s" if speed else "")
                 + (f"; skipped {len(result['skipped'])}" if result["skipped"] else ""))
    return lines


def run(argv=None):
    """Evaluates, prints and writes the report (rank 0); returns the report. Raises the library's errors."""
    args = parse_args(argv)
    dist = Distributed(use_horovod=True if args.horovod else None)
    segmenter = load_runner(Segmenter, args, ctx=device_context(args, dist))
    data = open_segmentation_data(args.data, split=args.split, layout=args.layout)
    result = evaluate_segmentation(segmenter, data, dist, progress=dist.rank == 0)
    report = {"model": segmenter.info.model, "params": args.params, "data": args.data, "layout": getattr(data, "layout", "records"),
              "split": args.split, "data_config": segmenter.config.to_dict(), "world_size": dist.world, **result}
    if dist.rank != 0:
        return report
    for line in report_lines(result):
        print(line)
    for item in result["skipped"]:
        print(f"skipped: {item['reason']}", file=sys.stderr)
    write_json(args.json or os.path.join(args.out, REPORT), report)
    return report


def main(argv=None):
    """The exit code of :func:`run`: 0, or a known failure's, its message one line on stderr."""
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
