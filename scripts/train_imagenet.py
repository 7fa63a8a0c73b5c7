#!/usr/bin/env python
"""Train ResNeSt on ImageNet RecordIO files with the official Gluon recipe (GluonCV flag names).

Defaults reproduce the official ResNeSt-50 run (per worker: batch 128, lr 0.05; 270 epochs, cosine, 5 warmup
epochs, NAG, wd 1e-4 without decay on BN/bias, zero-init last BN gamma, label smoothing 0.1, mixup 0.2,
AutoAugment, DropBlock ramped to 0.1, the model's training size and final dropout). Boolean recipe flags can be
turned off with ``--no-<flag>`` (e.g. ``--no-mixup``); weight decay on BN/bias too with ``--wd-all``.

    horovodrun -np 8 python scripts/train_imagenet.py --rec-train train.rec --rec-val val.rec --gpus 0
    python scripts/train_imagenet.py --rec-train t.rec --no-cuda --model resnest14 --input-size 64

A run killed at any time continues with ``--resume DIR`` and, with the same flags and number of processes, ends
with the same weights as an uninterrupted run; bit-identical input batches need ``--data-nthreads 1``.

SIGTERM or SIGINT (what cluster schedulers send before they kill a job) stops every process at the next step
boundary: rank 0 writes a checkpoint of that step and all exit with code 5; ``--resume DIR`` continues from that
step. A second signal stops at once (the process dies of that signal) and completes no checkpoint being written.
"""
import argparse
import os
import sys

from resnest_gluon.native_log import filter_native_stderr
from resnest_gluon.training.exits import run_training
from resnest_gluon.training.loop import train
from resnest_gluon.training.recipes import DEFAULT_RECIPE, RECIPES, get_recipe
from resnest_gluon.training.schedule import LR_MODES

BOOL = argparse.BooleanOptionalAction


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (model-dependent, said in the help) and on/off switches (said in the help)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help
        return super()._get_help_string(action)


