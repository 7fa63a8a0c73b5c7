"""The one vocabulary of training flags, shared by ``scripts/train_imagenet.py``, ``scripts/train_detection.py`` (and
every training script to come): one name per setting, defined here once, with the names other tools use as aliases.

=======================  =========================================================================================
flag                     also accepted (GluonCV's scripts, this project's earlier spellings)
=======================  =========================================================================================
``--num-epochs``         ``--epochs`` (GluonCV's detection scripts)
``--num-workers``, -j    ``--data-nthreads`` (earlier here), ``--num-data-workers`` (GluonCV's classification)
``--val-interval``       ``--eval-frequency`` (earlier here)
``--save-interval``      ``--save-frequency`` (GluonCV's classification, earlier here)
``--model``              ``--network`` (GluonCV's detection scripts)
=======================  =========================================================================================

A script adds these with :func:`add_training_arguments` (its own defaults), adds its task's own flags to the
returned groups, and turns the parsed flags into the library's typed configs: :func:`run_config` for the shared
:class:`~.trainer.RunConfig`, :func:`pick` for a task's dataclass. The library never sees the Namespace.
"""
import argparse
import dataclasses
import os

from ..data.bad_records import BadRecordLimit
from .schedule import LR_MODES
from .trainer import RunConfig

__all__ = ["add_training_arguments", "check_training_arguments", "run_config", "pick", "ints", "floats", "HelpFormatter",
           "recipe_in", "apply_recipe"]


def ints(text):
    """``"17,23"`` -> ``(17, 23)`` (argparse type of the epoch and size lists)."""
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def floats(text):
    """``"0.5,2"`` -> ``(0.5, 2.0)`` (argparse type of ranges)."""
    try:
        return tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def recipe_in(argv, recipes, default):
    """The :class:`~.recipes.Recipe` ``--recipe`` names in ``argv`` (read first: it sets the other flags' defaults)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=default, choices=sorted(recipes))
    return recipes[pre.parse_known_args(argv)[0].recipe]


def apply_recipe(parser, recipe, argv):
    """Parses ``argv`` with ``recipe``'s defaults; ``args.recipe_overrides``: its settings the command line
    replaced."""
    parser.set_defaults(**recipe.defaults)
    args = parser.parse_args(argv)
    args.recipe_overrides = tuple(sorted(d for d, v in recipe.defaults.items() if getattr(args, d) != v))
    return args


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (model-dependent, said in the help) and on/off switches (said in the help)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help
        return super()._get_help_string(action)


def add_training_arguments(parser, defaults):
    """Adds the shared flags to ``parser`` with ``defaults`` (``{dest: value}`` for the settings whose default is
    the task's: ``model``, ``batch_size``, ``num_epochs``, ``lr``, ``lr_reference_batch``, ``lr_mode``,
    ``lr_decay_epoch``, ``num_workers``, ``val_interval``, ``save_interval``, ``log_interval``). Returns the
    argument groups ``{"data", "model", "optimisation", "bookkeeping"}`` for the script's own flags."""
    d = dict(defaults)
    groups = {name: parser.add_argument_group(name) for name in ("data", "model", "optimisation", "bookkeeping")}
    g = groups["data"]
    g.add_argument("--rec-train", required=True, help="training .rec")
    g.add_argument("--rec-train-idx", default=None, help="its .idx (default: next to the .rec)")
    g.add_argument("--rec-val", default=None, help="validation .rec (no validation without it)")
    g.add_argument("--rec-val-idx", default=None)
    g.add_argument("--classes", default=None, help="class names, one per line, label i on line i (default: the "
                                                   "PREFIX_classes.txt recordio_tools wrote beside --rec-train); "
                                                   "saved in every checkpoint")
    g.add_argument("--num-workers", "-j", "--data-nthreads", "--num-data-workers", dest="num_workers", type=int,
                   default=d.get("num_workers", 4), help="data decoding threads/processes")
    g.add_argument("--max-bad-records-fraction", type=float, default=BadRecordLimit.fraction,
                   help="undecodable --rec-train records are skipped and named; more than this share of them AND "
                        "more than --max-bad-records stop the run (exit code 7): the copy, not a record, is broken")
    g.add_argument("--max-bad-records", type=int, default=BadRecordLimit.count,
                   help="the number of undecodable records always let through (see --max-bad-records-fraction)")
    g = groups["model"]
    g.add_argument("--model", "--network", dest="model", default=d["model"], help="model name")
    g = groups["optimisation"]
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="per process")
    g.add_argument("--num-epochs", "--epochs", dest="num_epochs", type=int, default=d["num_epochs"])
    g.add_argument("--lr", type=float, default=d["lr"],
                   help="for --lr-reference-batch images, scaled linearly with processes x --batch-size (the "
                        "effective lr is printed at start-up)")
    g.add_argument("--lr-reference-batch", type=int, default=d["lr_reference_batch"],
                   help="the batch --lr is given for")
    g.add_argument("--lr-mode", default=d["lr_mode"], choices=LR_MODES)
    g.add_argument("--lr-decay", type=float, default=0.1, help="step mode: factor")
    g.add_argument("--lr-decay-epoch", type=ints, default=d["lr_decay_epoch"],
                   help="step mode: comma-separated epochs")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--wd", type=float, default=d.get("wd", 1e-4))
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-steps-per-epoch", type=int, default=0, help="cap steps per epoch (tests, demos)")
    g = groups["bookkeeping"]
    g.add_argument("--gpus", default="", help="GPU ids, e.g. 0 or 0,1 (one per Horovod process); none: CPU")
    g.add_argument("--no-cuda", action="store_true", help="train on CPU (the default without --gpus)")
    g.add_argument("--log-interval", type=int, default=d.get("log_interval", 50), help="steps between log lines")
    g.add_argument("--val-interval", "--eval-frequency", dest="val_interval", type=int,
                   default=d.get("val_interval", 1), help="epochs between validations (and after the last)")
    g.add_argument("--save-interval", "--save-frequency", dest="save_interval", type=int,
                   default=d.get("save_interval", 1), help="epochs between checkpoints (and after the last)")
    g.add_argument("--save-dir", default="params")
    g.add_argument("--keep-checkpoints", type=int, default=3)
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from DIR's latest complete checkpoint (weights, momenta, update count); the "
                        "model, classes, batch size, data and number of processes must match it, the other flags "
                        "(lr, schedule, epochs) apply from the restored update on")
    g.add_argument("--stop-if-not-learning", action="store_true",
                   help="stop (exit code 6) when a not-learning warning fires: after warm-up, a training loss well "
                        "above the first epoch's, no improvement for max(3, epochs/10) epochs, or (classifiers) "
                        "validation at chance")
    g.add_argument("--param-digest", action="store_true",
                   help="each rank writes param-digest-rank<R>.json (SHA-256 and per-parameter sums of its "
                        "trainable weights) and final-rank<R>.params, to compare ranks and runs")
    return groups


