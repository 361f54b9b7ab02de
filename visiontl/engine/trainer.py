"""One trainer for every task. The task adapter says how to move a batch, compute the loss and score; the
finetune plan says what trains at which LR; this module runs the loop and writes the run directory:

    <run.dir>/config.yaml   the resolved config
    <run.dir>/log.csv       one row per epoch: phase, trainable params, LR per group, losses, metrics, time
    <run.dir>/metrics.json  final val metrics (and the best epoch's), with eval_raw.npz beside it
    <run.dir>/eval_images.json, gallery/   per-image scores; the worst and best images drawn
    <run.dir>/run.json      environment and timing
    <run.dir>/report.html, report.md   the run report (visiontl.report)
    <run.dir>/checkpoints/{last,best}.pt
(docs/run-directory.md describes each file.)
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader

from visiontl import __version__
from visiontl.backbones import create_backbone
from visiontl.config import Config, save_config, with_absolute_paths
from visiontl.data.holdout import DATA_FILE
from visiontl.data.sampling import EpochSampler, GroupedBatchSampler
from visiontl.engine import distributed as dist
from visiontl.atomic import remove_stale_temporaries
from visiontl.engine.checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from visiontl.engine.environment import Stopwatch, write_run_json
from visiontl.engine.gallery import write_gallery
from visiontl.engine.resilience import (
    EarlyLog,
    EpochProgress,
    ResumableBatches,
    RunDir,
    SkipBadImages,
    StoppableBatches,
    StoppedInValidation,
    StopRequest,
    check_run_dir,
    stop_signals_blocked,
    translated_worker_errors,
    until_stopped,
    worker_start,
)
from visiontl.engine.schedule import lr_factor
from visiontl.engine.seed import rng_state, seed_everything, set_rng_state
from visiontl.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from visiontl.finetune import Phase, apply_phase, group_lrs, param_groups, phase_at, plan_phases, set_train_mode
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


def write_data_record(run_dir: Path, data: Any) -> None:
    """<run.dir>/data.json: the val list of data.val as a fraction, and the images left out, for the report
    and for whoever evaluates the run later."""
    record: dict[str, Any] = {"val_from_train": None, "left_out": list(data.left_out)}
    if data.holdout is not None:
        h = data.holdout
        record["val_from_train"] = {"fraction": h.fraction, "seed": h.seed, "images": h.files}
    atomic_write_json(run_dir / DATA_FILE, record)


class CsvLog:
    """log.csv, rewritten atomically after every epoch (it is small), so it never holds half a row."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None):
        self.path = path
        self.rows = list(rows or [])

    @classmethod
    def resume(cls, path: Path, epochs_done: int) -> CsvLog:
        rows = []
        if path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]
        return cls(path, rows)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def train(cfg: Config, resume: bool = False, force: bool = False, log_file: bool = False) -> dict[str, Any]:
    """Run `cfg` end to end and return the final val metrics. A run directory holding another run is
    refused unless `resume` (continue it) or `force` (start over); one in use by another run is refused.
    `log_file`: the log also goes to <run.dir>/train.log (the CLI's), once the run has started."""
    with contextlib.ExitStack() as held:  # the run directory's lock and train.log, released however train ends
        return _train(cfg, resume, force, log_file, held)


