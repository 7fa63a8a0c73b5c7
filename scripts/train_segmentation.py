#!/usr/bin/env python
"""Train DeepLabV3 on a dilated ResNeSt from segmentation records or a Pascal VOC / ADE20K folder (the shared
training flags).

The records are what ``python -m recordio_tools pack-segmentation`` writes (image + lossless mask, class names beside
them in ``PREFIX_classes.txt``); a folder in Pascal VOC's layout (``JPEGImages/``, ``SegmentationClass/``,
``ImageSets/Segmentation/{train,val}.txt``) or ADE20K's (``images/``, ``annotations/``) is read as it is. Defaults
(``--recipe gluoncv``) are GluonCV's ADE20K recipe for ``deeplab_resnest*``: base size 520, crop 480, random scale
0.5-2.0, flip, blur, auxiliary FCN head, poly lr (power 0.9) from 0.005 per 16 images (GluonCV's 0.01 at two per
GPU: see resnest_gluon/training/segmentation.py), heads at 10x, SGD momentum 0.9, wd 1e-4, 120 epochs.
``--recipe small`` is for thousands of images on a few CPU cores, from a classification file of this project.

    horovodrun -np 64 -H ... python scripts/train_segmentation.py --rec-train ade_train.rec --rec-val ade_val.rec \\
        --model deeplab_resnest50 --pretrained-base --gpus 0 --batch-size 2
    python scripts/train_segmentation.py --recipe small --rec-train seg_train.rec --rec-val seg_val.rec \\
        --backbone-params out/demo/train/ckpt-0007.params

Checkpoints (``SAVE_DIR/ckpt-EEEE.params`` + ``.json``) carry the model, class names and evaluation transform:
``scripts/segment.py --params`` and ``scripts/eval_segmentation.py --params`` need nothing else. A run killed at any
time continues with ``--resume SAVE_DIR``; SIGTERM/SIGINT stop every process at the next step with a checkpoint of
it (exit code 5). Exit codes: 0 done, 2 bad arguments or data, 3 NaN/inf, 4 disk full, 5 preempted, 6 not
learning (``--stop-if-not-learning``), 7 too many undecodable records, 8 pretrained weights unavailable.
"""
import argparse
import os
import sys

from resnest_gluon.exits import ArgumentParser
from resnest_gluon.native_log import filter_native_stderr
from resnest_gluon.training.cli import (HelpFormatter, add_training_arguments, apply_recipe, check_training_arguments,
                                       floats, pick, recipe_in, run_config)
from resnest_gluon.training.exits import run_training
from resnest_gluon.training.recipes import DEFAULT_SEGMENTATION_RECIPE, SEGMENTATION_RECIPES
from resnest_gluon.training.segmentation import SegmentationConfig, SegmentationTask
from resnest_gluon.training.trainer import train

BOOL = argparse.BooleanOptionalAction


