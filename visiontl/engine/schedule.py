"""Learning-rate schedules as a pure function of the step: nothing to restore on resume but the step."""

from __future__ import annotations

import math

from visiontl.config import TrainConfig
from visiontl.finetune import Phase


def lr_factor(train: TrainConfig, phase: Phase, step: int, steps_per_epoch: int) -> float:
    """Multiplier of each group's base LR at the run's optimizer step `step` (0-based), inside `phase`: a linear
    warm-up over the phase's first `warmup_steps`, then the schedule over the rest of the phase."""
    in_phase = step - phase.start_step
    warmup = phase.warmup_steps
    if warmup and in_phase < warmup:
        return (in_phase + 1) / (warmup + 1)
    if train.schedule == "constant":
        return 1.0
    if train.schedule == "step":
        return train.step_gamma ** ((in_phase // steps_per_epoch) // train.step_epochs)
    span = max(1, phase.steps - warmup)
    t = min(1.0, (in_phase - warmup) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))