def check_training_arguments(parser, args, folders=False):
    """``parser.error`` naming the first shared flag out of range or file that does not exist (``folders``: the data
    may be dataset folders too)."""
    for name in ("batch_size", "num_epochs", "val_interval", "save_interval", "log_interval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.lr_decay <= 1:
        parser.error(f"--lr-decay must be in (0, 1] (the factor the step schedule multiplies by), got {args.lr_decay}")
    if not 0 <= args.max_bad_records_fraction <= 1:
        parser.error(f"--max-bad-records-fraction must be in [0, 1], got {args.max_bad_records_fraction}")
    if args.max_bad_records < 0:
        parser.error(f"--max-bad-records must be >= 0, got {args.max_bad_records}")
    if args.no_cuda:
        args.gpus = ""
    for flag, path in (("--rec-train", args.rec_train), ("--rec-val", args.rec_val), ("--classes", args.classes)):
        if path and not (os.path.isfile(path) or (folders and flag != "--classes" and os.path.isdir(path))):
            parser.error(f"{flag}: no such file {path}" + (" or folder" if folders and flag != "--classes" else ""))


def pick(cls, args, **changes):
    """The dataclass ``cls`` from the flags of the same names (the others keep their defaults), then ``changes``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in vars(args).items() if k in names}, **changes})


def run_config(args):
    """The :class:`~.trainer.RunConfig` of the parsed shared flags."""
    return pick(RunConfig, args, bad_records=BadRecordLimit(args.max_bad_records_fraction, args.max_bad_records))
