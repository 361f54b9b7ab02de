"""Learning-rate schedules as a pure function of the step: nothing to restore on resume but the step."""

from __future__ import annotations

import math

from visiontl.config import TrainConfig


def lr_factor(train: TrainConfig, step_in_phase: int, phase_steps: int, epoch_in_phase: int) -> float:
    """Multiplier of each group's base LR at optimizer step `step_in_phase` (0-based) of a phase."""
    if train.warmup_steps and step_in_phase < train.warmup_steps:
        return (step_in_phase + 1) / (train.warmup_steps + 1)
    if train.schedule == "constant":
        return 1.0
    if train.schedule == "step":
        return train.step_gamma ** (epoch_in_phase // train.step_epochs)
    span = max(1, phase_steps - train.warmup_steps)
    t = min(1.0, (step_in_phase - train.warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))
