"""Fine-tuning policies: what trains, at which learning rate, and when.

Every strategy is a list of phases. A phase says how many of the deepest backbone stages train (the head
always trains), the base LR and the per-stage LR multipliers:

- feature_extraction: one phase, no backbone stage trains;
- partial: one phase, the first `freeze_stages` stages are frozen;
- full: one phase, everything trains;
- staged: the phases of `finetune.stages`, in order (e.g. head only, then the last stages, then all).

Phases are written in epochs and run in optimizer steps: the run's budget (train.epochs x steps per epoch, or
train.max_steps when that is less) is shared out in proportion to the epochs written, every phase keeping at
least one step, so a short run still reaches its last phase instead of never leaving the first one.

Frozen means frozen: a frozen parameter gets no gradient (so no optimizer, weight decay or momentum moves
it) and every normalisation layer in a frozen stage stays in eval mode, so its running statistics do not
move either. Tensors of frozen stages stay bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from visiontl.backbones import Backbone
from visiontl.backbones.base import NORM_TYPES
from visiontl.config import Config, TrainConfig
from visiontl.errors import ConfigError

HEAD_GROUP = "head"


@dataclass(frozen=True)
class Phase:
    index: int
    start_step: int  # the run's optimizer step the phase begins at (0-based)
    steps: int  # its optimizer steps, after scaling to the run's budget
    trainable_stages: int  # how many of the deepest backbone stages train
    lr: float
    stage_lr_mults: tuple[float, ...]  # one per backbone stage, shallow to deep
    epochs: int  # its length as the config writes it
    warmup_steps: int = 0  # train.warmup_steps, capped at train.warmup_max_fraction of the phase

    @property
    def end_step(self) -> int:
        return self.start_step + self.steps


def _stage_mults(lr_mult: float | list[float], num_stages: int, key: str) -> tuple[float, ...]:
    if isinstance(lr_mult, list):
        if len(lr_mult) != num_stages:
            raise ConfigError(
                f"{key}: the backbone has {num_stages} stages, so the list needs {num_stages} multipliers, "
                f"got {len(lr_mult)}"
            )
        return tuple(float(m) for m in lr_mult)
    return tuple(float(lr_mult) ** (num_stages - i) for i in range(num_stages))


def run_steps(cfg: Config, steps_per_epoch: int) -> int:
    """The optimizer steps the run has: train.epochs of `steps_per_epoch`, or train.max_steps when fewer."""
    budget = cfg.train.epochs * steps_per_epoch
    return budget if cfg.train.max_steps is None else min(budget, cfg.train.max_steps)


def plan_phases(cfg: Config, num_stages: int, steps_per_epoch: int) -> list[Phase]:
    """The run's phases in optimizer steps: the strategy's phases scaled to the budget (`run_steps`)."""
    ft, lr = cfg.finetune, cfg.train.lr
    mults = _stage_mults(ft.lr_mult, num_stages, "finetune.lr_mult")
    if ft.strategy == "partial" and ft.freeze_stages > num_stages:
        raise ConfigError(
            f"finetune.freeze_stages: should be in the range [1, {num_stages}] for {cfg.model.backbone}, "
            f"got {ft.freeze_stages}"
        )
    # (epochs, trainable stages, lr, multipliers) of each phase as the config writes it
    written: list[tuple[int, int, float, tuple[float, ...]]]
    if ft.strategy == "staged":
        written = []
        for i, p in enumerate(ft.stages):
            key = f"finetune.stages.{i}"
            unfreeze = num_stages if p.unfreeze == "all" else p.unfreeze
            if unfreeze > num_stages:
                raise ConfigError(f"{key}.unfreeze: {cfg.model.backbone} has {num_stages} stages, got {unfreeze}")
            phase_mults = mults if p.lr_mult is None else _stage_mults(p.lr_mult, num_stages, f"{key}.lr_mult")
            written.append((p.epochs, unfreeze, p.lr if p.lr is not None else lr, phase_mults))
    else:
        trainable = {"feature_extraction": 0, "full": num_stages, "partial": num_stages - ft.freeze_stages}
        written = [(cfg.train.epochs, trainable[ft.strategy], lr, mults)]
    budget = run_steps(cfg, steps_per_epoch)
    if budget < len(written):
        raise ConfigError(f"train.max_steps: {budget} step(s) cannot run the {len(written)} phases of finetune.stages "
                          f"(each needs at least one step); give at least {len(written)} steps or fewer phases")
    steps = scaled_steps([w[0] for w in written], budget)
    phases, start = [], 0
    for i, ((epochs, trainable, phase_lr, phase_mults), n) in enumerate(zip(written, steps)):
        warmup = min(cfg.train.warmup_steps, math.floor(cfg.train.warmup_max_fraction * n))
        phases.append(Phase(i, start, n, trainable, phase_lr, phase_mults, epochs, warmup))
        start += n
    return phases


def scaled_steps(epochs: list[int], budget: int) -> list[int]:
    """`budget` steps shared out in proportion to `epochs`, each share at least 1 (largest remainders round up)."""
    total = sum(epochs)
    exact = [budget * e / total for e in epochs]
    steps = [max(1, math.floor(x)) for x in exact]
    by_remainder = sorted(range(len(epochs)), key=lambda i: (steps[i] - exact[i], i))
    for i in by_remainder[:max(0, budget - sum(steps))]:
        steps[i] += 1
    while sum(steps) > budget:  # the minimum of one step took more than the rounding gave back
        i = max((j for j in range(len(steps)) if steps[j] > 1), key=lambda j: (steps[j] - exact[j], steps[j]))
        steps[i] -= 1
    return steps


def phase_at(phases: list[Phase], step: int) -> Phase:
    """The phase optimizer step `step` (0-based) belongs to."""
    for phase in phases:
        if step < phase.end_step:
            return phase
    return phases[-1]


def describe_phases(phases: list[Phase], num_stages: int, steps_per_epoch: int, train: TrainConfig) -> list[str]:
    """One line per phase, saying what the run will do: its steps, what trains, and how the budget scaled it."""
    lines = []
    for p in phases:
        written = p.epochs * steps_per_epoch
        scaled = "" if p.steps == written else f", scaled from {p.epochs} epoch(s) = {written} steps"
        trains = "head only" if p.trainable_stages == 0 else f"{p.trainable_stages} of {num_stages} backbone stages + head"
        warm = f"; warm-up {p.warmup_steps} steps" if train.warmup_steps else ""
        if p.warmup_steps < train.warmup_steps:
            warm += f" (train.warmup_steps {train.warmup_steps}, capped at {train.warmup_max_fraction:g} of the phase)"
        lines.append(f"schedule: phase {p.index + 1}, steps {p.start_step + 1}-{p.end_step} ({p.steps}{scaled}): "
                     f"{trains}, LR {p.lr:.3g}{warm}")
    return lines


def phase_record(phases: list[Phase], num_stages: int, steps_taken: int) -> list[dict]:
    """What run.json keeps of the phases that ran (a run that stops early ran only some of them)."""
    return [{"phase": p.index + 1, "first_step": p.start_step + 1, "last_step": min(p.end_step, steps_taken),
             "planned_steps": p.steps, "written_epochs": p.epochs, "trainable_stages": p.trainable_stages,
             "backbone_stages": num_stages, "lr": p.lr, "warmup_steps": p.warmup_steps}
            for p in phases if p.start_step < steps_taken]


def stage_group(index: int) -> str:
    return f"backbone.stage{index + 1}"


def param_groups(model: nn.Module, backbone: Backbone, weight_decay: float) -> list[dict]:
    """Named optimizer groups: one per backbone stage, then `head` (everything outside the backbone).

    Every parameter is in a group from the start; phases switch stages on and off with requires_grad,
    so one optimizer (and its state) lives through the whole run.
    """
    in_backbone = {id(p) for p in backbone.parameters()}
    groups = [
        {"name": stage_group(i), "params": backbone.stage_parameters(i), "weight_decay": weight_decay}
        for i in range(backbone.num_stages)
    ]
    head = [p for p in model.parameters() if id(p) not in in_backbone]
    groups.append({"name": HEAD_GROUP, "params": head, "weight_decay": weight_decay})
    return [g for g in groups if g["params"]]


def frozen_stages(phase: Phase, num_stages: int) -> range:
    return range(num_stages - phase.trainable_stages)


def apply_phase(model: nn.Module, backbone: Backbone, phase: Phase, bn: str) -> int:
    """Set requires_grad for `phase`; return the number of trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = set(frozen_stages(phase, backbone.num_stages))
    for i in range(backbone.num_stages):
        for p in backbone.stage_parameters(i):
            p.requires_grad_(i not in frozen)
    if bn == "freeze":
        for m in backbone.modules():
            if isinstance(m, NORM_TYPES):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def group_lrs(phase: Phase, groups: list[dict]) -> dict[str, float]:
    """Base LR of each named group in `phase` (before the schedule's factor); frozen stages get 0."""
    lrs = {}
    frozen = set(frozen_stages(phase, len(phase.stage_lr_mults)))
    for g in groups:
        if g["name"] == HEAD_GROUP:
            lrs[g["name"]] = phase.lr
        else:
            i = int(g["name"].rsplit("stage", 1)[1]) - 1
            lrs[g["name"]] = 0.0 if i in frozen else phase.lr * phase.stage_lr_mults[i]
    return lrs


def set_train_mode(model: nn.Module, backbone: Backbone, phase: Phase, bn: str) -> None:
    """model.train(), except what must not learn: a wholly frozen backbone runs in eval mode (no dropout or
    stochastic depth either, as in classic feature extraction); otherwise the norm layers of frozen stages
    (all of them with bn='freeze') keep their running statistics."""
    model.train()
    if phase.trainable_stages == 0:
        backbone.eval()
        return
    frozen = set(frozen_stages(phase, backbone.num_stages))
    for i in range(backbone.num_stages):
        for m in backbone.stage_modules(i):
            if isinstance(m, NORM_TYPES) and (i in frozen or bn == "freeze"):
                m.eval()
