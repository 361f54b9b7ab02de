"""One trainer for every task. The task adapter says how to move a batch, compute the loss and score; the
finetune plan says what trains at which LR; loop.py has the passes of an epoch (train_one_epoch, evaluate) and
state.py what a checkpoint holds of the run (TrainState); rundir.py's RunDir writes the run directory
(docs/run-directory.md); this module runs the epochs. A run's lifecycle is `train()`'s alone: the process group
under torchrun joined and left, the run directory checked, locked and released, train.log kept.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader

from visiontl import __version__
from visiontl.backbones import create_backbone
from visiontl.config import Config, with_absolute_paths
from visiontl.data.sampling import EpochSampler, GroupedBatchSampler
from visiontl.data.cache import cache_budget, preload_images, release
from visiontl.data.device_pipeline import DeviceItems
from visiontl.data.device_pipeline import describe as describe_pipeline
from visiontl.engine import distributed as dist
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.engine.environment import Stopwatch
from visiontl.engine.loop import Fit, evaluate, rate, train_one_epoch
from visiontl.engine.resilience import (
    EpochProgress,
    ResumableBatches,
    SkipBadImages,
    StoppedInValidation,
    StopRequest,
    stop_signals_blocked,
    translated_worker_errors,
    worker_start,
)
from visiontl.engine.rundir import EarlyLog, RunDir
from visiontl.engine.seed import seed_everything, set_rng_state
from visiontl.engine.state import TrainState, scalars
from visiontl.errors import CheckpointError, ConfigError, Interrupted
from visiontl.finetune import (Phase, apply_phase, describe_phases, group_lrs, param_groups, phase_at, phase_record,
                               plan_phases, set_train_mode)
from visiontl.tasks import get_task
from visiontl.text import printable
from visiontl.tracking import Tracker

log = logging.getLogger("visiontl")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for but no CUDA device is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: torch.device, amp: bool) -> tuple[contextlib.AbstractContextManager, torch.dtype | None]:
    """bf16 autocast where the GPU supports it, else fp16 (which needs a grad scaler); nothing on CPU."""
    if device.type != "cuda" or not amp:
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype), dtype


def make_loader(dataset: Any, sampler: Any, batch_size: int, workers: int, collate: Any, device: torch.device,
                groups: list[int] | None = None, resumable: bool = False) -> DataLoader:
    """`groups` (one id per dataset index) makes every batch come from one group: data.group_aspect_ratio.
    `resumable` batches can skip the first batches of a pass (`loader.batch_sampler.skip`): a resumed epoch."""
    batching: dict[str, Any] = {"batch_size": batch_size, "sampler": sampler}
    if groups is not None and len(set(groups)) > 1:
        batching = {"batch_sampler": GroupedBatchSampler(sampler, groups, batch_size)}
    if resumable:
        # (the epoch is set on `sampler` itself, which every batch sampler here draws from)
        batches = batching.get("batch_sampler") or BatchSampler(sampler, batch_size, drop_last=False)
        batching = {"batch_sampler": ResumableBatches(batches)}
    return _Loader(
        dataset,
        **batching,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=worker_start,
    )


class _Loader(DataLoader):
    """Workers forked with SIGINT/SIGTERM blocked, so no signal to the process group reaches one before
    resilience.worker_start has decided what it does with them."""

    def _get_iterator(self) -> Any:
        with stop_signals_blocked():
            return super()._get_iterator()


def build_optimizer(cfg: Config, groups: list[dict]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)


def checkpoint_dict(cfg: Config, task: Any, data: Any, model: torch.nn.Module, backbone: Any, **state: Any) -> dict[str, Any]:
    return {
        **task.checkpoint_extras(data),
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "classes": list(data.classes),
        "task": cfg.task,
        "backbone_prefix": task.backbone_prefix,
        "normalization": {"mean": list(backbone.mean), "std": list(backbone.std)},
        "visiontl_version": __version__,
        # data.val as a fraction: the val images, so resume, evaluate and export take the same ones
        "val_files": data.holdout.files if data.holdout is not None else None,
        **state,
    }


def log_data_choices(data: Any) -> None:
    """What the data preparation decided beyond the summary: the val split taken from train, the images left
    out by data.on_bad_image=skip (each named)."""
    if data.holdout is not None:
        log.info("data.val: %s", data.holdout.describe())
        if dist.active():  # each rank chose from its own listing of the files: they must agree
            dist.same_on_every_rank("\n".join(data.holdout.files), "the val split taken from the train split")
    if data.left_out:
        log.warning("data.on_bad_image=skip: %d image(s) left out before training:", len(data.left_out))
        for line in data.left_out:
            log.warning("  left out: %s", printable(line, 500))


def train(cfg: Config, resume: bool = False, force: bool = False, log_file: bool = False) -> dict[str, Any]:
    """Run `cfg` end to end and return the final val metrics. A run directory holding another run is
    refused unless `resume` (continue it) or `force` (start over); one in use by another run is refused.
    `log_file`: the log also goes to <run.dir>/train.log, once the run has started.
    Under torchrun the process group is joined here and left at the end (distributed.session); rank 0 alone
    logs progress and writes the run directory."""
    # the process group, the run directory's lock and train.log: released however train ends
    with contextlib.ExitStack() as held:
        held.enter_context(dist.session(cfg.train.device))
        return _train(cfg, resume, force, log_file, held)


@dataclass
class _Run:
    """What the stages of one run share once its data is read and its model built."""

    cfg: Config
    task: Any
    data: Any
    backbone: Any
    model: torch.nn.Module  # the plain model: it trains (wrapped, see Fit.model), evaluates and is saved
    device: torch.device
    run_dir: RunDir  # writes nothing on ranks other than 0
    main: bool  # rank 0 (or the only process): it validates and writes the run directory
    watch: Stopwatch
    resumed: dict[str, Any] | None  # --resume: the checkpoint the run continues
    cached: list[str] = field(default_factory=list)  # the images this run put in data.cache

    @property
    def last_path(self) -> Path:
        return self.run_dir.checkpoint_path("last")


def _train(cfg: Config, resume: bool, force: bool, log_file: bool, held: contextlib.ExitStack) -> dict[str, Any]:
    """Everything that can refuse the run (the run directory, the config, the data, the checkpoint to resume,
    the model) comes before `_start_run`; before it nothing is written, train.log included."""
    watch = Stopwatch()
    cfg = with_absolute_paths(cfg)  # the run's config.yaml and checkpoints then work from any folder
    run_dir = RunDir(cfg.run.dir, writes=dist.is_main())
    run_dir.check(resume, force)
    early_log = held.enter_context(EarlyLog(log)) if log_file and run_dir.writes else None
    run = _prepare(cfg, run_dir, resume, watch)
    start = functools.partial(_start_run, run, held, early_log, resume, force)
    closed_form = run.task.fits_in_closed_form(cfg)
    # Features for a closed-form head are extracted once, so without augmentation.
    train_set, val_set = run.task.datasets(cfg, run.data, run.backbone,
                                           augment=not (cfg.train.overfit_batches or closed_form))
    if closed_form:
        if dist.active():
            raise ConfigError(f"model.head: {cfg.model.head!r} is fitted in one process; run it without torchrun")
        return _fit_closed_form(run, train_set, val_set, start())
    try:
        return _fit(run, train_set, val_set, start)
    finally:
        release(run.cached)  # data.cache: this run's pixels leave memory with it


def _prepare(cfg: Config, run_dir: RunDir, resume: bool, watch: Stopwatch) -> _Run:
    """Read and check what the run needs, writing nothing: the checkpoint it resumes, the data, the model."""
    last_path = run_dir.checkpoint_path("last")
    resumed = load_checkpoint(last_path) if resume else None
    if resumed is not None:
        _check_resumable(cfg, resumed, last_path)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    if dist.active():
        log.info("distributed: rank %d of %d, backend %s", dist.rank(), dist.world_size(), dist.backend())
    device = dist.device_for(resolve_device(cfg.train.device))
    task = get_task(cfg)
    # every file checked before anything is written or built; a resumed run keeps its own val split
    data = task.prepare_data(cfg, val_files=resumed.get("val_files") if resumed is not None else None)
    Tracker.require(cfg)  # a missing tracking package stops here, before anything is written
    log.info("data: %s", data.summary())
    log_data_choices(data)
    if resumed is not None and list(resumed["classes"]) != data.classes:
        raise CheckpointError(f"{last_path}: trained on classes {printable(resumed['classes'], 300)}, the data now "
                              f"has {printable(data.classes, 300)}")
    backbone = create_backbone(cfg.model.backbone, cfg.model.weights, log=log.info)
    model = task.build_model(cfg, backbone, data.classes)
    log.info(
        "model: %s on %s (%d stages, %s weights), %.2fM parameters, device %s",
        cfg.model.arch, cfg.model.backbone, backbone.num_stages, cfg.model.weights,
        sum(p.numel() for p in model.parameters()) / 1e6, device,
    )
    return _Run(cfg, task, data, backbone, model, device, run_dir, dist.is_main(), watch, resumed)


def _start_run(run: _Run, held: contextlib.ExitStack, early_log: EarlyLog | None, resume: bool, force: bool) -> Tracker:
    """Take the run directory (lock it; for a new run remove the previous run's files) and write its first
    files. An unusable tracking store still stops the run here, before training (tracking.py)."""
    run_dir = held.enter_context(run.run_dir.open(resume, force))  # (the other ranks' RunDir writes nothing)
    if early_log is not None:
        run_dir.start_train_log(early_log)
    if run.cfg.run.tensorboard:
        run_dir.record_tensorboard()
    run_dir.write_config(run.cfg)
    run_dir.write_data_record(run.data)
    return Tracker.open(run.cfg, run_dir.path, run.main, int(run.resumed["epoch"]) if run.resumed is not None else None)


@dataclass
class Checkpoints:
    """checkpoints/last.pt (after every epoch, and mid-epoch) and best.pt: the model and the TrainState that
    resumes it. Only rank 0 writes them."""

    run: _Run
    optimizer: torch.optim.Optimizer
    scaler: Any
    steps_per_epoch: int

    def save(self, state: TrainState, phase: Phase, progress: EpochProgress | None = None, best: bool = False) -> None:
        """last.pt (and, `best`, best.pt) as `state` stands; `progress`: a mid-epoch checkpoint."""
        if not self.run.main:
            return
        r = self.run
        extra = state.to_checkpoint(self.optimizer, self.scaler, self.steps_per_epoch, phase.index, progress)
        r.run_dir.save_checkpoint(checkpoint_dict(r.cfg, r.task, r.data, r.model, r.backbone, **extra), best)


@dataclass
class _Loaders:
    train: DataLoader
    val: DataLoader
    val_set: Any  # what validation runs on (in overfit mode, the train set)
    train_sampler: Any  # its epoch is set before each pass
    n_train: int  # images per epoch, for run.json
    n_val: int


@dataclass
class _Loop:
    """What every epoch of a run trained by gradient steps uses."""

    run: _Run
    loaders: _Loaders
    optimizer: torch.optim.Optimizer
    scaler: Any
    autocast: contextlib.AbstractContextManager
    phases: list[Phase]
    checkpoints: Checkpoints
    tracker: Tracker
    stop: StopRequest
    wrapped: torch.nn.Module | None = None  # the DDP wrapper, rebuilt when a phase changes what trains
    wrapped_phase: int | None = None
    trainable: int = 0  # trainable parameters of the phase in hand


def _fit(run: _Run, train_set: Any, val_set: Any, start: Callable[[], Tracker]) -> dict[str, Any]:
    """Gradient training: the finetune plan's epochs, each trained, validated and checkpointed."""
    cfg, t = run.cfg, run.cfg.train
    autocast, scaler = _place_model(run)
    loaders = _make_loaders(run, train_set, val_set)
    steps_per_epoch = math.ceil(len(loaders.train) / t.accumulate)
    phases = plan_phases(cfg, run.backbone.num_stages, steps_per_epoch)
    for line in describe_phases(phases, run.backbone.num_stages, steps_per_epoch, t):
        log.info("%s", line)
    if cfg.finetune.freeze_stages and cfg.finetune.strategy != "partial":
        log.warning("finetune.freeze_stages=%d is ignored: only finetune.strategy 'partial' reads it, this run's is %r",
                    cfg.finetune.freeze_stages, cfg.finetune.strategy)
    optimizer = build_optimizer(cfg, param_groups(run.model, run.backbone, t.weight_decay))
    state = _resume(run, optimizer, scaler)
    if run.resumed is not None:
        run.run_dir.keep_log_rows(state.epoch)
    tracker = start()
    checkpoints = Checkpoints(run, optimizer, scaler, steps_per_epoch)
    with StopRequest() as stop:  # SIGINT / SIGTERM: finish the step, write last.pt, stop
        loop = _Loop(run, loaders, optimizer, scaler, autocast, phases, checkpoints, tracker, stop)
        _run_epochs(loop, state)
    final = {**state.metrics, "best": {t.monitor: state.best["value"], "epoch": state.best["epoch"]}}
    dist.write_test_digest(run.model)
    if run.main:
        run.run_dir.write_evaluation(final, run.task, run.model, loaders.val_set, run.device, autocast, run.data.classes)
        run.run_dir.write_run_json("train", cfg.task, run.device, run.watch, loaders.n_train, loaders.n_val,
                                   phases=phase_record(phases, run.backbone.num_stages, state.step))
        run.run_dir.write_report()
        tracker.finish(run.run_dir.path)
    dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written the run
    return final


def _place_model(run: _Run) -> tuple[contextlib.AbstractContextManager, Any]:
    """The model on its device (SyncBatchNorm under DDP when asked); the autocast and grad scaler of train.amp."""
    run.model = dist.sync_batchnorm(run.model, run.cfg.train.sync_bn, run.device)
    run.model.to(run.device)
    if run.device.type == "cuda":
        run.model.to(memory_format=torch.channels_last)
        # Autotuning runs once per new input shape: a win for fixed-size batches, minutes lost on detection
        # (measured on an H200: 85 s of a first BCCD epoch; docs/benchmarks.md).
        torch.backends.cudnn.benchmark = run.task.fixed_shapes and not run.cfg.train.deterministic
    autocast, amp_dtype = autocast_for(run.device, run.cfg.train.amp)
    return autocast, torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)


