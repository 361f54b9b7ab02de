"""What a checkpoint holds of a run in progress beside the model: where the run stands (TrainState), with the
optimizer, the grad scaler and the RNGs, so that --resume continues tensor for tensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from visiontl.engine.resilience import EpochProgress
from visiontl.engine.seed import rng_state


@dataclass
class TrainState:
    """Where a run stands. `epoch` counts finished epochs; `step` optimizer steps taken (it moves during an
    epoch); `progress` is how far the epoch in hand got (a resumed half-epoch continues from it)."""

    epoch: int = 0
    step: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "epoch": None})
    bad_epochs: int = 0  # epochs since the monitored metric last improved (early stopping)
    metrics: dict[str, Any] = field(default_factory=dict)  # the last validation's
    progress: EpochProgress = field(default_factory=EpochProgress)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        """The state a checkpoint written by `to_checkpoint` saved (the RNG states are the caller's to set)."""
        progress = EpochProgress.from_state(ckpt["progress"], ckpt["rng"]) if ckpt.get("progress") else EpochProgress()
        return cls(int(ckpt["epoch"]), int(ckpt["step"]), dict(ckpt["best"]), int(ckpt["bad_epochs"]),
                   dict(ckpt.get("metrics", {})), progress)

    def to_checkpoint(self, optimizer: torch.optim.Optimizer, scaler: Any, steps_per_epoch: int, phase: int,
                      progress: EpochProgress | None = None) -> dict[str, Any]:
        """The checkpoint's entries beside the model's (trainer.checkpoint_dict). `progress`: a mid-epoch
        checkpoint, which --resume continues from inside epoch `epoch + 1`."""
        state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "scheduler": {"step": self.step, "steps_per_epoch": steps_per_epoch}, "step": self.step,
                 "phase": phase, "best": self.best, "bad_epochs": self.bad_epochs, "metrics": scalars(self.metrics),
                 "rng": rng_state(), "epoch": self.epoch}
        if progress is not None:
            state["progress"] = progress.to_state()
        return state

    def record(self, value: float, epoch: int, sign: float, min_delta: float) -> bool:
        """The monitored metric of finished epoch `epoch` (1-based): True when it is the best so far by more
        than `min_delta` (`sign` -1 when lower is better); else one more epoch without improvement."""
        improved = self.best["value"] is None or sign * (value - self.best["value"]) > min_delta
        if improved:
            self.best, self.bad_epochs = {"value": value, "epoch": epoch}, 0
        else:
            self.bad_epochs += 1
        return improved


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics dict (what checkpoints keep): no protocol, per-image records or raw arrays."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
