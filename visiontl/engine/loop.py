"""The two passes of an epoch, as plain functions: `train_one_epoch` (optimizer steps over the train loader,
gradient accumulation, non-finite losses, stop signals, mid-epoch checkpoints) and `evaluate` (the task's
metrics over the val loader). The trainer (trainer.py) decides what runs when and writes the run directory."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from visiontl.config import Config
from visiontl.engine import distributed as dist
from visiontl.engine.resilience import EpochProgress, StoppableBatches, StopRequest, until_stopped
from visiontl.engine.schedule import lr_factor
from visiontl.engine.seed import set_rng_state
from visiontl.engine.state import TrainState
from visiontl.errors import TrainingError
from visiontl.finetune import Phase

log = logging.getLogger("visiontl")


@dataclass
class Fit:
    """What the optimizer steps of one epoch use besides the loader and the TrainState."""

    cfg: Config
    task: Any
    model: torch.nn.Module  # what trains: the phase's DDP (and compiled) wrapper of the model
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler
    autocast: contextlib.AbstractContextManager
    device: torch.device
    stop: StopRequest
    steps_per_epoch: int
    epochs: int  # the epochs the run will run (fewer than train.epochs under train.max_steps)
    checkpoints: Any  # trainer.Checkpoints: save(state, phase, progress) writes a mid-epoch last.pt
    enter_phase: Callable[[Fit, int], None]  # set model, phase and base_lrs for optimizer step n (the trainer's)
    phase: Phase | None = None
    base_lrs: dict[str, float] | None = None  # the phase's LR per parameter group, before the schedule's factor


@dataclass
class _Pending:
    """The micro-batches of the optimizer step in hand (train.accumulate of them make one step)."""

    loss: torch.Tensor  # summed loss x images
    seen: int = 0
    keys: list[Any] | None = None  # what names the images (index or image id), for a non-finite loss's message


def batches_to_run(batches_left: int, max_steps: int | None, step: int, accumulate: int) -> int:
    """The batches a pass over an epoch will run: the rest of the epoch, or those up to train.max_steps."""
    if max_steps is None:
        return batches_left
    return max(0, min(batches_left, (max_steps - step) * accumulate))


def rate(images_per_second: float) -> str:
    """Throughput with its significant digits: 1234, 57.3, 0.0981 (never "0 img/s" for a slow CPU run)."""
    return f"{images_per_second:.0f}" if images_per_second >= 100 else f"{images_per_second:.3g}"


class ProgressLines:
    """With progress bars off, one log line every `seconds` of an epoch (0: none): where the epoch stands, its
    mean loss so far, the images per second and the time the epoch still needs at that pace."""

    def __init__(self, seconds: float, epoch: int, total_batches: int, start: EpochProgress | None = None):
        self.seconds, self.epoch, self.total = seconds, epoch, total_batches
        self.started = self.last = time.monotonic()
        self.first = (start.batches, start.seen) if start is not None else (0, 0)  # where timing began

    def maybe(self, done: EpochProgress, step: int) -> None:
        if not self.seconds:
            return
        now = time.monotonic()
        if now - self.last < self.seconds:
            return
        self.last = now
        elapsed = now - self.started
        speed = (done.seen - self.first[1]) / elapsed
        per_batch = elapsed / max(1, done.batches - self.first[0])
        eta = per_batch * max(0, self.total - done.batches)
        log.info("epoch %d: batch %d/%d (step %d)  loss %.4f  %s img/s  epoch ends in %s", self.epoch, done.batches,
                 self.total, step, done.loss_total.item() / max(1, done.seen), rate(speed), _duration(eta))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def train_one_epoch(fit: Fit, loader: DataLoader, state: TrainState) -> EpochProgress:
    """One pass over `loader`, from where `state.progress` says the epoch stands (a resumed half-epoch skips
    the batches already trained on); `state.step` counts the optimizer steps as they are taken. Returns the
    epoch's progress: finished, or interrupted by a stop signal (its `interrupted`)."""
    from tqdm.auto import tqdm

    t = fit.cfg.train
    start = state.progress
    # the epoch's counts as of its last optimizer step: what a checkpoint written now would continue from
    done = EpochProgress(start.batches, start.loss_total.to(fit.device), start.seen, start.skipped)
    pending = _Pending(torch.zeros((), device=fit.device), 0, [])
    micro = start.batches
    fit.optimizer.zero_grad(set_to_none=True)
    loader.batch_sampler.skip = start.batches
    n_batches = len(loader)
    batches = iter(loader)
    if start.rng is not None:
        # Making the iterator draws from the global RNG; the uninterrupted run drew it before these batches.
        set_rng_state(start.rng)
    total = batches_to_run(n_batches, t.max_steps, state.step, t.accumulate)
    bar = tqdm(batches, total=total, desc=f"epoch {state.epoch + 1}/{fit.epochs}", disable=not t.progress,
               leave=False, mininterval=1.0)
    lines = ProgressLines(0 if t.progress else t.progress_seconds, state.epoch + 1, start.batches + total, start)
    stop_now, consumed = False, 0
    for i, batch in enumerate(until_stopped(bar, fit.stop)):
        consumed = i + 1
        micro += 1
        last_micro = micro % t.accumulate == 0 or i + 1 == n_batches
        _forward_backward(fit, batch, pending, sync=last_micro)
        if not last_micro:
            continue
        stop_now = _optimizer_step(fit, loader.dataset, state, done, pending)
        pending = _Pending(torch.zeros((), device=fit.device), 0, [])
        done.batches = micro
        if stop_now:
            break
        if state.step % t.log_every == 0 and t.progress:
            bar.set_postfix(loss=f"{done.loss_total.item() / max(1, done.seen):.4f}")
        lines.maybe(done, state.step)
        if t.max_steps is not None and state.step >= t.max_steps:
            break
        if state.step == fit.phase.end_step and i + 1 < n_batches:  # a phase ended inside the epoch: the next starts
            fit.enter_phase(fit, state.step)
        if t.checkpoint_every and state.step % t.checkpoint_every == 0 and i + 1 < n_batches:
            fit.checkpoints.save(state, fit.phase, done)
    bar.close()
    if fit.stop.requested and (stop_now or consumed < n_batches):
        done.interrupted = fit.stop.signal
    return done