def _make_loaders(run: _Run, train_set: Any, val_set: Any) -> _Loaders:
    cfg, t, task = run.cfg, run.cfg.train, run.task
    if t.overfit_batches:
        # Sanity mode: the same first N batches, unaugmented, for training and for validation.
        subset = t.overfit_batches * t.batch_size
        train_sampler = EpochSampler(len(train_set), shuffle=False, seed=t.seed, subset=subset)
        val_set, val_sampler = train_set, EpochSampler(len(train_set), shuffle=False, seed=t.seed, subset=subset)
        log.info("overfit mode: training and validating on the same %d fixed batches", t.overfit_batches)
    else:
        train_sampler = EpochSampler(len(train_set), shuffle=True, seed=t.seed)
        val_sampler = EpochSampler(len(val_set), shuffle=False, seed=t.seed)
    _fill_cache(run, train_set.image_files() + val_set.image_files())
    # Training and validation are sharded across ranks (distributed.py says how).
    groups = task.batch_groups(train_set)
    epoch_sampler = dist.shard(train_sampler)
    (train_items, train_collate), (val_items, val_collate) = (_loader_items(run, s) for s in (train_set, val_set))
    train_loader = make_loader(SkipBadImages(train_items) if cfg.data.on_bad_image == "skip" else train_items,
                               epoch_sampler, t.batch_size, t.workers, train_collate, run.device, groups, resumable=True)
    val_loader = make_loader(val_items, dist.val_shard(val_sampler, t.batch_size), t.batch_size, t.workers,
                             val_collate, run.device)
    log.info("%s", describe_pipeline(cfg.data.augment_on, cfg.task, run.device, run.device.type == "cuda"))
    if dist.active():
        log.info("validation: %s", dist.describe_shards(len(val_sampler), t.batch_size, dist.world_size()))
    return _Loaders(train_loader, val_loader, val_set, epoch_sampler, len(train_sampler), len(val_sampler))


