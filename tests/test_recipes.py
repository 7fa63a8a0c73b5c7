"""``--recipe``: named defaults for a kind of data; explicit flags win; the classifier's own learning rate."""
import importlib.util
import os

import mxnet as mx
import pytest

from resnest_gluon.training.optim import apply_classifier_lr_mult
from resnest_gluon.training.recipes import RECIPES, SMALL, get_recipe
from resnest_gluon.zoo import get_model

_spec = importlib.util.spec_from_file_location(
    "train_script", os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "train_imagenet.py"))
train_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_script)
BASE = ["--rec-train", __file__]


def test_imagenet_is_the_default_and_changes_nothing():
    plain, named = train_script.parse_args(BASE), train_script.parse_args(BASE + ["--recipe", "imagenet"])
    assert plain.recipe == "imagenet"
    assert vars(plain) == vars(named)
    assert (plain.num_epochs, plain.lr, plain.batch_size, plain.auto_aug, plain.mixup, plain.classifier_lr_mult) == \
        (270, 0.05, 128, True, True, 1.0)


def test_small_sets_every_default_it_names():
    args = train_script.parse_args(BASE + ["--recipe", "small"])
    for dest, value in SMALL.defaults.items():
        assert getattr(args, dest) == value, dest
    assert args.recipe_overrides == ()
    assert (args.num_epochs, args.auto_aug, args.mixup, args.dropblock_prob, args.classifier_lr_mult) == \
        (8, False, False, 0.0, 0.1)


def test_flags_given_on_the_command_line_win_over_the_recipe_wherever_they_stand():
    for argv in (BASE + ["--recipe", "small", "--num-epochs", "20", "--mixup"],
                 BASE + ["--num-epochs", "20", "--mixup", "--recipe", "small"]):
        args = train_script.parse_args(argv)
        assert (args.num_epochs, args.mixup, args.warmup_epochs) == (20, True, SMALL.defaults["warmup_epochs"])
        assert args.recipe_overrides == ("mixup", "num_epochs")
        assert "given on the command line instead: --mixup, --num-epochs" in SMALL.describe(args.recipe_overrides)


def test_unknown_recipe_is_refused_with_the_known_names(capsys):
    with pytest.raises(SystemExit):
        train_script.parse_args(BASE + ["--recipe", "tiny"])
    assert "imagenet" in capsys.readouterr().err
    with pytest.raises(ValueError, match="known: imagenet, small"):
        get_recipe("tiny")


def test_every_recipe_default_is_a_flag_of_the_script():
    dests = set(vars(train_script.parse_args(BASE)))
    for recipe in RECIPES.values():
        assert set(recipe.defaults) <= dests, recipe.name


def test_classifier_lr_mult_reaches_only_the_classifier():
    net = get_model("resnest14", classes=10)
    net.initialize(mx.init.Xavier())
    names = apply_classifier_lr_mult(net, 0.1)
    assert names and all(n.startswith(net.fc.prefix) for n in names)
    mults = {n: p.lr_mult for n, p in net.collect_params().items()}
    assert {mults[n] for n in names} == {0.1}
    assert {m for n, m in mults.items() if n not in names} == {1.0}
    with pytest.raises(ValueError, match="classifier-lr-mult"):
        apply_classifier_lr_mult(net, -1)
    with pytest.raises(SystemExit):
        train_script.parse_args(BASE + ["--classifier-lr-mult", "-0.5"])