def _train(cfg: Config, resume: bool, force: bool, log_file: bool, held: contextlib.ExitStack) -> dict[str, Any]:
    """Everything that can refuse the run (the run directory, the config, the data, the checkpoint to resume,
    the model) comes before `start_run`; before it nothing is written, train.log included."""
    watch = Stopwatch()
    cfg = with_absolute_paths(cfg)  # the run's config.yaml and checkpoints then work from any folder
    run_dir = Path(cfg.run.dir)
    ckpt_dir = run_dir / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    writes = int(os.environ.get("RANK", "0")) == 0  # only rank 0 writes the run directory
    if writes:
        check_run_dir(run_dir, resume, force)
    early_log = held.enter_context(EarlyLog(log)) if log_file and writes else None
    resumed = load_checkpoint(last_path) if resume else None
    if resume and resumed is None:
        raise CheckpointError(f"--resume: {last_path} not found")
    if resumed is not None:
        _check_resumable(cfg, resumed, last_path)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    dist.init(cfg.train.device)  # under torchrun; a no-op in one process (and when the CLI did it)
    if dist.active():
        log.info("distributed: rank %d of %d, backend %s", dist.rank(), dist.world_size(), dist.backend())
    device = dist.device_for(resolve_device(cfg.train.device))
    task = get_task(cfg.task)
    # every file checked before anything is written or built; a resumed run keeps its own val split
    data = task.prepare_data(cfg, val_files=resumed.get("val_files") if resumed is not None else None)
    classes = data.classes
    main = dist.is_main()
    Tracker.require(cfg)  # a missing tracking package stops here, before anything is written
    log.info("data: %s", data.summary())
    log_data_choices(data)
    if resumed is not None and list(resumed["classes"]) != classes:
        raise CheckpointError(f"{last_path}: trained on classes {printable(resumed['classes'], 300)}, the data now "
                              f"has {printable(classes, 300)}")

    def start_run() -> Tracker:
        """Take the run directory (lock it; for a new run remove the previous run's files) and write its first
        files. An unusable tracking store still stops the run here, before training (tracking.py)."""
        if main:
            run = held.enter_context(RunDir.open(run_dir, resume, force))
            remove_stale_temporaries(ckpt_dir)  # what a kill during a checkpoint write left behind
            if early_log is not None:
                run.record("train.log")
                early_log.to_file(run_dir / "train.log")
            if cfg.run.tensorboard and not (run_dir / "tensorboard").exists():
                run.record("tensorboard/")
            save_config(cfg, run_dir / "config.yaml")
            write_data_record(run_dir, data)
        return Tracker.open(cfg, run_dir, main, int(resumed["epoch"]) if resumed is not None else None)

    backbone = create_backbone(cfg.model.backbone, cfg.model.weights, log=log.info)
    model = task.build_model(cfg, backbone, classes)
    log.info(
        "model: %s on %s (%d stages, %s weights), %.2fM parameters, device %s",
        cfg.model.arch, cfg.model.backbone, backbone.num_stages, cfg.model.weights,
        sum(p.numel() for p in model.parameters()) / 1e6, device,
    )
    overfit = cfg.train.overfit_batches
    closed_form = task.fits_in_closed_form(cfg)
    # Features for a closed-form head are extracted once, so without augmentation.
    train_set, val_set = task.datasets(cfg, data, backbone, augment=not (overfit or closed_form))
    if closed_form:
        if dist.active():
            raise ConfigError(f"model.head: {cfg.model.head!r} is fitted in one process; run it without torchrun")
        return _fit_closed_form(cfg, task, data, model, backbone, train_set, val_set, run_dir, device, watch,
                                start_run())

    model = dist.sync_batchnorm(model, cfg.train.sync_bn, device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        # Autotuning runs once per new input shape: a win for fixed-size batches, minutes lost on detection
        # (measured on an H200: 85 s of a first BCCD epoch; docs/benchmarks.md).
        torch.backends.cudnn.benchmark = task.fixed_shapes and not cfg.train.deterministic
    autocast, amp_dtype = autocast_for(device, cfg.train.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    t = cfg.train
    if overfit:
        # Sanity mode: the same first N batches, unaugmented, for training and for validation.
        subset = overfit * t.batch_size
        train_sampler = EpochSampler(len(train_set), shuffle=False, seed=t.seed, subset=subset)
        val_set, val_sampler = train_set, EpochSampler(len(train_set), shuffle=False, seed=t.seed, subset=subset)
        log.info("overfit mode: training and validating on the same %d fixed batches", overfit)
    else:
        train_sampler = EpochSampler(len(train_set), shuffle=True, seed=t.seed)
        val_sampler = EpochSampler(len(val_set), shuffle=False, seed=t.seed)
    if cfg.data.cache:
        from visiontl.data.cache import preload_images

        preload_images(_image_files(train_set) + _image_files(val_set), cfg.data.cache_max_gb * 1e9,
                       threads=max(1, t.workers), progress=t.progress)
    # Training is sharded across ranks; validation runs on rank 0 over the whole set (distributed.py says why).
    groups = train_set.aspect_groups() if cfg.data.group_aspect_ratio and hasattr(train_set, "aspect_groups") else None
    epoch_sampler = dist.shard(train_sampler)
    train_loader = make_loader(SkipBadImages(train_set) if cfg.data.on_bad_image == "skip" else train_set,
                               epoch_sampler, t.batch_size, t.workers, task.collate, device, groups, resumable=True)
    val_loader = make_loader(val_set, val_sampler, t.batch_size, t.workers, task.collate, device)
    steps_per_epoch = math.ceil(len(train_loader) / t.accumulate)

    phases = plan_phases(cfg, backbone.num_stages)
    groups = param_groups(model, backbone, t.weight_decay)
    optimizer = build_optimizer(cfg, groups)

    start_epoch, step = 0, 0
    best: dict[str, Any] = {"value": None, "epoch": None}
    bad_epochs = 0
    csv_log = CsvLog(run_dir / "log.csv")
    ddp_model, ddp_phase = model, None  # the DDP wrapper, rebuilt when a phase changes what trains
    progress = EpochProgress()
    if resumed is not None:
        try:
            model.load_state_dict(resumed["model"])
            optimizer.load_state_dict(resumed["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            # torch's message: a header line, then one line per mismatch; the first two say what is wrong
            what = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
            raise CheckpointError(f"--resume: {last_path} does not fit the model this config builds "
                                  f"({printable(what, 300)}); resume with the run's own config, or choose another "
                                  "run.dir") from None
        scaler.load_state_dict(resumed["scaler"])
        start_epoch, step = int(resumed["epoch"]), int(resumed["step"])
        best, bad_epochs = dict(resumed["best"]), int(resumed["bad_epochs"])
        set_rng_state(resumed["rng"])
        csv_log = CsvLog.resume(run_dir / "log.csv", start_epoch)
        if resumed.get("progress"):
            progress = EpochProgress.from_state(resumed["progress"], resumed["rng"])
            log.info("resumed from %s in epoch %d after %d batches, step %d", last_path, start_epoch + 1,
                     progress.batches, step)
        else:
            log.info("resumed from %s at epoch %d, step %d", last_path, start_epoch, step)

    metrics: dict[str, Any] = dict(resumed.get("metrics", {})) if resumed is not None else {}
    tracker = start_run()
    monitor, sign = t.monitor, (1.0 if t.monitor_mode == "max" else -1.0)
    with StopRequest() as stop:  # SIGINT / SIGTERM: finish the step, write last.pt, stop
        for epoch in range(start_epoch, t.epochs):
            if t.max_steps is not None and step >= t.max_steps:
                break
            if dist.step_flags(torch.zeros(()), stop.requested)[1] and epoch > start_epoch:
                # the signal came during validation or the checkpoint: last.pt already holds this point
                raise Interrupted(f"stopped by {signal.Signals(stop.signal or signal.SIGTERM).name} after epoch {epoch}: "
                                  f"{last_path} written; add --resume to continue", stop.signal or signal.SIGTERM)
            phase = phase_at(phases, epoch)
            trainable = apply_phase(model, backbone, phase, cfg.finetune.bn)
            base_lrs = group_lrs(phase, optimizer.param_groups)
            if epoch == phase.start_epoch or epoch == start_epoch:
                log.info(
                    "phase %d (epochs %d-%d): %d of %d backbone stages train, %d trainable parameters",
                    phase.index + 1, phase.start_epoch + 1, phase.end_epoch, phase.trainable_stages,
                    backbone.num_stages, trainable,
                )
            set_train_mode(model, backbone, phase, cfg.finetune.bn)
            if phase.index != ddp_phase:
                # DDP fixes the parameters it syncs when it is built: a new wrapper for each phase's trainable set.
                ddp_model, ddp_phase = dist.wrap(model, device), phase.index
                if t.compile:  # compiled around DDP, as torch recommends; the plain `model` still evaluates and saves
                    ddp_model = torch.compile(ddp_model)
            epoch_sampler.set_epoch(epoch)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()

            def checkpoint_state(**extra: Any) -> dict[str, Any]:
                return {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                        "scheduler": {"step": step_now[0], "steps_per_epoch": steps_per_epoch}, "step": step_now[0],
                        "phase": phase.index, "best": best, "bad_epochs": bad_epochs, "metrics": _scalars(metrics),
                        "rng": rng_state(), **extra}

            def save_progress(done: EpochProgress, at_step: int) -> None:
                """A mid-epoch last.pt: `epoch` counts finished epochs; `progress` says how far this one got."""
                step_now[0] = at_step
                if main:
                    save_checkpoint(last_path, checkpoint_dict(cfg, task, data, model, backbone,
                                                               **checkpoint_state(epoch=epoch, progress=done.to_state())))

            step_now = [step]
            with translated_worker_errors(cfg, step_now):
                progress, step = _train_epoch(
                    cfg, task, ddp_model, optimizer, scaler, autocast, train_loader, device, phase, base_lrs, epoch,
                    step, steps_per_epoch, progress, stop, save_progress,
                )
            if progress.interrupted is not None:
                save_progress(progress, step)
                dist.barrier()
                name = signal.Signals(progress.interrupted).name
                raise Interrupted(f"stopped by {name} in epoch {epoch + 1} after {progress.batches} batches (step {step}): "
                                  f"{last_path} written; add --resume to continue", progress.interrupted)
            trained, progress = progress, EpochProgress()
            loss_sum, seen, skipped = float(trained.loss_total), trained.seen, trained.skipped
            loss_sum, seen = dist.sum_over_ranks(loss_sum, seen)  # the logged loss is the mean over all ranks
            train_seconds = time.perf_counter() - started
            if main:
                # One process: a stop signal ends validation too (it can take minutes). Under torchrun the other
                # ranks wait for rank 0's numbers, so validation finishes and the next epoch's start stops them.
                batches = val_loader if dist.active() else StoppableBatches(val_loader, stop)
                try:
                    metrics = task.evaluate(model, batches, device, classes, autocast)
                except StoppedInValidation:
                    save_progress(trained, step)  # the whole epoch trained: --resume validates it
                    name = signal.Signals(stop.signal or signal.SIGTERM).name
                    raise Interrupted(f"stopped by {name} while validating epoch {epoch + 1} (step {step}): {last_path} "
                                      "written; add --resume to continue", stop.signal or signal.SIGTERM) from None
            # Every rank takes the same best.pt / early-stopping decisions from rank 0's numbers.
            scalars = dist.from_main(_scalars(metrics) if main else None)
            if not main:
                metrics = scalars
            seconds = time.perf_counter() - started

            value = metrics.get(monitor)
            if value is None:
                raise ConfigError(f"train.monitor: {monitor!r} is not a val metric of this task; try one of {task.log_metrics}")
            improved = best["value"] is None or sign * (value - best["value"]) > (
                t.early_stopping.min_delta if t.early_stopping else 0.0
            )
            if improved:
                best, bad_epochs = {"value": value, "epoch": epoch + 1}, 0
            else:
                bad_epochs += 1

            row = {"epoch": epoch + 1, "phase": phase.index + 1, "trainable_params": trainable}
            row.update({f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups})
            row.update(train_loss=loss_sum / max(1, seen), val_loss=metrics.get("loss", ""))
            row.update({k: metrics[k] for k in task.log_metrics})
            row.update(seconds=seconds, train_seconds=train_seconds, img_per_s=seen / max(train_seconds, 1e-9))
            if t.skip_nonfinite:
                row["skipped_steps"] = skipped
            if device.type == "cuda":
                row["gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if main:
                csv_log.append({k: _fmt(v) for k, v in row.items()})
                tracker.log_epoch(epoch + 1, row)
                tracker.log_images(epoch + 1, task, model, val_set, device, autocast, classes)
            log.info(
                "epoch %d/%d  train_loss %.4f  %s%s  %.0f img/s  %.1fs%s",
                epoch + 1, t.epochs, row["train_loss"], f"val_loss {metrics['loss']:.4f}  " if "loss" in metrics else "",
                "  ".join(f"{k} {metrics[k]:.4f}" for k in task.log_metrics), row["img_per_s"], seconds,
                _memory_note(device),
            )

            step_now[0] = step
            state = checkpoint_state(epoch=epoch + 1)
            if main:
                ckpt = checkpoint_dict(cfg, task, data, model, backbone, **state)
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", ckpt)
                save_checkpoint(last_path, ckpt)
            if t.early_stopping and bad_epochs >= t.early_stopping.patience:
                log.info("early stopping: %s has not improved for %d epochs (best %.4f at epoch %d)",
                         monitor, bad_epochs, best["value"], best["epoch"])
                break
    final = {**metrics, "best": {monitor: best["value"], "epoch": best["epoch"]}}
    dist.write_test_digest(model)
    if main:
        write_evaluation(run_dir, final, task, model, val_set, device, autocast, classes)
        write_run_json(run_dir, "train", cfg.task, device, watch, len(train_sampler), len(val_sampler))
        write_run_report(run_dir)
        tracker.finish(run_dir)
    dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written the run
    dist.shutdown()
    return final




def write_run_report(folder: Path) -> None:
    """report.html and report.md of a finished run or evaluation. The report is drawn from files already
    written, so a failure here loses nothing: it is one warning line, and `visiontl report` redoes it."""
    from visiontl.report import write_report

    try:
        log.info("report: %s", write_report(folder))
    except Exception as exc:  # noqa: BLE001 (any failure of a derived file must not fail a finished run)
        log.warning("report not written (%s: %s); run `visiontl report %s` to retry", type(exc).__name__, exc, folder)


def write_evaluation(folder: Path, metrics: dict[str, Any], task: Any, model: torch.nn.Module, dataset: Any,
                     device: torch.device, autocast: contextlib.AbstractContextManager, classes: list[str]) -> None:
    """The evaluation files of a run directory: metrics.json, eval_raw.npz, eval_images.json, and the gallery
    of the worst and best images drawn with `model` (the one that made the metrics)."""
    write_metrics(folder, metrics)
    per_image = metrics.get("per_image")
    if per_image is not None:  # absent when a finished run is resumed: no epoch ran, nothing was evaluated
        write_gallery(folder, per_image["images"], task, model, dataset, device, autocast, classes)


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, with the evaluation's raw arrays (if any) in eval_raw.npz and its per-image scores (if
    any) in eval_images.json beside it."""
    metrics = dict(metrics)
    per_image = metrics.pop("per_image", None)
    if per_image is not None:
        atomic_write_json(folder / "eval_images.json", per_image)
    raw = metrics.pop("raw", None)
    if raw is not None:
        import numpy as np

        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in raw.items()})
        atomic_write_bytes(folder / "eval_raw.npz", buf.getvalue())
        metrics["raw"] = "eval_raw.npz"
    atomic_write_json(folder / "metrics.json", metrics)


def _train_epoch(
    cfg: Config, task: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
    autocast: contextlib.AbstractContextManager, loader: DataLoader, device: torch.device, phase: Phase,
    base_lrs: dict[str, float], epoch: int, step: int, steps_per_epoch: int, progress: EpochProgress,
    stop: StopRequest, save_progress: Callable[[EpochProgress, int], None],
) -> tuple[EpochProgress, int]:
    """One pass over `loader`, from where `progress` says the epoch stands (a resumed half-epoch skips the
    batches already trained on); returns the epoch's progress (finished, or interrupted by a signal) and the
    global step after it."""
    from tqdm.auto import tqdm

    t = cfg.train
    phase_first_step = phase.start_epoch * steps_per_epoch
    phase_steps = phase.epochs * steps_per_epoch
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss_total = progress.loss_total.to(device)
    step_loss = torch.zeros((), device=device)  # summed over the micro-batches of the optimizer step in hand
    step_keys: list[Any] = []
    seen, step_seen, micro, skipped = progress.seen, 0, progress.batches, progress.skipped
    optimizer.zero_grad(set_to_none=True)
    loader.batch_sampler.skip = progress.batches
    n_batches = len(loader)
    batches = iter(loader)
    if progress.rng is not None:
        # Making the iterator draws from the global RNG; the uninterrupted run drew it before these batches.
        set_rng_state(progress.rng)
    bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not t.progress, leave=False,
               mininterval=1.0)

    def done(interrupted: int | None = None) -> EpochProgress:
        return EpochProgress(micro_at_step[0], loss_total, seen, skipped, interrupted)

    micro_at_step = [micro]
    stop_now, consumed = False, 0
    for i, batch in enumerate(until_stopped(bar, stop)):
        consumed = i + 1
        micro += 1
        last_micro = micro % t.accumulate == 0 or i + 1 == n_batches
        # Under DDP, gradients are all-reduced once per optimizer step: not on the micro-steps before it.
        with dist.no_sync(model, last_micro):
            with autocast:
                loss, n = task.loss(model, batch, device)
            scaler.scale(loss / t.accumulate).backward()
        step_loss += loss.detach() * n
        step_seen += n
        step_keys += list(batch[-1])  # what names the images (index or image id), for the message below
        if not last_micro:
            continue
        # The one host sync per optimizer step (a collective under DDP): a non-finite loss must not reach the
        # weights, and every rank must stop at the same step when a signal asks for it.
        finite, stop_now = dist.step_flags(step_loss, stop.requested)
        if finite:
            loss_total += step_loss
            seen += step_seen
            factor = lr_factor(t, step - phase_first_step, phase_steps, epoch - phase.start_epoch)
            for g in optimizer.param_groups:
                g["lr"] = base_lrs[g["name"]] * factor
            if t.clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, t.clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            skipped += _nonfinite(cfg, loader.dataset, step_keys, step_loss, step + 1, epoch)
        optimizer.zero_grad(set_to_none=True)
        step_loss, step_seen, step_keys = torch.zeros((), device=device), 0, []
        step += 1
        micro_at_step[0] = micro
        if stop_now:
            break
        if step % t.log_every == 0 and t.progress:
            bar.set_postfix(loss=f"{loss_total.item() / max(1, seen):.4f}")
        if t.max_steps is not None and step >= t.max_steps:
            break
        if t.checkpoint_every and step % t.checkpoint_every == 0 and i + 1 < n_batches:
            save_progress(done(), step)
    bar.close()
    if stop.requested and (stop_now or consumed < n_batches):
        return done(stop.signal), step
    return done(), step


def _nonfinite(cfg: Config, dataset: Any, keys: list[Any], loss: torch.Tensor, step: int, epoch: int) -> int:
    """A non-finite loss at optimizer step `step`: TrainingError naming the images, or (train.skip_nonfinite)
    a warning and 1 for the count of skipped steps."""
    names = [_file_of(dataset, k) for k in keys]
    shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
    what = f"loss is {float(loss)} at step {step} (epoch {epoch + 1}), batch images: {shown}"
    if not cfg.train.skip_nonfinite:
        raise TrainingError(f"{what}; the last checkpoint is kept. Lower train.lr, set train.clip_grad, check these "
                            "images' labels, or set train.skip_nonfinite: true to skip such steps")
    log.warning("skipped: %s", what)
    return 1


def _file_of(dataset: Any, key: Any) -> str:
    key = key.item() if isinstance(key, torch.Tensor) else key
    return dataset.file_of(key) if hasattr(dataset, "file_of") else str(key)


def _fit_closed_form(cfg, task, data, model, backbone, train_set, val_set, run_dir, device, watch,
                     tracker) -> dict[str, Any]:
    model.to(device)
    started = time.perf_counter()
    fit = task.fit_closed_form(cfg, model, train_set, run_dir, device)
    autocast, _ = autocast_for(device, cfg.train.amp)
    sampler = EpochSampler(len(val_set), shuffle=False, seed=cfg.train.seed)
    loader = make_loader(val_set, sampler, cfg.train.batch_size, cfg.train.workers, task.collate, device)
    metrics = task.evaluate(model, loader, device, data.classes, autocast)
    seconds = time.perf_counter() - started
    trainable = model.head[-1].weight.numel() + model.head[-1].bias.numel()
    row = {"epoch": 1, "phase": 1, "trainable_params": trainable, "train_loss": "", "val_loss": metrics.get("loss", "")}
    row.update({k: metrics[k] for k in task.log_metrics})
    row.update(seconds=seconds, img_per_s=len(train_set) / max(seconds, 1e-9))
    CsvLog(run_dir / "log.csv").append({k: _fmt(v) for k, v in row.items()})
    tracker.log_epoch(1, row)
    log.info("%s: train accuracy %.4f, %s", cfg.model.head, fit["train_accuracy"],
             "  ".join(f"{k} {metrics[k]:.4f}" for k in task.log_metrics))
    state = {"optimizer": {}, "epoch": 1, "step": 0, "phase": 0, "best": {"value": metrics[cfg.train.monitor], "epoch": 1},
             "bad_epochs": 0, "metrics": _scalars(metrics), "sklearn_head": {"kind": cfg.model.head, **fit}}
    ckpt = checkpoint_dict(cfg, task, data, model, backbone, **state)
    save_checkpoint(run_dir / "checkpoints" / "best.pt", ckpt)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", ckpt)
    final = {**metrics, "best": {cfg.train.monitor: metrics[cfg.train.monitor], "epoch": 1}, "sklearn_head": fit}
    write_evaluation(run_dir, final, task, model, val_set, device, autocast, data.classes)
    write_run_json(run_dir, "train", cfg.task, device, watch, len(train_set), len(val_set))
    write_run_report(run_dir)
    tracker.finish(run_dir)
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


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics dict (what checkpoints keep): no protocol, per-image records or raw arrays."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _image_files(dataset: Any) -> list[str]:
    return dataset.image_files() if hasattr(dataset, "image_files") else []


def _memory_note(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f"  gpu mem {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
