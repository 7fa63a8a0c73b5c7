"""The one training loop: everything the tasks share, for one process or many (Horovod).

A :class:`Task` (classification, detection, ...) supplies the model, the data, one step's loss, validation and what
a checkpoint saves; :func:`train` owns the rest, the same for every task:

* every rank runs the same number of steps per epoch (Horovod would hang otherwise); rank 0 alone writes files and
  shows progress;
* everything random in epoch E is seeded from (``seed``, E, rank): the input pipeline per epoch and MXNet's RNG
  before every step from (epoch seed, step), so step k's masks do not depend on the steps before it;
* atomic checkpoints that carry the model information (:mod:`resnest_gluon.trained`), ``resume`` from the latest
  complete one, decided by rank 0 for all ranks (a rank that cannot read the files gets their bytes from rank 0),
  also one written inside an epoch: with the optimizer state and schedule position restored, a run killed and
  resumed ends with the same weights as an uninterrupted one;
* one small allreduce per step carries the loss, the stop request (SIGTERM/SIGINT: every rank stops after the same
  step, rank 0 writes a checkpoint of it, :class:`~.preemption.Preempted`) and the count of bad records met;
* a NaN/inf loss or weights stop the run with the last good checkpoint kept; a checkpoint that cannot be written
  (disk full) stops every rank; undecodable records are skipped and named, too many stop the run;
* ``metrics.jsonl`` and ``curves.png``, one line per epoch, validation every ``val_interval`` epochs, the
  not-learning watch (:mod:`.health`).

How the scripts end (exit codes) is :mod:`.exits`.
"""
import hashlib
import json
import os
import random
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field

import mxnet as mx
import numpy as np

from ..data.bad_records import BadRecordLimit, TooManyBadRecords
from ..distributed import Distributed
from .bad_input import BadRecordWatch
from .checkpoint import CheckpointManager, latest_checkpoint
from .health import NotLearning
from .metrics_log import MetricsLog, plot_curves
from .preemption import Preempted, StopSignals

__all__ = ["RunConfig", "Task", "StepResult", "OptimizerSetup", "train", "TrainingDiverged", "CheckpointNotSaved",
           "ResumeMismatch", "ResumeUnreadable", "NotLearning", "TooManyBadRecords", "Preempted", "seed_everything",
           "step_seed", "param_digest", "resolve_context", "agree_on_checkpoint", "check_resume", "all_finite"]


class CheckpointNotSaved(RuntimeError):
    """Rank 0 could not write a checkpoint or log (disk full, ...); every rank stops, the last complete checkpoint
    stays the latest. Stopping beats training on: every later save would fail too, and days of training with no
    checkpoint are lost at the next preemption; after freeing space, ``--resume`` loses at most
    ``--save-interval`` epochs."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/inf; the last good checkpoint is left untouched."""


class ResumeMismatch(ValueError):
    """``--resume`` found a checkpoint made with other run settings (world size, batch size, schedule, ...)."""


class ResumeUnreadable(ValueError):
    """A rank could not get the checkpoint rank 0 resumes from (named with the host), so none starts."""


@dataclass
class RunConfig:
    """What every training run has, whatever the task (the shared flags: :mod:`.cli`)."""

    rec_train: str
    rec_val: str = None
    rec_train_idx: str = None
    rec_val_idx: str = None
    save_dir: str = "params"
    num_epochs: int = 1
    batch_size: int = 1  # per process
    seed: int = 0
    num_workers: int = 0  # data worker threads/processes
    max_steps_per_epoch: int = 0  # 0: the whole epoch
    log_interval: int = 50
    val_interval: int = 1  # epochs between validations (and after the last)
    save_interval: int = 1  # epochs between checkpoints (and after the last)
    keep_checkpoints: int = 3
    resume: str = None  # a save folder to continue from
    bad_records: BadRecordLimit = field(default_factory=BadRecordLimit)
    stop_if_not_learning: bool = False
    param_digest: bool = False  # each rank writes its weights' digest at the end (to compare ranks and runs)
    gpus: str = ""  # GPU ids, one per Horovod process; empty: CPU


