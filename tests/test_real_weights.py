"""Real ImageNet weights (torchvision's MobileNetV2 file, from the package index) on real images: blood-cell
crops cut from the shipped BCCD sample. Pretrained features must clearly beat scratch at equal epochs, and
feature extraction must leave every backbone tensor bit-identical to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from visiontl.config import build_config
from visiontl.demo import SAMPLE, cut_crops, demo_config, frozen_tensors_identical
from visiontl.engine.trainer import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bccd_crops")
    counts = cut_crops(SAMPLE, out)
    assert counts["train"] == {"Platelets": 60, "RBC": 62, "WBC": 62}
    return out


def run(crops: Path, run_dir: Path, weights: str, strategy: str) -> dict:
    raw = demo_config(crops, run_dir, weights, epochs=3, overrides={"finetune.strategy": strategy, "train.lr": 0.01})
    raw["data"]["image_size"] = 64
    raw["train"].update(workers=0, batch_size=32)
    return train(build_config(raw))


def test_feature_extraction_beats_scratch_and_stays_frozen(mobilenet_file: Path, crops: Path, tmp_path: Path) -> None:
    pretrained = run(crops, tmp_path / "fe", "imagenet", "feature_extraction")
    scratch = run(crops, tmp_path / "scratch", "none", "full")
    assert pretrained["accuracy"] >= 0.85
    assert pretrained["accuracy"] >= scratch["accuracy"] + 0.15
    identical, compared = frozen_tensors_identical(tmp_path / "fe" / "checkpoints" / "last.pt", mobilenet_file)
    assert compared == 312 and identical == compared  # every weight and BatchNorm buffer of the file
