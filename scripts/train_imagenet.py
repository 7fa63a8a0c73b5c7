#!/usr/bin/env python
"""Train ResNeSt on ImageNet RecordIO files with the official Gluon recipe (the shared training flags).

Defaults reproduce the official ResNeSt-50 run (per worker: batch 128, lr 0.05; 270 epochs, cosine, 5 warmup
epochs, NAG, wd 1e-4 without decay on BN/bias, zero-init last BN gamma, label smoothing 0.1, mixup 0.2,
AutoAugment, DropBlock ramped to 0.1, the model's training size and final dropout). Boolean recipe flags can be
turned off with ``--no-<flag>`` (e.g. ``--no-mixup``); weight decay on BN/bias too with ``--wd-all``.

    horovodrun -np 8 python scripts/train_imagenet.py --rec-train train.rec --rec-val val.rec --gpus 0
    python scripts/train_imagenet.py --rec-train t.rec --no-cuda --model resnest14 --input-size 64

A run killed at any time continues with ``--resume DIR`` and, with the same flags and number of processes, ends
with the same weights as an uninterrupted run; bit-identical input batches need ``--num-workers 1``.

SIGTERM or SIGINT (what cluster schedulers send before they kill a job) stops every process at the next step
boundary: rank 0 writes a checkpoint of that step and all exit with code 5; ``--resume DIR`` continues from that
step. A second signal stops at once (the process dies of that signal) and completes no checkpoint being written.
"""
import argparse
import sys

from resnest_gluon.data.checking import check, describe_problem
from resnest_gluon.distributed import Distributed
from resnest_gluon.exits import ArgumentParser
from resnest_gluon.native_log import filter_native_stderr
from resnest_gluon.training.classification import ClassificationConfig, ClassificationTask
from resnest_gluon.training.cli import (HelpFormatter, add_training_arguments, apply_recipe, check_training_arguments,
                                       pick, recipe_in, run_config)
from resnest_gluon.training.exits import run_training
from resnest_gluon.training.recipes import DEFAULT_RECIPE, RECIPES
from resnest_gluon.training.trainer import train

