"""Training, one process or many (Horovod): one trainer (:mod:`.trainer`) and its tasks.

:mod:`.trainer` owns what every task shares (equal steps per rank, seeding, the step loop with its allreduce and
stop poll, validation cadence, metrics and curves, atomic self-describing checkpoints, resume, preemption, NaN stop,
bad records, the not-learning watch); a task supplies model, data, one step's loss and validation:
:mod:`.classification` (the official ResNeSt recipe), :mod:`.detection` (Faster R-CNN FPN). :mod:`.cli` is the one
vocabulary of training flags; :mod:`.exits` how the scripts end. Small modules, one job each: :mod:`.schedule`,
:mod:`.optim`, :mod:`.checkpoint`, :mod:`.metrics_log`, :mod:`.health`, :mod:`.preemption`, :mod:`.bad_input`,
:mod:`.recipes`.
"""
from .checkpoint import CheckpointManager, latest_checkpoint
from .metrics_log import MetricsLog, plot_curves
from .optim import apply_no_wd, dropblock_prob_at, optimizer_params
from .schedule import build_lr_scheduler
from .trainer import RunConfig, Task, train

__all__ = ["train", "Task", "RunConfig", "build_lr_scheduler", "apply_no_wd", "optimizer_params",
           "dropblock_prob_at", "CheckpointManager", "latest_checkpoint", "MetricsLog", "plot_curves"]
