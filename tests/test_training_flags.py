"""The one vocabulary of training flags: the training scripts take the same names for the same settings, and the
other tools' names (and this project's earlier ones) as aliases, so no command written for either breaks."""
import pytest

from conftest import load_script

train_imagenet = load_script("train_imagenet")
train_detection = load_script("train_detection")
train_segmentation = load_script("train_segmentation")

SHARED = {"--num-workers": "num_workers", "--num-epochs": "num_epochs", "--val-interval": "val_interval",
          "--save-interval": "save_interval", "--batch-size": "batch_size", "--log-interval": "log_interval",
          "--keep-checkpoints": "keep_checkpoints", "--max-steps-per-epoch": "max_steps_per_epoch",
          "--seed": "seed", "--max-bad-records": "max_bad_records"}
ALIASES = {"--data-nthreads": "--num-workers", "--num-data-workers": "--num-workers", "-j": "--num-workers",
           "--epochs": "--num-epochs", "--eval-frequency": "--val-interval", "--save-frequency": "--save-interval"}


@pytest.mark.parametrize("script", [train_imagenet, train_detection, train_segmentation],
                         ids=["imagenet", "detection", "segmentation"])
def test_one_name_per_setting_and_the_old_names_as_aliases(script):
    base = ["--rec-train", __file__]
    for flag, dest in SHARED.items():
        assert getattr(script.parse_args(base + [flag, "3"]), dest) == 3, flag
    for alias, flag in ALIASES.items():
        assert getattr(script.parse_args(base + [alias, "3"]), SHARED[flag]) == 3, alias
    assert script.parse_args(base + ["--network", "resnest14"]).model == "resnest14"  # GluonCV's detection name
    config, run = script.configs(script.parse_args(base + ["--num-workers", "2", "--max-bad-records", "4",
                                                           "--max-bad-records-fraction", "0.01"]))
    assert (run.num_workers, run.bad_records.count, run.bad_records.fraction) == (2, 4, 0.01)


@pytest.mark.parametrize("script", [train_imagenet, train_detection, train_segmentation],
                         ids=["imagenet", "detection", "segmentation"])
def test_shared_flags_are_checked_alike(script, capsys):
    for flags in (["--num-epochs", "0"], ["--val-interval", "0"], ["--max-bad-records", "-1"],
                  ["--rec-val", "/no/such.rec"]):
        with pytest.raises(SystemExit):
            script.parse_args(["--rec-train", __file__] + flags)
        assert flags[0] in capsys.readouterr().err