BOOL = argparse.BooleanOptionalAction


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    small = RECIPES["small"].summary.split(": ", 1)[1].replace("%", "%%")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES),
                   help="defaults for a kind of data: 'imagenet' (the official recipe, every default shown below) or "
                        f"'small' (thousands of images, from scratch or fine-tuning: {small}); flags given on the "
                        "command line override the recipe")
    c = ClassificationConfig
    groups = add_training_arguments(p, dict(model=c.model, batch_size=128, num_epochs=270, lr=c.lr,
                                            lr_reference_batch=c.lr_reference_batch, lr_mode=c.lr_mode,
                                            lr_decay_epoch=c.lr_decay_epoch, num_workers=4, val_interval=5,
                                            save_interval=10, log_interval=50))
    d = groups["data"]
    d.add_argument("--input-size", type=int, default=None,
                   help="training crop (default: the model's official training size, e.g. 224 for resnest50, "
                        "256 for resnest200); also replaces the evaluation size when given")
    d.add_argument("--crop-ratio", type=float, default=None,
                   help="evaluation centre-crop ratio (default: the model's crop_pct, as scripts/verify.py)")
    d.add_argument("--check-data", action="store_true",
                   help="first decode every record of --rec-train/--rec-val (rank 0, --num-workers processes) and "
                        "refuse to train on bad ones; without it only framing, .idx and labels are checked (quick)")
    d.add_argument("--auto-aug", action=BOOL, default=c.auto_aug, help="AutoAugment (DataLoader input path)")
    d.add_argument("--min-random-area", type=float, default=c.min_random_area,
                   help="random-resized crop: smallest crop area as a fraction of the image (the recipe's 0.08; "
                        "larger keeps more of small or off-centre objects)")
    d.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the number of class names, else 1000)")
    m = groups["model"]
    m.add_argument("--pretrained", action="store_true", help="start from the published weights")
    m.add_argument("--resume-params", default=None, help="fine-tune from a .params file (classifier replaced "
                                                         "when --num-classes differs)")
    m.add_argument("--last-gamma", action=BOOL, default=c.last_gamma, help="zero-init the last BN gamma of each block")
    m.add_argument("--dropblock-prob", type=float, default=c.dropblock_prob,
                   help="DropBlock prob of the last epoch, ramped linearly from 0 (0 = off)")
    m.add_argument("--final-drop", type=float, default=None,
                   help="dropout before the classifier (default: the model's, 0.2 for resnest200/269)")
    m.add_argument("--dtype", default=c.dtype, choices=["float32", "float16"])
    o = groups["optimisation"]
    o.add_argument("--effective-lr", type=float, default=None,
                   help="the learning rate the optimizer gets, as it is (no scaling; replaces --lr)")
    o.add_argument("--classifier-lr-mult", type=float, default=c.classifier_lr_mult,
                   help="the classifier's learning rate as a multiple of the body's (--recipe small: 0.1)")
    o.add_argument("--warmup-epochs", type=int, default=c.warmup_epochs)
    o.add_argument("--warmup-lr", type=float, default=c.warmup_lr)
    o.add_argument("--optimizer", default=c.optimizer, choices=["nag", "sgd"])
    o.add_argument("--no-wd", dest="no_wd", action="store_true", default=True,
                   help="no weight decay on BN gamma/beta and biases (the recipe's default)")
    o.add_argument("--wd-all", dest="no_wd", action="store_false", help="weight decay on every parameter")
    o.add_argument("--no-no-wd", dest="no_wd", action="store_false", help=argparse.SUPPRESS)  # old spelling
    o.add_argument("--label-smoothing", type=float, default=c.label_smoothing, help="smoothing epsilon (0 = off)")
    o.add_argument("--mixup", action=BOOL, default=c.mixup)
    o.add_argument("--mixup-alpha", type=float, default=c.mixup_alpha)
    o.add_argument("--mixup-off-epoch", type=int, default=c.mixup_off_epoch, help="no mixup in the last N epochs")
    args = apply_recipe(p, recipe_in(argv, RECIPES, DEFAULT_RECIPE), argv)
    check_training_arguments(p, args)
    if not 0 <= args.dropblock_prob < 1:
        p.error(f"--dropblock-prob must be in [0, 1), got {args.dropblock_prob}")
    if args.final_drop is not None and not 0 <= args.final_drop < 1:
        p.error(f"--final-drop must be in [0, 1), got {args.final_drop}")
    if args.classifier_lr_mult < 0:
        p.error(f"--classifier-lr-mult must be >= 0, got {args.classifier_lr_mult}")
    if not 0 < args.min_random_area <= 1:
        p.error(f"--min-random-area must be in (0, 1], got {args.min_random_area}")
    if args.input_size is not None and args.input_size < 1:
        p.error(f"--input-size must be >= 1, got {args.input_size}")
    if args.crop_ratio is not None and not 0 < args.crop_ratio <= 1:
        p.error(f"--crop-ratio must be in (0, 1], got {args.crop_ratio}")
    if args.pretrained and args.resume_params:
        p.error("--pretrained and --resume-params both name the starting weights: pass one")
    if args.num_classes is not None and args.num_classes < 1:
        p.error(f"--num-classes must be >= 1, got {args.num_classes}")
    return args


def configs(args):
    """The library's typed configs of the parsed flags: ``(ClassificationConfig, RunConfig)``."""
    return pick(ClassificationConfig, args), run_config(args)


def check_data(args):
    """``--check-data``: rank 0 decodes every record (as ``python -m recordio_tools check``) while the other ranks
    wait, then all stop together on a bad record, listing them. Labels are checked against the classes later."""
    dist = Distributed()
    problems = []
    if dist.is_root:
        for flag, rec, idx in (("--rec-train", args.rec_train, args.rec_train_idx),
                               ("--rec-val", args.rec_val, args.rec_val_idx)):
            if rec:
                summary = check(rec, num_classes=args.num_classes, num_workers=args.num_workers, idx_path=idx)
                problems += [f"{flag} {rec}: {describe_problem(b)}" for b in summary["bad"]]
    if dist.allreduce_sum([len(problems)], name="check_data")[0]:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError("--check-data: bad records, not training:\n" + "\n".join(shown))


def _train(args):
    if args.check_data:
        check_data(args)
    config, run = configs(args)
    return train(ClassificationTask(config), run)


def main(argv=None):
    """Exit codes: see :mod:`resnest_gluon.training.exits` (0 done, 2 bad arguments or data, 3 NaN, 4 disk full,
    5 preempted, 6 not learning, 7 too many bad records, 8 pretrained weights unavailable)."""
    args = parse_args(argv)
    filter_native_stderr()  # MXNet's known harmless oneDNN pooling notices (see resnest_gluon/native_log.py)
    return run_training(_train, args)


if __name__ == "__main__":
    sys.exit(main())
