#!/usr/bin/env python
"""Train Faster R-CNN FPN on a ResNeSt backbone from detection RecordIO files (GluonCV flag names).

The records are what ``python -m recordio_tools pack-detection`` writes from Pascal VOC or COCO, with the class
names beside them (``PREFIX_classes.txt``). Defaults are GluonCV's COCO schedule for its FPN detectors: 26 epochs,
lr x0.1 at epochs 17 and 23, 0.01 per 8 images (scaled linearly with the total batch), 1000 warm-up updates, SGD
momentum 0.9, wd 1e-4, short side 640-800, long side <= 1333.

    horovodrun -np 8 python scripts/train_detection.py --rec-train train.rec --rec-val val.rec --gpus 0 \\
        --model faster_rcnn_fpn_resnest50 --pretrained-base
    python scripts/train_detection.py --rec-train t.rec --model faster_rcnn_fpn_resnest14 \\
        --backbone-params runs/cls/ckpt-0090.params --short 320,416 --max-size 640

Checkpoints (``SAVE_DIR/ckpt-EEEE.params`` + ``.json``) carry the model, class names and evaluation transform:
``scripts/detect.py --params`` and ``scripts/eval_detection.py --params`` need nothing else. A run killed at any
time continues with ``--resume SAVE_DIR``; SIGTERM/SIGINT stop every process at the next step with a checkpoint of
it (exit code 5). Exit codes: 0 done, 2 bad arguments or data, 3 NaN/inf, 4 disk full, 5 preempted, 7 too many
undecodable records.
"""
import argparse
import ast
import os
import sys

from resnest_gluon.native_log import filter_native_stderr
from resnest_gluon.training.detection import DetectionTrainConfig, train_detection
from resnest_gluon.training.exits import run_training
from resnest_gluon.training.schedule import LR_MODES


def _ints(text):
    return tuple(int(v) for v in str(text).split(",") if v.strip())


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
    d = DetectionTrainConfig
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--rec-train", required=True, help="training .rec (recordio_tools pack-detection)")
    g.add_argument("--rec-train-idx", default=None, help="its .idx (default: next to the .rec)")
    g.add_argument("--rec-val", default=None, help="validation .rec: mAP every --val-interval epochs")
    g.add_argument("--rec-val-idx", default=None)
    g.add_argument("--classes", default=None, help="class names, one per line (default: PREFIX_classes.txt beside "
                                                   "--rec-train); saved in every checkpoint")
    g.add_argument("--short", type=_ints, default=d.short,
                   help="training short side: one size, or MIN,MAX for a random size per image")
    g.add_argument("--max-size", type=int, default=d.max_size, help="longest side at most")
    g.add_argument("--val-short", type=int, default=None,
                   help="evaluation short side, saved with the model (default: the largest --short)")
    g.add_argument("--val-max-size", type=int, default=None, help="evaluation longest side (default: --max-size)")
    g.add_argument("--num-workers", "-j", dest="data_nthreads", type=int, default=d.data_nthreads,
                   help="data worker processes (0: in the training process)")
    g.add_argument("--max-bad-records-fraction", type=float, default=d.max_bad_records_fraction,
                   help="undecodable --rec-train records are replaced and named; more than this share stops the run")
    m = p.add_argument_group("model")
    m.add_argument("--model", "--network", dest="model", default="faster_rcnn_fpn_resnest50",
                   help="faster_rcnn_fpn_<backbone>, any ResNeSt backbone")
    m.add_argument("--pretrained-base", action="store_true", help="backbone from the published ImageNet weights")
    m.add_argument("--backbone-params", default=None,
                   help="backbone from a classification weights file of this project (a checkpoint or save_trained "
                        "file of the same backbone; its classifier is left out)")
    m.add_argument("--model-arg", dest="model_args", type=_model_arg, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="detector setting, repeatable: box_head=2fc (lighter head), norm=bn|frozen_bn|syncbn, "
                        "num_sample=256 (RoIs per image), rpn_train_post_nms=1000, rpn_test_post_nms=300, ...")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=d.batch_size, help="images per process")
    o.add_argument("--epochs", dest="num_epochs", type=int, default=d.num_epochs)
    o.add_argument("--lr", type=float, default=d.lr, help="for --lr-reference-batch images per update; scaled "
                                                          "linearly with processes x --batch-size")
    o.add_argument("--lr-reference-batch", type=int, default=d.lr_reference_batch)
    o.add_argument("--lr-mode", default=d.lr_mode, choices=LR_MODES)
    o.add_argument("--lr-decay", type=float, default=d.lr_decay)
    o.add_argument("--lr-decay-epoch", type=_ints, default=d.lr_decay_epoch, help="comma-separated epochs")
    o.add_argument("--lr-warmup", type=int, default=d.lr_warmup, help="warm-up updates (0: none)")
    o.add_argument("--lr-warmup-factor", type=float, default=d.lr_warmup_factor,
                   help="the warm-up starts at this fraction of the lr")
    o.add_argument("--momentum", type=float, default=d.momentum)
    o.add_argument("--wd", type=float, default=d.wd)
    o.add_argument("--clip-gradient", type=float, default=d.clip_gradient, help="0: no clipping")
    o.add_argument("--seed", type=int, default=d.seed)
    o.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap steps per epoch (tests, demos)")
    r = p.add_argument_group("hardware and bookkeeping")
    r.add_argument("--gpus", default="", help="GPU ids, e.g. 0 (one per Horovod process); none: CPU")
    r.add_argument("--log-interval", type=int, default=d.log_interval)
    r.add_argument("--val-interval", dest="eval_frequency", type=int, default=d.eval_frequency,
                   help="epochs between validations (and after the last)")
    r.add_argument("--save-interval", dest="save_frequency", type=int, default=d.save_frequency,
                   help="epochs between checkpoints (and after the last)")
    r.add_argument("--save-dir", default=d.save_dir)
    r.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    r.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from DIR's latest complete checkpoint (weights, momenta, update count)")
    args = p.parse_args(argv)
    for name in ("batch_size", "num_epochs", "eval_frequency", "save_frequency", "log_interval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if len(args.short) not in (1, 2) or min(args.short) < 1:
        p.error(f"--short must be SIZE or MIN,MAX, got {args.short}")
    if max(args.short) > args.max_size:
        p.error(f"--short {max(args.short)} is larger than --max-size {args.max_size}")
    if args.pretrained_base and args.backbone_params:
        p.error("--pretrained-base and --backbone-params both name the backbone's weights: pass one")
    for flag, path in (("--rec-train", args.rec_train), ("--rec-val", args.rec_val), ("--classes", args.classes),
                       ("--backbone-params", args.backbone_params)):
        if path and not os.path.isfile(path):
            p.error(f"{flag}: no such file {path}")
    args.model_args = dict(args.model_args)
    args.short = args.short if len(args.short) == 2 else args.short * 2
    return DetectionTrainConfig(**vars(args))


def main(argv=None):
    config = parse_args(argv)
    filter_native_stderr()
    return run_training(train_detection, config)


if __name__ == "__main__":
    sys.exit(main())
