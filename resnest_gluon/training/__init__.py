"""Training ResNeSt on ImageNet-style RecordIO data, one process or many (Horovod).

Small modules, one job each: :mod:`.schedule` (per-step LR schedules), :mod:`.optim` (optimizer settings, no-wd
selection), :mod:`.checkpoint` (atomic checkpoints, resume), :mod:`.metrics_log` (JSON lines + PNG curves),
:mod:`.loop` (the epoch loop tying them together). Horovod glue is :mod:`resnest_gluon.distributed` and validation
is :mod:`resnest_gluon.evaluation`, shared with ``scripts/verify.py``.
"""
from ..distributed import Distributed
from .checkpoint import CheckpointManager, latest_checkpoint
from .metrics_log import MetricsLog, plot_curves
from .optim import apply_no_wd, dropblock_prob_at, optimizer_params
from .schedule import build_lr_scheduler

__all__ = ["build_lr_scheduler", "apply_no_wd", "optimizer_params", "dropblock_prob_at", "CheckpointManager",
           "latest_checkpoint", "MetricsLog", "plot_curves", "Distributed"]
