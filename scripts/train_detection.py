#!/usr/bin/env python
"""Train Faster or Mask R-CNN FPN on a ResNeSt backbone from detection RecordIO files (the shared training flags).

The records are what ``python -m recordio_tools pack-detection`` writes from Pascal VOC or COCO, with the class
names beside them (``PREFIX_classes.txt``); ``--model mask_rcnn_fpn_<backbone>`` trains Mask R-CNN (GluonCV's mask
targets and sigmoid cross-entropy loss besides the four box losses) on records packed with ``--masks``. Defaults are GluonCV's COCO schedule for its FPN detectors: 26 epochs,
lr x0.1 at epochs 17 and 23, 0.01 per 8 images (scaled linearly with the total batch), 1000 warm-up updates, SGD
momentum 0.9, wd 1e-4, short side 640-800, long side <= 1333.

    horovodrun -np 8 python scripts/train_detection.py --rec-train train.rec --rec-val val.rec --gpus 0 \\
        --model faster_rcnn_fpn_resnest50 --pretrained-base
    python scripts/train_detection.py --rec-train t.rec --model faster_rcnn_fpn_resnest14 \\
        --backbone-params runs/cls/ckpt-0090.params --short 320,416 --max-size 640

Checkpoints (``SAVE_DIR/ckpt-EEEE.params`` + ``.json``) carry the model, class names and evaluation transform:
``scripts/detect.py --params`` and ``scripts/eval_detection.py --params`` need nothing else. A run killed at any
time continues with ``--resume SAVE_DIR``; SIGTERM/SIGINT stop every process at the next step with a checkpoint of
it (exit code 5). Exit codes: 0 done, 2 bad arguments or data, 3 NaN/inf, 4 disk full, 5 preempted, 6 not
learning (``--stop-if-not-learning``), 7 too many undecodable records, 8 pretrained weights unavailable.
"""
import argparse
import ast
import os
import sys

from resnest_gluon.exits import ArgumentParser
from resnest_gluon.native_log import filter_native_stderr
from resnest_gluon.training.cli import HelpFormatter, add_training_arguments, check_training_arguments, ints, pick, run_config
from resnest_gluon.training.detection import DetectionConfig, DetectionTask
from resnest_gluon.training.exits import run_training
from resnest_gluon.training.trainer import train


def _model_arg(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass  # a plain word, e.g. box_head=2fc
    return key.strip(), value


def parse_args(argv=None):
    d = DetectionConfig
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    groups = add_training_arguments(p, dict(model=d.model, batch_size=1, num_epochs=26, lr=d.lr,
                                            lr_reference_batch=d.lr_reference_batch, lr_mode=d.lr_mode,
                                            lr_decay_epoch=d.lr_decay_epoch, num_workers=0, val_interval=1,
                                            save_interval=1, log_interval=20))
    g = groups["data"]
    g.add_argument("--short", type=ints, default=d.short,
                   help="training short side: one size, or MIN,MAX for a random size per image")
    g.add_argument("--max-size", type=int, default=d.max_size, help="longest side at most")
    g.add_argument("--val-short", type=int, default=None,
                   help="evaluation short side, saved with the model (default: the largest --short)")
    g.add_argument("--val-max-size", type=int, default=None, help="evaluation longest side (default: --max-size)")
    m = groups["model"]
    m.add_argument("--pretrained-base", action="store_true", help="backbone from the published ImageNet weights")
    m.add_argument("--backbone-params", default=None,
                   help="backbone from a classification weights file of this project (a checkpoint or save_trained "
                        "file of the same backbone; its classifier is left out)")
    m.add_argument("--model-arg", dest="model_args", type=_model_arg, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="detector setting, repeatable: box_head=2fc (lighter head), norm=bn|frozen_bn|syncbn, "
                        "num_sample=256 (RoIs per image), rpn_train_post_nms=1000, rpn_test_post_nms=300, ...")
    o = groups["optimisation"]
    o.add_argument("--lr-warmup", type=int, default=d.lr_warmup, help="warm-up updates (0: none)")
    o.add_argument("--lr-warmup-factor", type=float, default=d.lr_warmup_factor,
                   help="the warm-up starts at this fraction of the lr")
    o.add_argument("--clip-gradient", type=float, default=d.clip_gradient, help="0: no clipping")
    args = p.parse_args(argv)
    check_training_arguments(p, args)
    if len(args.short) not in (1, 2) or min(args.short) < 1:
        p.error(f"--short must be SIZE or MIN,MAX, got {args.short}")
    if max(args.short) > args.max_size:
        p.error(f"--short {max(args.short)} is larger than --max-size {args.max_size}")
    if args.pretrained_base and args.backbone_params:
        p.error("--pretrained-base and --backbone-params both name the backbone's weights: pass one")
    if args.backbone_params and not os.path.isfile(args.backbone_params):
        p.error(f"--backbone-params: no such file {args.backbone_params}")
    args.model_args = dict(args.model_args)
    args.short = args.short if len(args.short) == 2 else args.short * 2
    return args


def configs(args):
    """The library's typed configs of the parsed flags: ``(DetectionConfig, RunConfig)``."""
    return pick(DetectionConfig, args), run_config(args)


def main(argv=None):
    config, run = configs(parse_args(argv))
    filter_native_stderr()
    return run_training(train, DetectionTask(config), run)


if __name__ == "__main__":
    sys.exit(main())
