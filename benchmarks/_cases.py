"""What ``compare.py`` times, as cases named KIND-bN (what one timed batch is, at batch size N), and issue 6's
speed goals for them.

Framework-free: cases are parsed by argparse before MXNet is imported.
"""
import argparse
from dataclasses import dataclass

import _peers


@dataclass(frozen=True)
class Kind:
    mode: str       # the peer worker's mode: "infer" or "train"
    dtype: str      # resnest_gluon.deploy's dtype name
    peers: tuple    # the peers timed beside ours
    what: str       # one timed batch, for --help and compare.json


KINDS = {
    "infer": Kind("infer", "float32", _peers.PEERS, "fp32 inference: one forward pass, output waited for (ours: "
                                                    "deploy.optimize with oneDNN fusion; GluonCV: hybridized, static "
                                                    "memory, no fusion; timm: eval mode, torch.inference_mode())"),
    "train": Kind("train", "float32", _peers.PEERS, "fp32 training step: forward + loss, backward, optimizer update "
                                                    "(ours and GluonCV: hybridized with static memory, "
                                                    "autograd.record, gluon.Trainer 'nag', mx.nd.waitall(); timm: "
                                                    "train mode, torch.optim.SGD nesterov, zero_grad/backward/step)"),
    "bf16": Kind("infer", "bfloat16", _peers.PEERS, "bfloat16 inference (ours and GluonCV: deploy.optimize's MXNet "
                                                    "AMP conversion; timm: torch CPU autocast bfloat16)"),
    "int8": Kind("infer", "int8", (), "int8 inference (ours only: deploy.optimize dtype='int8', calibrated on "
                                      "random batches since only speed is measured)"),
}
DEFAULT_CASES = ("infer-b1", "infer-b16", "train-b16", "bf16-b16", "int8-b16")


@dataclass(frozen=True)
class Case:
    kind: str
    batch_size: int

    @property
    def name(self):
        return f"{self.kind}-b{self.batch_size}"

    @property
    def spec(self):
        return KINDS[self.kind]


def parse_case(text):
    """argparse type: ``'train-b16'`` -> ``Case('train', 16)``."""
    kind, sep, batch = text.strip().lower().rpartition("-b")
    if not sep or kind not in KINDS or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f"unknown case {text!r}: expected KIND-bN with KIND one of "
                                         f"{', '.join(KINDS)} and a batch size N >= 1 (e.g. {DEFAULT_CASES[1]})")
    return Case(kind, int(batch))


@dataclass(frozen=True)
class Goal:
    case: str       # a case name
    over: str       # a peer: the goal is on ours / peer img/s; None: on our img/s
    target: float   # the value must be >= target

    @property
    def metric(self):
        return f"ours/{self.over}" if self.over else "ours img/s"


# issue 6 ("performance"), stated for resnest50@224 on CPU
GOALS = (
    Goal("infer-b1", "gluoncv", 2.5), Goal("infer-b1", "timm", 1.3),
    Goal("infer-b16", "gluoncv", 2.5), Goal("infer-b16", "timm", 1.3),
    Goal("train-b16", "gluoncv", 3.0), Goal("train-b16", "timm", 1.0),
    Goal("bf16-b16", None, 25.0), Goal("int8-b16", None, 25.0),
)


def check_goals(results):
    """Each goal for each model of the run: {label, case, metric, target, value, passed, note}; ``passed`` is None
    (with a note) when the value was not measured. Reports only: nothing here fails the run."""
    checks = []
    for label in dict.fromkeys(r["label"] for r in results):
        for goal in GOALS:
            row = next((r for r in results if r["label"] == label and r["case"] == goal.case), None)
            value, note = None, None
            if row is None:
                note = "case not run"
            elif not row["available"]:
                note = f"ours unavailable: {row['reason']}"
            elif goal.over is None:
                value = row["img_per_s"]
            elif goal.over not in row["peers"]:
                note = f"{goal.over} not run (--peers)"
            elif not row["peers"][goal.over]["available"]:
                note = f"{goal.over} unavailable: {row['peers'][goal.over]['reason']}"
            else:
                value = row["peers"][goal.over]["ours_over_peer"]
            checks.append({"label": label, "case": goal.case, "metric": goal.metric, "target": goal.target,
                           "value": value, "passed": None if value is None else value >= goal.target,
                           "note": note})
    return checks