@dataclass
class StepResult:
    """One step's numbers on this rank: ``loss`` (a scalar NDArray, its mean is averaged over ranks), ``means``
    (other losses, averaged over ranks: logged per step), ``counts`` (summed over ranks: hits, ...) and the number of
    ``images`` this rank saw."""

    loss: object
    images: int
    means: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)


@dataclass
class OptimizerSetup:
    """What the trainer needs to update ``params``: the optimizer's name and keywords (with its ``lr_scheduler``),
    the :class:`~.optim.LearningRate` (for the start-up line) and the settings a resumed run takes from its command
    (``resume_settings``: momentum, wd)."""

    params: object
    optimizer: str
    settings: dict
    learning_rate: object
    resume_settings: dict = field(default_factory=dict)

    @property
    def scheduler(self):
        return self.settings["lr_scheduler"]


class Task:
    """What a kind of training supplies to :func:`train`. Called on every rank, in this order: :meth:`prepare`,
    :meth:`build` (:meth:`build_model` and :meth:`build_data`, in the order the task needs), :meth:`optimizer`, then
    per epoch :meth:`begin_epoch`, per step :meth:`train_step`, at the epoch's end :meth:`summarize` and (every
    ``val_interval``) :meth:`validate`."""

    #: the curves' third panel: (epoch field, label) pairs
    scores = ()
    #: run settings a checkpoint only makes sense with (checked on resume)
    fixed_on_resume = ("model", "world", "batch_size", "steps_per_epoch")

    def prepare(self, run, dist, ctx):
        """Resolves what the run needs before anything is built (classes, model defaults) and checks the data
        files on every rank (a cut .rec, a wrong .idx or a bad label stops all ranks here, by name)."""

    def build(self, run, dist, ctx):
        """``(network, training data)``: the model first (the data pipeline may need it: detection's targets)."""
        net = self.build_model(run, dist, ctx)
        return net, self.build_data(run, dist)

    def build_model(self, run, dist, ctx):
        """The network, every parameter initialised on ``ctx`` (rank 0's weights are broadcast afterwards)."""
        raise NotImplementedError

    def build_data(self, run, dist):
        """The training data of this rank: ``len()`` steps per epoch (equal on every rank), ``set_epoch(epoch,
        skip=)``, iteration over batches, ``take_bad()`` (dataset indices of bad records met since the last call),
        ``dataset`` (with ``problem(i)``), ``source_records``, and ``bad_records`` found before training."""
        raise NotImplementedError

    def describe(self, run, dist, steps):
        """Start-up lines (rank 0 prints them)."""
        return []

    def optimizer(self, net, run, dist, steps):
        """An :class:`OptimizerSetup` for ``net``."""
        raise NotImplementedError

    def run_settings(self, run, world, steps):
        """What produced the checkpoints (recorded in each; :attr:`fixed_on_resume` of them must match)."""
        raise NotImplementedError

    def model_info(self, net):
        """The model information dict every checkpoint carries (:class:`~resnest_gluon.trained.ModelInfo`)."""
        raise NotImplementedError

    def saved_weights(self, net):
        """What a checkpoint's ``.params`` holds (anything with ``save_parameters(path)``): the network."""
        return net

    def hybridize(self, net):
        """Hybridizes ``net`` for training (fixed input shapes by default)."""
        net.hybridize(static_alloc=True, static_shape=True)

    def learning_watch(self, run, lr):
        """A :class:`~.health.LearningWatch` for this run, or None."""
        return None

    def begin_epoch(self, net, epoch, seed, first_step, run):
        """Per-epoch state (mixup, DropBlock); returns fields for the epoch's summary."""
        return {}

    def train_step(self, net, batch, ctx, epoch):
        """Forward and backward of one batch (inside ``autograd.record()``); a :class:`StepResult`."""
        raise NotImplementedError

    def summarize(self, sums, steps):
        """Epoch fields from the epoch's summed ``counts`` (and ``images``)."""
        return {}

    def validate(self, net, run, dist, ctx):
        """Validation scores over all ranks (the same numbers on each): ``{"val_...": value}``."""
        return {}

    def watch_values(self, stats):
        """``(validation score, images)`` for the not-learning watch (at chance, or at zero: :mod:`.health`), or
        ``(None, None)``."""
        return None, None

    def close(self, data):
        """Releases the data pipeline's workers."""
        close = getattr(data, "close", None)
        if close is not None:
            close()


