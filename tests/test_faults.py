"""Faults during training: a non-finite loss stops with the step and the images named, or is skipped and
counted; the last checkpoint is kept either way."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from visiontl.config import build_config
from visiontl.engine.trainer import train
from visiontl.errors import TrainingError
from visiontl.tasks.classification import ClassificationTask


def _nan_at(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int]) -> None:
    real = ClassificationTask.loss
    calls = [0]

    def loss(self, model, batch, device):
        calls[0] += 1
        value, n = real(self, model, batch, device)
        return (value * float("nan") if calls[0] in bad_calls else value), n

    monkeypatch.setattr(ClassificationTask, "loss", loss)


def test_nan_loss_stops_naming_step_and_images(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    _nan_at(monkeypatch, {5})  # 24 train images, batch 8: step 5 is the 2nd step of epoch 2
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss is nan at step 5 \(epoch 2\), batch images: .*\.png") as err:
        train(build_config(tiny_config(synthetic_root, run, train={"epochs": 3})))
    assert "train.skip_nonfinite" in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).count(".png") == 8  # the whole batch, by file
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1  # epoch 1's checkpoint is intact
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_nan_loss_skipped_and_counted(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    _nan_at(monkeypatch, {2, 5})
    run = tmp_path / "run"
    train(build_config(tiny_config(synthetic_root, run, train={"epochs": 2, "skip_nonfinite": True})))
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["skipped_steps"] for r in rows] == ["1", "1"]
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in rows)  # not NaN: skipped steps left out
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
