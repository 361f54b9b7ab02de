"""Fine-tuning policies: what trains, at which learning rate, and when.

Every strategy is a list of phases. A phase says how many of the deepest backbone stages train (the head
always trains), the base LR and the per-stage LR multipliers:

- feature_extraction: one phase, no backbone stage trains;
- partial: one phase, the first `freeze_stages` stages are frozen;
- full: one phase, everything trains;
- staged: the phases of `finetune.stages`, in order (e.g. head only, then the last stages, then all).

Frozen means frozen: a frozen parameter gets no gradient (so no optimizer, weight decay or momentum moves
it) and every normalisation layer in a frozen stage stays in eval mode, so its running statistics do not
move either. Tensors of frozen stages stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from visiontl.backbones import Backbone
from visiontl.backbones.base import NORM_TYPES
from visiontl.config import Config
from visiontl.errors import ConfigError

HEAD_GROUP = "head"


@dataclass(frozen=True)
class Phase:
    index: int
    start_epoch: int  # first epoch of the phase (0-based)
    epochs: int
    trainable_stages: int  # how many of the deepest backbone stages train
    lr: float
    stage_lr_mults: tuple[float, ...]  # one per backbone stage, shallow to deep

    @property
    def end_epoch(self) -> int:
        return self.start_epoch + self.epochs


def _stage_mults(lr_mult: float | list[float], num_stages: int, key: str) -> tuple[float, ...]:
    if isinstance(lr_mult, list):
        if len(lr_mult) != num_stages:
            raise ConfigError(
                f"{key}: the backbone has {num_stages} stages, so the list needs {num_stages} multipliers, "
                f"got {len(lr_mult)}"
            )
        return tuple(float(m) for m in lr_mult)
    return tuple(float(lr_mult) ** (num_stages - i) for i in range(num_stages))


def plan_phases(cfg: Config, num_stages: int) -> list[Phase]:
    ft, lr, epochs = cfg.finetune, cfg.train.lr, cfg.train.epochs
    mults = _stage_mults(ft.lr_mult, num_stages, "finetune.lr_mult")
    if ft.strategy == "feature_extraction":
        return [Phase(0, 0, epochs, 0, lr, mults)]
    if ft.strategy == "full":
        return [Phase(0, 0, epochs, num_stages, lr, mults)]
    if ft.strategy == "partial":
        if ft.freeze_stages > num_stages:
            raise ConfigError(
                f"finetune.freeze_stages: should be in the range [1, {num_stages}] for {cfg.model.backbone}, "
                f"got {ft.freeze_stages}"
            )
        return [Phase(0, 0, epochs, num_stages - ft.freeze_stages, lr, mults)]
    phases, start = [], 0
    for i, p in enumerate(ft.stages):
        key = f"finetune.stages.{i}"
        unfreeze = num_stages if p.unfreeze == "all" else p.unfreeze
        if unfreeze > num_stages:
            raise ConfigError(f"{key}.unfreeze: {cfg.model.backbone} has {num_stages} stages, got {unfreeze}")
        phase_mults = mults if p.lr_mult is None else _stage_mults(p.lr_mult, num_stages, f"{key}.lr_mult")
        phases.append(Phase(i, start, p.epochs, unfreeze, p.lr if p.lr is not None else lr, phase_mults))
        start += p.epochs
    return phases


def phase_at(phases: list[Phase], epoch: int) -> Phase:
    for phase in phases:
        if epoch < phase.end_epoch:
            return phase
    return phases[-1]


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