def seed_everything(seed, epoch, rank):
    """One seed per (run seed, epoch, rank): ranks differ (mixup, DropBlock masks), epochs are reproducible."""
    s = (seed * 1_000_003 + epoch * 1_009 + rank) % 2 ** 31
    random.seed(s)
    np.random.seed(s)
    mx.random.seed(s)
    return s


def step_seed(epoch_seed, step):
    """MXNet's seed for ``step`` (0-based) of the epoch seeded with ``epoch_seed`` (set before every step)."""
    return (epoch_seed * 65_537 + step + 1) % 2 ** 31


def resolve_context(gpus, local_rank):
    """CPU unless GPUs are asked for; with Horovod one GPU per process (its local rank)."""
    if not gpus:
        return mx.cpu()
    ids = [int(g) for g in str(gpus).split(",") if g.strip()]
    if mx.context.num_gpus() == 0:
        raise ValueError(f"--gpus {gpus} given but MXNet sees no GPU (leave --gpus out to train on CPU)")
    return mx.gpu(ids[local_rank % len(ids)])


def _trainable(net):
    return [(name, p) for name, p in sorted(net._collect_params_with_prefix().items()) if p.grad_req != "null"]


def all_finite(net):
    """Whether every trainable weight is finite (checked before each checkpoint: only good weights are saved)."""
    return all(bool(mx.nd.contrib.isfinite(p.data()).min().asscalar()) for _, p in _trainable(net))


def average_running_stats(net, dist):
    """Averages the BatchNorm running mean/var over ranks (each rank saw only its shard), so the checkpoint and
    training-time validation use the same statistics on every rank, the ones ``scripts/verify.py`` then sees."""
    if dist.hvd is None:
        return
    for name, p in sorted(net._collect_params_with_prefix().items()):
        if name.endswith(("running_mean", "running_var", "moving_mean", "moving_var")):  # Gluon, symbol names
            dist.hvd.allreduce_(p.data(), op=dist.hvd.Average, name=f"bn_stats.{name}")
    # Wait here on every rank: a rank that went on and exited would shut Horovod down under the others' pending
    # allreduces (seen under load: rank 0's checkpoint write then failed with "Horovod has been shut down").
    mx.nd.waitall()


def param_digest(net):
    """SHA-256 and per-parameter sums of the trainable parameters (sorted by name), to compare ranks after
    synchronous training: the sums agree to float tolerance (the allreduce may round differently per rank in the
    last bit, so the hash can differ). BN running statistics are excluded: they are per-rank by design."""
    h = hashlib.sha256()
    total = 0.0
    sums = []
    for name, p in _trainable(net):
        arr = p.data().asnumpy().astype(np.float32)
        h.update(name.encode())
        h.update(arr.tobytes())
        total += float(np.abs(arr).sum())
        sums.append(float(arr.astype(np.float64).sum()))
    return {"sha256": h.hexdigest(), "abs_sum": total, "sums": sums}


def check_resume(ckpt, current, fixed):
    """Raises :class:`ResumeMismatch` naming every setting of ``fixed`` that differs from the checkpoint's (no
    rescaling: a schedule position in updates means other epochs under another world or batch size)."""
    stored = ckpt.get("run") or {k: ckpt[k] for k in fixed if k in ckpt}  # older checkpoints: top level
    names = {"world": "world size (processes)", "steps_per_epoch": "steps per epoch"}
    diffs = [f"{names.get(k, '--' + k.replace('_', '-'))} {stored[k]!r} in the checkpoint, {current[k]!r} now"
             for k in fixed if k in stored and k in current and stored[k] != current[k]]
    if diffs:
        raise ResumeMismatch(f"--resume: {ckpt['meta_path']} does not fit this run: {'; '.join(diffs)}. Resume "
                             f"with the same model, classes, optimizer, batch size, data and number of processes, "
                             f"or start a new run from its weights ({ckpt['params']})")