def parse_args(argv=None):
    c = SegmentationConfig
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    small = SEGMENTATION_RECIPES["small"].summary.split(": ", 1)[1].replace("%", "%%")
    p.add_argument("--recipe", default=DEFAULT_SEGMENTATION_RECIPE, choices=sorted(SEGMENTATION_RECIPES),
                   help="defaults for a kind of data: 'gluoncv' (GluonCV's ADE20K recipe, every default shown below) "
                        f"or 'small' ({small}); flags given on the command line override the recipe")
    groups = add_training_arguments(p, dict(model=None, batch_size=2, num_epochs=120, lr=c.lr,
                                            lr_reference_batch=c.lr_reference_batch, lr_mode=c.lr_mode,
                                            lr_decay_epoch=c.lr_decay_epoch, num_workers=4, val_interval=1,
                                            save_interval=1, log_interval=20))
    for action in p._actions:  # the data may be folders too
        if action.dest in ("rec_train", "rec_val"):
            action.help += " (or a Pascal VOC / ADE20K folder: its train / val split)"
        if action.dest == "model":
            action.help = ("deeplab_<backbone> (default: deeplab_ on --backbone-params' model, else "
                           "deeplab_resnest50)")
    g = groups["data"]
    g.add_argument("--layout", choices=["voc", "ade20k"], help="a dataset folder's layout (default: found)")
    g.add_argument("--base-size", type=int, default=c.base_size,
                   help="the training long side is drawn from --scale x this")
    g.add_argument("--crop-size", type=int, default=c.crop_size, help="training crop (square; small images are "
                                                                    "padded, their padding does not count)")
    g.add_argument("--scale", type=floats, default=c.scale, help="LOW,HIGH: the random long side in base sizes")
    g.add_argument("--flip-p", type=float, default=c.flip_p, help="horizontal flip probability")
    g.add_argument("--blur-p", type=float, default=c.blur_p, help="Gaussian blur probability (radius U(0, 1))")
    g.add_argument("--val-short", type=int, default=None,
                   help="evaluation short side, saved with the model (default: --base-size)")
    g.add_argument("--val-max-size", type=int, default=None,
                   help="evaluation longest side (default: the larger of --base-size and --val-short)")
    m = groups["model"]
    m.add_argument("--pretrained-base", action="store_true", help="backbone from the published ImageNet weights")
    m.add_argument("--backbone-params", default=None,
                   help="backbone from a classification weights file of this project (a checkpoint or save_trained "
                        "file; its classifier is left out)")
    m.add_argument("--output-stride", type=int, choices=(8, 16), default=c.output_stride,
                   help="8: GluonCV's (stages 3-4 dilated); 16: stage 4 dilated, ASPP rates 6/12/18, about half the "
                        "work (saved with the model)")
    m.add_argument("--decoder", action=BOOL, default=c.decoder,
                   help="DeepLabV3+'s decoder on stage 1's features (stride 4): sharper outlines, small objects "
                        "(saved with the model)")
    m.add_argument("--aux", action=BOOL, default=c.aux, help="the auxiliary FCN head on stage 3 (training only)")
    m.add_argument("--aux-weight", type=float, default=c.aux_weight, help="the auxiliary loss's weight")
    m.add_argument("--head-dropout", action=BOOL, default=c.head_dropout,
                   help="GluonCV's dropout in the heads (0.5 after ASPP, 0.1 before the classifier)")
    o = groups["optimisation"]
    o.add_argument("--lr-power", type=float, default=c.lr_power, help="poly mode: power")
    o.add_argument("--warmup-epochs", type=float, default=c.warmup_epochs, help="linear warm-up from 0")
    o.add_argument("--head-lr-mult", type=float, default=c.head_lr_mult,
                   help="the heads' learning rate as a multiple of the backbone's")
    o.add_argument("--class-weight-power", type=float, default=c.class_weight_power,
                   help="weigh each class's pixels in the loss by (commonest class's pixels / its pixels) ** POWER, "
                        "counted on up to 1000 training masks (0: unweighted, GluonCV's; 0.5: inverse square root of "
                        "the frequency, at most 10x)")
    recipe = recipe_in(argv, SEGMENTATION_RECIPES, DEFAULT_SEGMENTATION_RECIPE)
    args = apply_recipe(p, recipe, argv)
    check_training_arguments(p, args, folders=True)
    if args.pretrained_base and args.backbone_params:
        p.error("--pretrained-base and --backbone-params both name the backbone's weights: pass one")
    if args.backbone_params and not os.path.isfile(args.backbone_params):
        p.error(f"--backbone-params: no such file {args.backbone_params}")
    if len(args.scale) != 2 or not 0 < args.scale[0] <= args.scale[1]:
        p.error(f"--scale must be LOW,HIGH with 0 < LOW <= HIGH, got {args.scale}")
    for flag in ("base_size", "crop_size"):
        if getattr(args, flag) < 8:
            p.error(f"--{flag.replace('_', '-')} must be at least 8, got {getattr(args, flag)}")
    for flag in ("flip_p", "blur_p"):
        if not 0 <= getattr(args, flag) <= 1:
            p.error(f"--{flag.replace('_', '-')} must be in [0, 1], got {getattr(args, flag)}")
    if args.aux_weight < 0:
        p.error(f"--aux-weight must be >= 0, got {args.aux_weight}")
    return args


def configs(args):
    """The library's typed configs of the parsed flags: ``(SegmentationConfig, RunConfig)``."""
    return pick(SegmentationConfig, args), run_config(args)


def main(argv=None):
    config, run = configs(parse_args(argv))
    filter_native_stderr()
    return run_training(train, SegmentationTask(config), run)


if __name__ == "__main__":
    sys.exit(main())