def _loader_items(run: _Run, dataset: Any) -> tuple[Any, Callable[[list[Any]], Any]]:
    """What a loader of `dataset` reads, and its collate: the dataset itself, or under data.augment_on device
    its uint8 items, finished on the device by the task (data/device_pipeline.py)."""
    if run.cfg.data.augment_on == "cpu":
        return dataset, run.task.collate
    items = DeviceItems(dataset, decode_jpegs=run.device.type == "cuda")
    return items, items.collate


def _fill_cache(run: _Run, files: list) -> None:
    """data.cache: decode `files` into memory before the loaders start (data/cache.py); run.cached keeps what
    this run put there, for `_fit` to drop when training ends."""
    cfg, names = run.cfg, [str(f) for f in files]
    # torchrun's processes on this machine each hold a copy
    budget = cache_budget(cfg.data.cache, names, cfg.data.cache_max_gb, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if budget is not None:
        preload_images(names, budget, threads=max(1, cfg.train.workers), progress=cfg.train.progress)
        run.cached = names


def _resume(run: _Run, optimizer: torch.optim.Optimizer, scaler: Any) -> TrainState:
    """A new run's TrainState, or (--resume) the checkpoint's, with the model, optimizer, scaler and RNGs as
    they were saved."""
    resumed, last_path = run.resumed, run.last_path
    if resumed is None:
        return TrainState()
    try:
        run.model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        # torch's message: a header line, then one line per mismatch; the first two say what is wrong
        what = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
        raise CheckpointError(f"--resume: {last_path} does not fit the model this config builds "
                              f"({printable(what, 300)}); resume with the run's own config, or choose another "
                              "run.dir") from None
    scaler.load_state_dict(resumed["scaler"])
    state = TrainState.from_checkpoint(resumed)
    set_rng_state(resumed["rng"])
    if resumed.get("progress"):
        log.info("resumed from %s in epoch %d after %d batches, step %d", last_path, state.epoch + 1,
                 state.progress.batches, state.step)
    else:
        log.info("resumed from %s at epoch %d, step %d", last_path, state.epoch, state.step)
    return state


def _run_epochs(loop: _Loop, state: TrainState) -> None:
    """From `state` to train.epochs (or train.max_steps, or early stopping); a stop signal writes last.pt and
    ends the run with Interrupted."""
    run, t, stop = loop.run, loop.run.cfg.train, loop.stop
    start_epoch = state.epoch
    for epoch in range(start_epoch, _epochs_to_run(loop)):
        if t.max_steps is not None and state.step >= t.max_steps:
            break
        if dist.step_flags(torch.zeros(()), stop.requested)[1] and epoch > start_epoch:
            # the signal came during validation or the checkpoint: last.pt already holds this point
            raise Interrupted(f"stopped by {signal.Signals(stop.signal or signal.SIGTERM).name} after epoch {epoch}: "
                              f"{run.last_path} written; add --resume to continue", stop.signal or signal.SIGTERM)
        fit = _begin_epoch(loop, epoch, state.step, epoch == start_epoch)
        started = time.perf_counter()
        with translated_worker_errors(run.cfg, state):
            progress = train_one_epoch(fit, loop.loaders.train, state)
        if progress.interrupted is not None:
            loop.checkpoints.save(state, fit.phase, progress)
            dist.barrier()
            name = signal.Signals(progress.interrupted).name
            raise Interrupted(f"stopped by {name} in epoch {epoch + 1} after {progress.batches} batches (step "
                              f"{state.step}): {run.last_path} written; add --resume to continue", progress.interrupted)
        state.progress = EpochProgress()
        if _end_epoch(loop, fit, state, progress, started):
            break


def _epochs_to_run(loop: _Loop) -> int:
    """train.epochs, or the epochs train.max_steps reaches into (the last phase ends with the budget)."""
    return math.ceil(loop.phases[-1].end_step / loop.checkpoints.steps_per_epoch)


def _begin_epoch(loop: _Loop, epoch: int, step: int, first: bool) -> Fit:
    """The Fit of an epoch starting at optimizer step `step`, in the phase of that step."""
    run, cfg = loop.run, loop.run.cfg
    fit = Fit(cfg, run.task, run.model, loop.optimizer, loop.scaler, loop.autocast, run.device, loop.stop,
              loop.checkpoints.steps_per_epoch, _epochs_to_run(loop), loop.checkpoints,
              lambda fit, at: _enter_phase(loop, fit, at, first=False))
    _enter_phase(loop, fit, step, first)
    loop.loaders.train_sampler.set_epoch(epoch)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    return fit


def _enter_phase(loop: _Loop, fit: Fit, step: int, first: bool) -> None:
    """Set what trains at optimizer step `step` (its phase's stages and LRs) on `fit`; a phase that starts at
    `step` (or the first phase of this process) says so with every group's LR."""
    run, cfg = loop.run, loop.run.cfg
    phase = phase_at(loop.phases, step)
    if fit.phase is not None and phase.index == fit.phase.index:
        return
    loop.trainable = apply_phase(run.model, run.backbone, phase, cfg.finetune.bn)
    fit.phase, fit.base_lrs = phase, group_lrs(phase, loop.optimizer.param_groups)
    if step == phase.start_step or first:
        log.info(
            "phase %d (steps %d-%d, epoch %d): %d of %d backbone stages train, %d trainable parameters; LR %s",
            phase.index + 1, phase.start_step + 1, phase.end_step, step // fit.steps_per_epoch + 1,
            phase.trainable_stages, run.backbone.num_stages, loop.trainable,
            ", ".join(f"{name} {lr:.3g}" for name, lr in fit.base_lrs.items()),
        )
    set_train_mode(run.model, run.backbone, phase, cfg.finetune.bn)
    if phase.index != loop.wrapped_phase:
        # DDP fixes the parameters it syncs when it is built: a new wrapper for each phase's trainable set.
        loop.wrapped, loop.wrapped_phase = dist.wrap(run.model, run.device), phase.index
        if cfg.train.compile:  # compiled around DDP, as torch recommends; the plain model still evaluates and saves
            loop.wrapped = torch.compile(loop.wrapped)
    fit.model = loop.wrapped


def _end_epoch(loop: _Loop, fit: Fit, state: TrainState, trained: EpochProgress, started: float) -> bool:
    """Validate the epoch just trained, log it, checkpoint it; True when early stopping ends the run."""
    run, t = loop.run, loop.run.cfg.train
    loss_sum, seen = dist.sum_over_ranks(float(trained.loss_total), trained.seen)  # the mean over all ranks
    train_seconds = time.perf_counter() - started
    metrics = _validate(loop, fit, state, trained)
    seconds = time.perf_counter() - started
    value = metrics.get(t.monitor)
    if value is None:
        raise ConfigError(f"train.monitor: {t.monitor!r} is not a val metric of this task; try one of "
                          f"{run.task.log_metrics}")
    min_delta = t.early_stopping.min_delta if t.early_stopping else 0.0
    improved = state.record(value, state.epoch + 1, 1.0 if t.monitor_mode == "max" else -1.0, min_delta)
    row = {"epoch": state.epoch + 1, "step": state.step, "phase": fit.phase.index + 1,
           "trainable_params": loop.trainable}
    row.update({f"lr/{g['name']}": g["lr"] for g in loop.optimizer.param_groups})
    row.update(train_loss=loss_sum / max(1, seen), val_loss=metrics.get("loss", ""))
    row.update({k: metrics[k] for k in run.task.log_metrics})
    row.update(seconds=seconds, train_seconds=train_seconds, img_per_s=seen / max(train_seconds, 1e-9))
    if t.skip_nonfinite:
        row["skipped_steps"] = trained.skipped
    if run.device.type == "cuda":
        row["gpu_mem_gib"] = torch.cuda.max_memory_allocated(run.device) / 2**30
    _log_epoch(loop, row, metrics)
    state.epoch, state.metrics = state.epoch + 1, metrics
    loop.checkpoints.save(state, fit.phase, best=improved)
    if t.early_stopping and state.bad_epochs >= t.early_stopping.patience:
        log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                 t.monitor, state.bad_epochs, state.best["value"], state.best["epoch"])
        return True
    return False