def _forward_backward(fit: Fit, batch: Any, pending: _Pending, sync: bool) -> None:
    # Under DDP, gradients are all-reduced once per optimizer step: not on the micro-steps before it.
    with dist.no_sync(fit.model, sync):
        with fit.autocast:
            loss, n = fit.task.loss(fit.model, batch, fit.device)
        fit.scaler.scale(loss / fit.cfg.train.accumulate).backward()
    pending.loss += loss.detach() * n
    pending.seen += n
    pending.keys += list(batch[-1])


def _optimizer_step(fit: Fit, dataset: Any, state: TrainState, done: EpochProgress, pending: _Pending) -> bool:
    """Step the optimizer on the accumulated gradients (or skip a non-finite step) and count it in `done` and
    `state.step`; True when a stop signal asks every rank to stop after this step."""
    t = fit.cfg.train
    # The one host sync per optimizer step (a collective under DDP): a non-finite loss must not reach the
    # weights, and every rank must stop at the same step when a signal asks for it.
    finite, stop_now = dist.step_flags(pending.loss, fit.stop.requested)
    if finite:
        done.loss_total += pending.loss
        done.seen += pending.seen
        factor = lr_factor(t, fit.phase, state.step, fit.steps_per_epoch)
        for g in fit.optimizer.param_groups:
            g["lr"] = fit.base_lrs[g["name"]] * factor
        if t.clip_grad is not None:
            fit.scaler.unscale_(fit.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in fit.model.parameters() if p.requires_grad], t.clip_grad)
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
    else:
        done.skipped += _nonfinite(fit.cfg, dataset, pending.keys, pending.loss, state.step + 1, state.epoch)
    fit.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    return stop_now


def _nonfinite(cfg: Config, dataset: Any, keys: list[Any], loss: torch.Tensor, step: int, epoch: int) -> int:
    """A non-finite loss at optimizer step `step`: TrainingError naming the images, or (train.skip_nonfinite)
    a warning and 1 for the count of skipped steps."""
    names = [dataset.file_of(k.item() if isinstance(k, torch.Tensor) else k) for k in keys]
    shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
    what = f"loss is {float(loss)} at step {step} (epoch {epoch + 1}), batch images: {shown}"
    if not cfg.train.skip_nonfinite:
        raise TrainingError(f"{what}; the last checkpoint is kept. Lower train.lr, set train.clip_grad, check these "
                            "images' labels, or set train.skip_nonfinite: true to skip such steps")
    log.warning("skipped: %s", what)
    return 1


def evaluate(task: Any, model: torch.nn.Module, loader: DataLoader, device: torch.device, classes: list[str],
             autocast: contextlib.AbstractContextManager, stop: StopRequest | None = None) -> dict[str, Any]:
    """The task's val metrics of `model` over `loader`. With `stop`, a stop signal ends the pass with
    resilience.StoppedInValidation (validation can take minutes)."""
    batches = loader if stop is None else StoppableBatches(loader, stop)
    return task.evaluate(model, batches, device, classes, autocast)
