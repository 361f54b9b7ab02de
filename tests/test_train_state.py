"""TrainState: what a checkpoint holds of a run in progress, written and read back."""

from __future__ import annotations

import torch

from visiontl.engine.resilience import EpochProgress
from visiontl.engine.state import TrainState


def _optimizer() -> tuple[torch.optim.Optimizer, torch.amp.GradScaler]:
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([{"params": [weight], "name": "head"}], lr=0.1, momentum=0.9)
    weight.grad = torch.full((2,), 0.5)
    optimizer.step()
    return optimizer, torch.amp.GradScaler("cuda", enabled=False)


def test_a_mid_epoch_checkpoint_round_trips() -> None:
    optimizer, scaler = _optimizer()
    state = TrainState(epoch=2, step=17, best={"value": 0.75, "epoch": 2}, bad_epochs=0,
                       metrics={"accuracy": 0.75, "loss": 0.5, "protocol": {"prediction": "argmax"}})
    progress = EpochProgress(batches=6, loss_total=torch.tensor(3.25), seen=24, skipped=1)
    ckpt = state.to_checkpoint(optimizer, scaler, steps_per_epoch=8, phase=1, progress=progress)
    assert ckpt["scheduler"] == {"step": 17, "steps_per_epoch": 8} and ckpt["phase"] == 1 and ckpt["epoch"] == 2
    assert ckpt["metrics"] == {"accuracy": 0.75, "loss": 0.5}  # numbers only
    assert ckpt["progress"] == {"batches": 6, "loss_total": torch.tensor(3.25), "seen": 24, "skipped": 1}
    assert ckpt["optimizer"]["state"][0]["momentum_buffer"].tolist() == [0.5, 0.5]
    back = TrainState.from_checkpoint(ckpt)
    assert (back.epoch, back.step, back.best, back.bad_epochs) == (2, 17, {"value": 0.75, "epoch": 2}, 0)
    assert back.metrics == {"accuracy": 0.75, "loss": 0.5}
    p = back.progress
    assert (p.batches, float(p.loss_total), p.seen, p.skipped, p.rng) == (6, 3.25, 24, 1, ckpt["rng"])


def test_an_epoch_end_checkpoint_has_no_progress() -> None:
    optimizer, scaler = _optimizer()
    ckpt = TrainState(epoch=3, step=24).to_checkpoint(optimizer, scaler, 8, 0)
    assert "progress" not in ckpt
    back = TrainState.from_checkpoint(ckpt)
    assert (back.epoch, back.step, back.progress.batches, back.progress.rng) == (3, 24, 0, None)


def test_record_keeps_the_best_and_counts_the_epochs_without_improvement() -> None:
    state = TrainState()
    assert state.record(0.5, 1, sign=1.0, min_delta=0.01)
    assert not state.record(0.505, 2, sign=1.0, min_delta=0.01)  # not better by more than min_delta
    assert (state.best, state.bad_epochs) == ({"value": 0.5, "epoch": 1}, 1)
    assert state.record(0.6, 3, sign=1.0, min_delta=0.01)
    assert (state.best, state.bad_epochs) == ({"value": 0.6, "epoch": 3}, 0)
    lower = TrainState()  # a loss: lower is better
    assert lower.record(0.4, 1, sign=-1.0, min_delta=0.0) and not lower.record(0.45, 2, sign=-1.0, min_delta=0.0)
    assert lower.bad_epochs == 1
