"""What ``compare.py`` times, as cases named KIND-bN (what one timed batch is, at batch size N), the sides each
kind is timed on, and the speed goals set for them.

A side is one implementation in one engine: ours in MXNet (``ours-mxnet``) and our exported ONNX file in ONNX Runtime
and OpenVINO (``ours-onnxruntime``, ``ours-openvino``); the peers GluonCV (MXNet), timm (eager PyTorch) and timm's
``torch.onnx`` export in the same two engines (``timm-onnxruntime``, ``timm-openvino``).

Framework-free: cases are parsed by argparse before MXNet is imported.
"""
import argparse
from dataclasses import dataclass

OURS = ("ours-mxnet", "ours-onnxruntime", "ours-openvino")
PEERS = ("gluoncv", "timm", "timm-onnxruntime", "timm-openvino")
SIDES = OURS + PEERS
BEST_OURS, BEST_PEER = "best ours", "best peer"


def engine_of(side):
    """``'ours-openvino'`` -> ``'openvino'``; ``None`` for a side that is not an ONNX file in an engine."""
    _, _, engine = side.partition("-")
    return engine if engine in ("onnxruntime", "openvino") else None


@dataclass(frozen=True)
class Kind:
    mode: str       # the peer worker's mode: "infer" or "train"
    dtype: str      # resnest_gluon.deploy's dtype name
    sides: tuple    # the sides that offer this kind (the others are reported n/a, with the reason)
    what: str       # one timed batch, for --help and compare.json