def _recipe_name(argv):
    """``--recipe`` alone, read first: the recipe sets the defaults of the other flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES))
    return pre.parse_known_args(argv)[0].recipe


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=_Help)
    small = RECIPES["small"].summary.split(": ", 1)[1].replace("%", "%%")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES),
                   help="defaults for a kind of data: 'imagenet' (the official recipe, every default shown below) or "
                        f"'small' (thousands of images, from scratch or fine-tuning: {small}); flags given on the command line "
                        "override the recipe")
    d = p.add_argument_group("data")
    d.add_argument("--rec-train", required=True, help="training .rec")
    d.add_argument("--rec-train-idx", default=None, help="its .idx (default: next to the .rec)")
    d.add_argument("--rec-val", default=None, help="validation .rec (no evaluation without it)")
    d.add_argument("--rec-val-idx", default=None)
    d.add_argument("--input-size", type=int, default=None,
                   help="training crop (default: the model's official training size, e.g. 224 for resnest50, "
                        "256 for resnest200); also replaces the evaluation size when given")
    d.add_argument("--crop-ratio", type=float, default=None,
                   help="evaluation centre-crop ratio (default: the model's crop_pct, as scripts/verify.py)")
    d.add_argument("--data-nthreads", "-j", type=int, default=4,
                   help="decoding threads/processes; 1 makes input batches bit-reproducible across machines")
    d.add_argument("--check-data", action="store_true",
                   help="first decode every record of --rec-train/--rec-val (rank 0, --data-nthreads processes) and "
                        "refuse to train on bad ones; without it only framing, .idx and labels are checked (quick)")
    d.add_argument("--max-bad-records-fraction", type=float, default=0.001,
                   help="undecodable --rec-train records (damaged or empty images) are skipped and named; more than "
                        "this share of them stops the run (exit code 7): the copy, not a record, is broken")
    d.add_argument("--auto-aug", action=BOOL, default=True, help="AutoAugment (DataLoader input path)")
    d.add_argument("--min-random-area", type=float, default=0.08,
                   help="random-resized crop: smallest crop area as a fraction of the image (the recipe's 0.08; "
                        "larger keeps more of small or off-centre objects)")
    d.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the number of class names, else 1000)")
    d.add_argument("--classes", default=None,
                   help="class names, one per line, label i on line i (default: the PREFIX_classes.txt that "
                        "recordio_tools wrote beside --rec-train); saved in every checkpoint")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="resnest50")
    m.add_argument("--pretrained", action="store_true", help="start from the published weights")
    m.add_argument("--resume-params", default=None, help="fine-tune from a .params file (classifier replaced "
                                                         "when --num-classes differs)")
    m.add_argument("--last-gamma", action=BOOL, default=True, help="zero-init the last BN gamma of each block")
    m.add_argument("--dropblock-prob", type=float, default=0.1,
                   help="DropBlock prob of the last epoch, ramped linearly from 0 (0 = off)")
    m.add_argument("--final-drop", type=float, default=None,
                   help="dropout before the classifier (default: the model's, 0.2 for resnest200/269)")
    m.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=128, help="per worker")
    o.add_argument("--num-epochs", type=int, default=270)
    o.add_argument("--lr", type=float, default=0.05,
                   help="per worker at --lr-reference-batch images (the recipe's 0.05 at 128), scaled linearly: "
                        "effective lr = lr x workers x batch-size / reference batch (printed at start-up)")
    o.add_argument("--lr-reference-batch", type=int, default=128, help="the per-worker batch --lr is given for")
    o.add_argument("--effective-lr", type=float, default=None,
                   help="the learning rate the optimizer gets, as it is (no scaling; replaces --lr)")
    o.add_argument("--classifier-lr-mult", type=float, default=1.0,
                   help="the classifier's learning rate as a multiple of the body's (--recipe small: 0.1)")
    o.add_argument("--lr-mode", default="cosine", choices=LR_MODES)
    o.add_argument("--lr-decay", type=float, default=0.1, help="step mode: factor")
    o.add_argument("--lr-decay-epoch", default="40,60", help="step mode: comma-separated epochs")
    o.add_argument("--warmup-epochs", type=int, default=5)
    o.add_argument("--warmup-lr", type=float, default=0.0)
    o.add_argument("--optimizer", default="nag", choices=["nag", "sgd"])
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--wd", type=float, default=1e-4)
    o.add_argument("--no-wd", dest="no_wd", action="store_true", default=True,
                   help="no weight decay on BN gamma/beta and biases (the recipe's default)")
    o.add_argument("--wd-all", dest="no_wd", action="store_false", help="weight decay on every parameter")
    o.add_argument("--no-no-wd", dest="no_wd", action="store_false", help=argparse.SUPPRESS)  # old spelling
    o.add_argument("--label-smoothing", type=float, default=0.1, help="smoothing epsilon (0 = off)")
    o.add_argument("--mixup", action=BOOL, default=True)
    o.add_argument("--mixup-alpha", type=float, default=0.2)
    o.add_argument("--mixup-off-epoch", type=int, default=0, help="no mixup in the last N epochs")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap steps per epoch (tests, demos)")
    r = p.add_argument_group("hardware and bookkeeping")
    r.add_argument("--gpus", default="", help="GPU ids, e.g. 0 or 0,1 (one per Horovod process)")
    r.add_argument("--no-cuda", action="store_true", help="train on CPU")
    r.add_argument("--stop-if-not-learning", action="store_true",
                   help="stop (exit code 6) when a not-learning warning fires: after warm-up, a training loss well "
                        "above the first epoch's, no improvement for max(3, epochs/10) epochs, or validation at chance")
    r.add_argument("--log-interval", type=int, default=50)
    r.add_argument("--eval-frequency", type=int, default=5, help="epochs between evaluations")
    r.add_argument("--save-frequency", type=int, default=10, help="epochs between checkpoints")
    r.add_argument("--save-dir", default="params")
    r.add_argument("--keep-checkpoints", type=int, default=3)
    r.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from DIR's latest complete checkpoint: weights, momenta and update count; "
                        "model, classes, optimizer, batch size, data and number of processes must match it, the "
                        "other flags (lr, schedule, epochs) apply from the restored update on")
    r.add_argument("--param-digest", action="store_true",
                   help="each rank writes param-digest-rank<R>.json (SHA-256 and per-parameter sums of its "
                        "trainable weights) and final-rank<R>.params (its weights), to compare ranks and runs")
    recipe = get_recipe(_recipe_name(argv))
    p.set_defaults(**recipe.defaults)
    args = p.parse_args(argv)
    args.recipe_overrides = sorted(d for d, v in recipe.defaults.items() if getattr(args, d) != v)
    try:
        args.lr_decay_epoch = [int(e) for e in args.lr_decay_epoch.split(",") if e.strip()]
    except ValueError:
        p.error(f"--lr-decay-epoch must be comma-separated integers, got {args.lr_decay_epoch!r}")
    for name in ("batch_size", "num_epochs", "eval_frequency", "save_frequency", "log_interval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.lr_decay <= 1:
        p.error(f"--lr-decay must be in (0, 1] (the factor the step schedule multiplies by), got {args.lr_decay}")
    if not 0 <= args.dropblock_prob < 1:
        p.error(f"--dropblock-prob must be in [0, 1), got {args.dropblock_prob}")
    if args.final_drop is not None and not 0 <= args.final_drop < 1:
        p.error(f"--final-drop must be in [0, 1), got {args.final_drop}")
    if not 0 <= args.max_bad_records_fraction <= 1:
        p.error(f"--max-bad-records-fraction must be in [0, 1], got {args.max_bad_records_fraction}")
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
    if args.classes and not os.path.isfile(args.classes):
        p.error(f"--classes: no such file {args.classes}")
    if not os.path.isfile(args.rec_train):
        p.error(f"--rec-train: no such file {args.rec_train}")
    if args.rec_val and not os.path.isfile(args.rec_val):
        p.error(f"--rec-val: no such file {args.rec_val}")
    return args


def check_data(args):
    """``--check-data``: rank 0 decodes every record (as ``python -m recordio_tools check``) while the other ranks
    wait, then all stop together on a bad record, listing them. Labels are checked against the classes later."""
    from resnest_gluon.data.checking import check, describe_problem
    from resnest_gluon.distributed import Distributed

    dist = Distributed()
    problems = []
    if dist.is_root:
        for flag, rec, idx in (("--rec-train", args.rec_train, args.rec_train_idx),
                               ("--rec-val", args.rec_val, args.rec_val_idx)):
            if rec:
                summary = check(rec, num_classes=args.num_classes, num_workers=args.data_nthreads, idx_path=idx)
                problems += [f"{flag} {rec}: {describe_problem(b)}" for b in summary["bad"]]
    if dist.allreduce_sum([len(problems)], name="check_data")[0]:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValueError("--check-data: bad records, not training:\n" + "\n".join(shown))


def _train(args):
    if args.check_data:
        check_data(args)
    train(args)


def main(argv=None):
    """Exit codes: see :mod:`resnest_gluon.training.exits` (0 done, 2 bad arguments or data, 3 NaN, 4 disk full,
    5 preempted, 6 not learning, 7 too many bad records)."""
    args = parse_args(argv)
    filter_native_stderr()  # MXNet's known harmless oneDNN pooling notices (see resnest_gluon/native_log.py)
    return run_training(_train, args)


if __name__ == "__main__":
    sys.exit(main())