def _validate(loop: _Loop, fit: Fit, state: TrainState, trained: EpochProgress) -> dict[str, Any]:
    """The val metrics of the epoch just trained: under torchrun each rank scores its shard and rank 0 gets the
    whole set's metrics; every rank gets rank 0's numbers."""
    run = loop.run
    sharded = dist.active()  # _make_loaders shards the val set whenever training is distributed
    dist.same_buffers(run.model)  # every shard scored by the model rank 0 saves
    # One process: a stop signal ends validation too (it can take minutes). Under torchrun every rank must
    # reach the collectives that join the shards, so validation finishes and the next epoch's start stops them.
    stop = None if sharded else loop.stop
    try:
        metrics = evaluate(run.task, run.model, loop.loaders.val, run.device, run.data.classes, loop.autocast, stop,
                           sharded=sharded)
    except StoppedInValidation:
        loop.checkpoints.save(state, fit.phase, trained)  # the whole epoch trained: --resume validates it
        signum = loop.stop.signal or signal.SIGTERM
        raise Interrupted(f"stopped by {signal.Signals(signum).name} while validating epoch {state.epoch + 1} "
                          f"(step {state.step}): {run.last_path} written; add --resume to continue",
                          signum) from None
    # Every rank takes the same best.pt / early-stopping decisions from rank 0's numbers.
    numbers = dist.from_main(scalars(metrics) if run.main else None)
    return metrics if run.main else numbers