def _files_fit(ckpt):
    return all(os.path.isfile(ckpt[k]) and os.path.getsize(ckpt[k]) == size
               for k, (_, size) in ckpt["files"].items() if k in ("params", "states"))


def agree_on_checkpoint(directory, dist):
    """The checkpoint every rank resumes from: rank 0's latest complete one in ``directory`` (its metadata on every
    rank, or None on every rank). A rank whose disk lacks its files (hosts that share no disk) gets their bytes from
    rank 0 into a private temporary folder; a rank that still cannot has :class:`ResumeUnreadable` raised on every
    rank before any step, naming the host and the file. Never trains on mixed states."""
    ckpt = dist.from_root(latest_checkpoint(directory) if dist.is_root else None)
    if ckpt is None:
        return None
    missing = dist.allgather_object(None if _files_fit(ckpt) else socket.gethostname(), name="resume_missing")
    if not any(missing):
        return ckpt
    needed = [rank for rank, host in enumerate(missing) if host]
    payload = None
    if dist.is_root:
        payload = {}
        for k in ("params", "states"):
            with open(ckpt[k], "rb") as f:
                payload[k] = f.read()
    payload = dist.from_root(payload)  # every rank joins the collective; those that have the files drop it
    problem = None
    if dist.rank in needed:
        folder = None
        try:  # any failure here is said on every rank below: a rank raising alone would leave the others waiting
            folder = tempfile.mkdtemp(prefix="resume-")
            copy = {**ckpt, "received_from_rank0": folder}
            for k, data in payload.items():
                copy[k] = os.path.join(folder, os.path.basename(ckpt[k]))
                with open(copy[k], "wb") as f:
                    f.write(data)
            if not _files_fit(copy):
                raise OSError("the copy received from rank 0 does not have the checkpoint's sizes")
            ckpt = copy
        except OSError as err:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
            problem = f"host {socket.gethostname()} (rank {dist.rank}) has no {ckpt['params']} and could not take " \
                      f"rank 0's copy: {err}"
    problems = [p for p in dist.allgather_object(problem, name="resume_problems") if p]
    if problems:
        raise ResumeUnreadable(f"--resume {directory}: " + "; ".join(problems))
    if dist.is_root:
        print(f"--resume: rank(s) {', '.join(map(str, needed))} on {', '.join(sorted({missing[r] for r in needed}))} "
              f"had no copy of {os.path.basename(ckpt['params'])}: sent from rank 0", flush=True)
    return ckpt


class _StoppedAtStep(Exception):
    """All ranks agreed to stop (a signal) after ``step`` steps of ``epoch`` (0-based); ``sums`` are the epoch's
    sums so far, stored in the checkpoint so the resumed epoch's summary covers it all."""

    def __init__(self, epoch, step, sums):
        super().__init__(f"stopped after step {step} of epoch {epoch + 1}")
        self.epoch, self.step, self.sums = epoch, step, sums


def epoch_bar(dist, epoch, num_epochs, steps, first=0):
    """Rank 0's progress bar of one epoch (None on the other ranks)."""
    if not dist.is_root:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{num_epochs}", unit="step", dynamic_ncols=True)


def train(task, run):
    """Runs ``task`` with the settings of ``run`` (a :class:`RunConfig`); returns a summary dict. A SIGTERM/SIGINT
    stops every rank at the next step boundary: rank 0 writes a checkpoint of that step, then
    :class:`~.preemption.Preempted` is raised; a second signal raises :class:`~.preemption.StopNow` at once."""
    with StopSignals() as stop:  # before the data workers fork: they keep the handler (no death on SIGTERM)
        return _Training(task, run, stop).run()


