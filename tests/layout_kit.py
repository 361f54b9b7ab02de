"""The layout conformance suite's one check (tests/test_layouts_*.py): a dataset written in the exact shape an
exporter writes is checked (`visiontl data check`), converted (`visiontl data convert --to coco`) and trained
for 2 steps, with no hand work beyond data.format, data.root and the keys the layout's docs name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import run_main, with_sections


def tiny_detection(root: Path, run: Path, data: dict[str, Any]) -> dict:
    raw = {
        "task": "detection",
        "model": {"arch": "faster_rcnn", "backbone": "mobilenet_v2", "weights": "none", "min_size": 64,
                  "max_size": 96, "fpn_channels": 16, "score_threshold": 0.0},
        "data": {"root": str(root), "augment": "none"},
        "finetune": {},
        "train": {"epochs": 1, "max_steps": 2, "batch_size": 2, "lr": 0.01, "optimizer": "sgd", "workers": 0,
                  "device": "cpu", "progress": False},
        "run": {"dir": str(run)},
    }
    return with_sections(raw, {"data": data})


def write_jpeg(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    """A small photo-like JPEG (noise), with its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def check_convert_train(capsys: pytest.CaptureFixture, tmp_path: Path, fmt: str, source: Path,
                        data: dict[str, Any], check_args: tuple[str, ...] = (), images: int | None = None,
                        boxes: int | None = None) -> dict[str, float]:
    """`data check SOURCE --format FMT` exits 0; `data convert` to COCO keeps `images` images and `boxes`
    boxes (when given); `train` with `data` (format, root, splits...) runs 2 steps. Returns the metrics."""
    from visiontl.config import build_config
    from visiontl.engine.trainer import train

    code, out, err = run_main(["data", "check", str(source), "--format", fmt, *check_args], capsys)
    assert code == 0, out + err
    checked = next(line for line in out.splitlines() if line.startswith("checked "))  # what a clean check covered
    if images is not None:
        assert checked.startswith(f"checked {images} image(s) (decoded in full), "), checked
    out_dir = tmp_path / "as_coco"
    code, out, err = run_main(["data", "convert", str(source), "--from", fmt, *check_args, "--to", "coco",
                               "--out", str(out_dir)], capsys)
    assert code == 0, out + err
    written = json.loads(next(out_dir.glob("*.json")).read_text())
    if images is not None:
        assert len(written["images"]) == images
    if boxes is not None:
        assert len(written["annotations"]) == boxes
    metrics = train(build_config(tiny_detection(Path(data.pop("root")), tmp_path / "run", {"format": fmt, **data})))
    assert "bbox/AP" in metrics
    return metrics