def _log_epoch(loop: _Loop, row: dict[str, Any], metrics: dict[str, Any]) -> None:
    """An epoch's row: log.csv and the trackers (rank 0), and one log line."""
    run, epoch = loop.run, row["epoch"]
    if run.main:
        run.run_dir.log_row(row)
        loop.tracker.log_epoch(epoch, row)
        loop.tracker.log_images(epoch, run.task, run.model, loop.loaders.val_set, run.device, loop.autocast,
                                run.data.classes)
    log.info(
        "epoch %d/%d  train_loss %.4f  %s%s  %s img/s  %.1fs%s",
        epoch, _epochs_to_run(loop), row["train_loss"], f"val_loss {metrics['loss']:.4f}  " if "loss" in metrics else "",
        "  ".join(f"{k} {metrics[k]:.4f}" for k in run.task.log_metrics), rate(row["img_per_s"]), row["seconds"],
        _memory_note(run.device),
    )


def _fit_closed_form(run: _Run, train_set: Any, val_set: Any, tracker: Tracker) -> dict[str, Any]:
    """A head fitted in closed form (scikit-learn) on features extracted once: one 'epoch', no optimizer."""
    cfg, task, model, device = run.cfg, run.task, run.model, run.device
    model.to(device)
    started = time.perf_counter()
    fit = task.fit_closed_form(cfg, model, train_set, run.run_dir.path, device)
    autocast, _ = autocast_for(device, cfg.train.amp)
    sampler = EpochSampler(len(val_set), shuffle=False, seed=cfg.train.seed)
    loader = make_loader(val_set, sampler, cfg.train.batch_size, cfg.train.workers, task.collate, device)
    metrics = evaluate(task, model, loader, device, run.data.classes, autocast)
    seconds = time.perf_counter() - started
    row = {"epoch": 1, "phase": 1, "trainable_params": fit.fitted_params, "train_loss": "", "val_loss": metrics.get("loss", "")}
    row.update({k: metrics[k] for k in task.log_metrics})
    row.update(seconds=seconds, img_per_s=len(train_set) / max(seconds, 1e-9))
    run.run_dir.log_row(row)
    tracker.log_epoch(1, row)
    log.info("%s: train accuracy %.4f, %s", cfg.model.head, fit.record["train_accuracy"],
             "  ".join(f"{k} {metrics[k]:.4f}" for k in task.log_metrics))
    monitored = metrics[cfg.train.monitor]
    state = {"optimizer": {}, "epoch": 1, "step": 0, "phase": 0, "best": {"value": monitored, "epoch": 1},
             "bad_epochs": 0, "metrics": scalars(metrics), "sklearn_head": {"kind": cfg.model.head, **fit.record}}
    run.run_dir.save_checkpoint(checkpoint_dict(cfg, task, run.data, model, run.backbone, **state), best=True)
    final = {**metrics, "best": {cfg.train.monitor: monitored, "epoch": 1}, "sklearn_head": fit.record}
    run.run_dir.write_evaluation(final, task, model, val_set, device, autocast, run.data.classes)
    run.run_dir.write_run_json("train", cfg.task, device, run.watch, len(train_set), len(val_set))
    run.run_dir.write_report()
    tracker.finish(run.run_dir.path)
    return final


def _check_resumable(cfg: Config, resumed: dict[str, Any], last_path: Path) -> None:
    """--resume continues the run's own model: another task, architecture or backbone is refused before anything
    is read or written (config.yaml keeps the run's config)."""
    model = (resumed.get("config") or {}).get("model") or {}
    for key, was, now in (("task", resumed.get("task"), cfg.task), ("model.arch", model.get("arch"), cfg.model.arch),
                          ("model.backbone", model.get("backbone"), cfg.model.backbone)):
        if was is not None and was != now:
            raise CheckpointError(f"--resume: {last_path} was trained with {key} {printable(was, 100)}, the config says "
                                  f"{printable(now, 100)}; resume with the run's own config "
                                  f"({last_path.parent.parent / 'config.yaml'}), or choose another run.dir")


def _memory_note(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f"  gpu mem {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