class _Training:
    def __init__(self, task, run, stop):
        self.task, self.run_config, self.stop = task, run, stop

    def run(self):
        task, run = self.task, self.run_config
        dist = self.dist = Distributed()
        ctx = self.ctx = resolve_context(run.gpus, dist.local_rank)
        seed_everything(run.seed, 0, 0)  # same initial weights everywhere (rank 0's are broadcast anyway)
        os.makedirs(run.save_dir, exist_ok=True)
        self.log = MetricsLog(os.path.join(run.save_dir, "metrics.jsonl")) if dist.is_root else None
        task.prepare(run, dist, ctx)
        net, data = task.build(run, dist, ctx)
        self.net = net
        try:
            return self._train(net, data)
        finally:
            task.close(data)

    def _train(self, net, data):
        task, run, dist = self.task, self.run_config, self.dist
        bad_watch = self.bad_watch = BadRecordWatch(run.rec_train, data.source_records, run.bad_records, dist,
                                                    self.log)
        bad_watch.report(getattr(data, "bad_records", []), 0, "left out (found by the scan before training)")
        steps = self.steps = min(len(data), run.max_steps_per_epoch or len(data))
        setup = task.optimizer(net, run, dist, steps)
        dist.broadcast_parameters(net.collect_params())
        task.hybridize(net)
        self.trainer = dist.trainer(setup.params, setup.optimizer, setup.settings)
        self.base_lr = setup.learning_rate.effective
        self.run_settings = {**task.run_settings(run, dist.world, steps), "world": dist.world,
                             "steps_per_epoch": steps}
        self.model = task.model_info(net)
        start_epoch, resume_at = 0, None
        if run.resume:
            start_epoch, resume_at = self._restore(setup)
        self.saver = CheckpointManager(run.save_dir, keep=run.keep_checkpoints) if dist.is_root else None
        if dist.is_root:
            for line in task.describe(run, dist, steps):
                print(line)
            print(setup.learning_rate.describe())
            print(f"{self.run_settings['model']}: {dist.world} worker(s) x batch {run.batch_size}, {steps} "
                  f"steps/epoch, epochs {start_epoch}..{run.num_epochs}; {run.bad_records.describe()}", flush=True)

        summary = {"epochs": [], "world": dist.world, "steps_per_epoch": steps}
        watch = task.learning_watch(run, setup.learning_rate)
        for epoch in range(start_epoch, run.num_epochs):
            try:
                stats = self._train_epoch(epoch, data, resume_at)
            except _StoppedAtStep as at:  # every rank, after the same step
                self._checkpoint_and_stop(at)
            summary["epochs"].append(stats)
            resume_at = None
            self._end_epoch(epoch, stats, watch)
        summary["warnings"] = [f.to_dict() for f in (watch.findings if watch else [])]
        if dist.is_root and summary["epochs"]:
            last = summary["epochs"][-1]
            scores = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.startswith("val_") and
                               isinstance(v, float))
            kinds = ", ".join(f"{f.kind} (epoch {f.epoch})" for f in (watch.findings if watch else [])) or "none"
            print(f"done: {len(summary['epochs'])} epoch(s), last loss {last['loss']:.4g}"
                  f"{', ' + scores if scores else ''}; not-learning warnings: {kinds}", flush=True)
        if run.param_digest:
            digest = {"rank": dist.rank, **param_digest(net)}
            with open(os.path.join(run.save_dir, f"param-digest-rank{dist.rank}.json"), "w") as f:
                json.dump(digest, f)
            net.save_parameters(os.path.join(run.save_dir, f"final-rank{dist.rank}.params"))
        summary["param_digest"] = param_digest(net)
        return summary

    def _restore(self, setup):
        """``(start epoch, position inside the next epoch or None)`` after loading the checkpoint every rank agreed
        on (:func:`agree_on_checkpoint`): weights, momenta and update count; the schedule and the resuming command's
        ``resume_settings`` (momentum, wd) apply from the restored update on. ``(0, None)`` when there is none."""
        run, dist, net, trainer = self.run_config, self.dist, self.net, self.trainer
        ckpt = agree_on_checkpoint(run.resume, dist)
        if ckpt is None:
            if dist.is_root:
                print(f"--resume {run.resume}: no complete checkpoint there, starting from epoch 0")
            return 0, None
        check_resume(ckpt, self.run_settings, self.task.fixed_on_resume)
        try:
            net.load_parameters(ckpt["params"], ctx=self.ctx)
            trainer.load_states(ckpt["states"])
        finally:
            if ckpt.get("received_from_rank0"):
                shutil.rmtree(ckpt["received_from_rank0"], ignore_errors=True)
        trainer._optimizer.lr_scheduler = setup.scheduler
        for name, value in setup.resume_settings.items():
            setattr(trainer._optimizer, name, value)
        start_epoch = int(ckpt["epoch"])
        resume_at = {"step": int(ckpt["step"]), **ckpt["epoch_sums"]} if ckpt.get("step") else None
        if dist.is_root:
            print(f"resumed from {ckpt['meta_path']} (epoch {start_epoch}, step {ckpt.get('step', 0)}, update "
                  f"{ckpt['num_update']})")
            self.log.write("resume", epoch=start_epoch, step=ckpt.get("step", 0), checkpoint=ckpt["meta_path"])
        return start_epoch, resume_at

    def _save(self, epoch, **position):
        return self.saver.save(epoch, self.task.saved_weights(self.net), self.trainer, run=self.run_settings,
                               num_update=int(self.trainer._optimizer.num_update), base_lr=self.base_lr,
                               model=self.model, **position)

    def _end_epoch(self, epoch, stats, watch):
        run, dist, net, log = self.run_config, self.dist, self.net, self.log
        last = epoch + 1 == run.num_epochs
        save = (epoch + 1) % run.save_interval == 0 or last
        validate = run.rec_val and ((epoch + 1) % run.val_interval == 0 or last)
        if save or validate:
            average_running_stats(net, dist)
        if save and not all_finite(net):  # same weights on every rank: all ranks stop here together
            raise TrainingDiverged(f"weights became NaN/inf during epoch {epoch + 1} (its losses were finite); "
                                   f"not saving it, the last good checkpoint in {run.save_dir} is kept")
        if validate:
            stats.update(self.task.validate(net, run, dist, self.ctx))
        found = []
        if watch is not None:
            found = watch.update(epoch + 1, stats["loss"], *self.task.watch_values(stats))
        if found and dist.is_root:
            for finding in found:
                print(f"warning: {finding.message}", flush=True)
                log.write("warning", **finding.to_dict())
        write_error = None
        if dist.is_root:
            try:
                log.write("epoch", **stats)
                plot_curves(log.path, os.path.join(run.save_dir, "curves.png"), scores=self.task.scores)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()
                                  if not isinstance(v, (dict, list))}), flush=True)
                if save:
                    self._save(epoch + 1)
            except OSError as err:  # DiskFullError names the path and the space needed
                write_error = err
        if dist.allreduce_sum([write_error is not None], name="write_error")[0]:  # all ranks stop together
            raise CheckpointNotSaved(f"{write_error or 'rank 0 could not write its files'} (after epoch "
                                     f"{epoch + 1}); stopping, the last complete checkpoint in {run.save_dir} is kept")
        if found and run.stop_if_not_learning:  # the same findings on every rank
            raise NotLearning(f"{found[0].message} (--stop-if-not-learning: stopped after epoch {epoch + 1}; "
                              f"checkpoints in {run.save_dir})")

    def _checkpoint_and_stop(self, at):
        """Every rank: BN statistics averaged (as before any checkpoint; averaging is linear, so the end state is
        the uninterrupted run's), rank 0 writes the checkpoint of the position, then all raise :class:`Preempted`."""
        run, dist, net = self.run_config, self.dist, self.net
        average_running_stats(net, dist)
        if not all_finite(net):
            raise TrainingDiverged(f"weights became NaN/inf in epoch {at.epoch + 1} (by step {at.step}); not saving "
                                   f"them at the stop, the last good checkpoint in {run.save_dir} is kept")
        write_error, where = None, f"rank 0 wrote a checkpoint in {run.save_dir}"
        if dist.is_root:
            try:
                where = self._save(at.epoch, step=at.step, epoch_sums=at.sums)
                self.log.write("preempted", epoch=at.epoch + 1, step=at.step, checkpoint=where)
            except OSError as err:
                write_error = err
        if dist.allreduce_sum([write_error is not None], name="preempt_write_error")[0]:
            raise CheckpointNotSaved(f"{write_error or 'rank 0 could not write its files'} (stopping on a signal in "
                                     f"epoch {at.epoch + 1}); the last complete checkpoint in {run.save_dir} is kept")
        raise Preempted(f"stopped on a signal after step {at.step} of {self.steps} in epoch {at.epoch + 1}: {where}; "
                        f"continue with --resume {run.save_dir}")

    def _train_epoch(self, epoch, data, start):
        """Trains one epoch on every rank and returns its summary. ``start`` (from a checkpoint written inside this
        epoch) skips the steps before ``start["step"]`` and restores the epoch's sums, so the summary covers the
        whole epoch. After the step at which a stop was requested on any rank, raises :class:`_StoppedAtStep`."""
        task, run, dist, ctx, net, trainer, steps = (self.task, self.run_config, self.dist, self.ctx, self.net,
                                                     self.trainer, self.steps)
        seed = seed_everything(run.seed, epoch, dist.rank)
        first = start["step"] if start else 0
        extra = task.begin_epoch(net, epoch, seed, first, run)
        data.set_epoch(epoch, skip=first)
        sums = {k: v for k, v in start.items() if k not in ("step", "time_s")} if start else {}
        sums.setdefault("loss_sum", 0.0)
        sums.setdefault("images", 0.0)
        bar = epoch_bar(dist, epoch, run.num_epochs, steps, first)
        tic = time.time() - (start["time_s"] if start else 0.0)
        try:
            for i, batch in enumerate(data, start=first):
                if i >= steps:
                    break
                mx.random.seed(step_seed(seed, i), ctx=ctx)
                result = task.train_step(net, batch, ctx, epoch)
                trainer.step(result.images)
                # one small allreduce per step: all ranks see the same mean losses, counts, stop request and number
                # of bad records met, so all stop (or gather the bad records' names) together
                bad = data.take_bad()
                means, counts = sorted(result.means), sorted(result.counts)
                values = dist.allreduce_sum(
                    [float(result.loss.mean().asscalar()), *[float(_scalar(result.means[k])) for k in means],
                     *[float(_scalar(result.counts[k])) for k in counts], float(result.images),
                     float(self.stop.poll()), float(len(bad))], name="step_stats")
                step_loss = values[0] / dist.world
                step_means = {k: v / dist.world for k, v in zip(means, values[1:1 + len(means)])}
                step_counts = dict(zip(counts, values[1 + len(means):1 + len(means) + len(counts)]))
                images, stop_votes, bad_met = values[-3:]
                if bad_met:
                    self.bad_watch.gather(data.dataset, bad, epoch + 1)
                if not np.isfinite(step_loss):
                    raise TrainingDiverged(f"loss is {step_loss} at epoch {epoch + 1} step {i + 1} (of {steps}); "
                                           f"stopping, the last good checkpoint in {run.save_dir} is kept")
                sums["loss_sum"] += step_loss
                for k, v in step_means.items():
                    sums[f"{k}_sum"] = sums.get(f"{k}_sum", 0.0) + v
                for k, v in step_counts.items():
                    sums[k] = sums.get(k, 0.0) + v
                sums["images"] += images
                if dist.is_root:
                    lr, speed = trainer.learning_rate, sums["images"] / max(time.time() - tic, 1e-9)
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.4g}", img_s=f"{speed:.2f}")
                    if (i + 1) % run.log_interval == 0 or i + 1 == steps:
                        self.log.write("step", epoch=epoch + 1, step=i + 1, global_step=epoch * steps + i + 1, lr=lr,
                                       loss=step_loss, img_per_sec=speed, **step_means)
                if stop_votes:
                    raise _StoppedAtStep(epoch, i + 1, {**sums, "time_s": time.time() - tic})
        finally:
            if bar:
                bar.close()
        elapsed = time.time() - tic
        done = max(steps, 1)
        means = {k[:-len("_sum")]: v / done for k, v in sums.items() if k.endswith("_sum") and k != "loss_sum"}
        return {"epoch": epoch + 1, "loss": sums["loss_sum"] / done, **means, **task.summarize(sums, steps),
                "lr": trainer.learning_rate, "img_per_sec": sums["images"] / max(elapsed, 1e-9), "time_s": elapsed,
                **extra}


def _scalar(value):
    return value.asscalar() if isinstance(value, mx.nd.NDArray) else value