KINDS = {
    "infer": Kind("infer", "float32", SIDES,
                  "fp32 inference: one forward pass, output waited for (ours-mxnet: deploy.optimize with oneDNN "
                  "fusion; gluoncv: hybridized, static memory, no fusion; timm: eval mode, torch.inference_mode(); "
                  "*-onnxruntime / *-openvino: the ONNX file in the engine, set up as resnest_gluon.deploy.engines "
                  "does)"),
    "train": Kind("train", "float32", ("ours-mxnet", "gluoncv", "timm"),
                  "fp32 training step: forward + loss, backward, optimizer update (ours and GluonCV: hybridized "
                  "with static memory, autograd.record, gluon.Trainer 'nag', mx.nd.waitall(); timm: train mode, "
                  "torch.optim.SGD nesterov, zero_grad/backward/step)"),
    "bf16": Kind("infer", "bfloat16", ("ours-mxnet", "ours-openvino", "gluoncv", "timm", "timm-openvino"),
                 "bfloat16 inference (ours-mxnet and gluoncv: deploy.optimize's MXNet AMP conversion; timm: torch "
                 "CPU autocast bfloat16; *-openvino: OpenVINO's bf16 precision hint; ONNX Runtime has no bfloat16 "
                 "CPU kernels for these operators)"),
    "int8": Kind("infer", "int8", ("ours-mxnet", "ours-onnxruntime", "ours-openvino", "timm-onnxruntime",
                                   "timm-openvino"),
                 "int8 inference (ours-mxnet: deploy.optimize dtype='int8'; *-onnxruntime / *-openvino: the ONNX "
                 "file quantized by deploy.onnx_quantize (ONNX Runtime static QDQ quantization, per-channel), "
                 "timm's file the same way after ONNX Runtime's quant_pre_process; all calibrated on random "
                 "batches since only speed is measured)"),
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


# what each group of goals compares (the key is the goal's "group" in compare.json)
GOAL_GROUPS = {
    "mxnet": "our MXNet path (ours-mxnet) against GluonCV and timm, and its low-precision img/s",
    "onnx-file": "our ONNX file against timm's, in the same engine",
    "best": "the fastest of ours against the fastest peer",
}


@dataclass(frozen=True)
class Goal:
    group: str      # a key of GOAL_GROUPS
    case: str       # a case name
    side: str       # a side, or BEST_OURS
    over: str       # a side or BEST_PEER: the goal is on side / over img/s; None: on side's img/s
    target: float   # the value must be >= target

    @property
    def metric(self):
        return f"{self.side}/{self.over}" if self.over else f"{self.side} img/s"

    @property
    def name(self):
        """What it asks for, e.g. ``'infer-b1: ours-onnxruntime/timm-onnxruntime >= 1.1'``."""
        return f"{self.case}: {self.metric} >= {self.target:g}"


# stated for resnest50@224 on CPU
GOALS = (
    Goal("mxnet", "infer-b1", "ours-mxnet", "gluoncv", 2.5), Goal("mxnet", "infer-b1", "ours-mxnet", "timm", 1.3),
    Goal("mxnet", "infer-b16", "ours-mxnet", "gluoncv", 2.5), Goal("mxnet", "infer-b16", "ours-mxnet", "timm", 1.3),
    Goal("mxnet", "train-b16", "ours-mxnet", "gluoncv", 3.0), Goal("mxnet", "train-b16", "ours-mxnet", "timm", 1.0),
    Goal("mxnet", "bf16-b16", "ours-mxnet", None, 25.0), Goal("mxnet", "int8-b16", "ours-mxnet", None, 25.0),
    Goal("onnx-file", "infer-b1", "ours-onnxruntime", "timm-onnxruntime", 1.1),
    Goal("onnx-file", "infer-b16", "ours-onnxruntime", "timm-onnxruntime", 1.1),
    Goal("onnx-file", "infer-b1", "ours-openvino", "timm-openvino", 1.1),
    Goal("onnx-file", "infer-b16", "ours-openvino", "timm-openvino", 1.1),
    Goal("onnx-file", "bf16-b16", "ours-openvino", "timm-openvino", 1.1),
    Goal("best", "infer-b1", BEST_OURS, BEST_PEER, 1.2), Goal("best", "infer-b16", BEST_OURS, BEST_PEER, 1.2),
    Goal("best", "bf16-b16", BEST_OURS, BEST_PEER, 1.2), Goal("best", "int8-b16", BEST_OURS, BEST_PEER, 1.2),
)
assert {goal.group for goal in GOALS} == set(GOAL_GROUPS)


def best(row, group):
    """The fastest available side of ``group`` (OURS or PEERS) in a result row, or None."""
    timed = [(s["img_per_s"], name) for name, s in row["sides"].items() if name in group and s["available"]]
    return max(timed)[1] if timed else None


def _side_value(row, name):
    """(img/s, None) of a side (or of the best of ours / of the peers), or (None, why not)."""
    if name in (BEST_OURS, BEST_PEER):
        side = best(row, OURS if name == BEST_OURS else PEERS)
        return (None, f"no side of {'ours' if name == BEST_OURS else 'the peers'} ran") if side is None else \
            (row["sides"][side]["img_per_s"], None)
    side = row["sides"].get(name)
    if side is None:
        return None, f"{name} not run (--backends / --peers)"
    if not side["available"]:
        return None, f"{name} unavailable: {side['reason']}"
    return side["img_per_s"], None


def check_goals(results):
    """Each goal for each model of the run: {group, goal, label, case, metric, target, value, passed, note} (group: a
    key of GOAL_GROUPS; goal: :attr:`Goal.name`); ``passed`` is None (with a note) when the value was not measured.
    Reports only: nothing here fails the run."""
    checks = []
    for label in dict.fromkeys(r["label"] for r in results):
        for goal in GOALS:
            row = next((r for r in results if r["label"] == label and r["case"] == goal.case), None)
            value, note = None, None
            if row is None:
                note = "case not run"
            else:
                value, note = _side_value(row, goal.side)
                if value is not None and goal.over:
                    over, note = _side_value(row, goal.over)
                    value = None if over is None else value / over
            checks.append({"group": goal.group, "goal": goal.name, "label": label, "case": goal.case, "metric": goal.metric,
                           "target": goal.target, "value": value,
                           "passed": None if value is None else value >= goal.target, "note": note})
    return checks
