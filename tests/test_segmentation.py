"""Semantic segmentation: every seed backbone under a U-Net at an odd input size, the other decoders,
losses, and an end-to-end run with prediction PNGs of the input's exact size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE, cli_run, with_sections
from visiontl.backbones import create_backbone, list_backbones
from visiontl.config import build_config
from visiontl.data.synthetic import make_detection_coco, make_segmentation_folders
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.engine.trainer import train
from visiontl.models.segmentation import SegmentationModel
from visiontl.tasks.segmentation import SegmentationLoss


# the tiny backbones run by default; every registered one is `slow` (`make test` runs them)
@pytest.mark.parametrize("name", ["timm:test_resnet", "timm:test_efficientnet",
                                  *(pytest.param(name, marks=pytest.mark.slow) for name in list_backbones())])
def test_unet_step_and_exact_output_size(name: str) -> None:
    torch.manual_seed(0)
    model = SegmentationModel(create_backbone(name, "none"), num_classes=4, arch="unet")
    x = torch.randn(2, 3, 77, 99)  # odd on both sides, not a multiple of 32
    target = torch.randint(0, 4, (2, 77, 99))
    target[:, :5] = 255
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = SegmentationLoss("ce", 255)(model(x), target)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 77, 99)).shape == (1, 4, 77, 99)


DECODER_BACKBONES = ["timm:test_resnet", "timm:test_convnext",
                     *(pytest.param(n, marks=pytest.mark.slow) for n in ("resnet18", "convnext_tiny", "inception_v3"))]


@pytest.mark.parametrize("arch", ["fpn", "deeplabv3plus"])
@pytest.mark.parametrize("name", DECODER_BACKBONES)
def test_other_decoders(arch: str, name: str) -> None:
    model = SegmentationModel(create_backbone(name, "none"), num_classes=3, arch=arch).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 153, 201)).shape == (1, 3, 153, 201)


@pytest.mark.parametrize("kind", ["ce", "dice", "focal", "ce+dice", "ce+focal"])
def test_losses_ignore_the_ignore_index(kind: str) -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    loss_fn = SegmentationLoss(kind, 255, [1.0, 2.0, 0.5])
    base = loss_fn(logits, target)
    masked = target.clone()
    masked[:, :4] = 255
    changed_logits = logits.detach().clone()
    changed_logits[:, :, :4] += 5.0  # changes where the target is ignored must not matter
    assert torch.allclose(loss_fn(logits, masked), loss_fn(changed_logits, masked))
    assert torch.isfinite(base)
    base.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def seg_config(root: Path, run: Path, **sections: dict) -> dict:
    raw = {
        "task": "segmentation",
        "model": {"arch": "unet", "backbone": TINY_BACKBONE, "weights": "none", "decoder_channels": [64, 32, 16, 16, 8]},
        "data": {"format": "masks", "root": str(root), "train": "images/train", "train_masks": "masks/train",
                 "val": "images/val", "val_masks": "masks/val", "classes": ["background", "red", "green"],
                 "image_size": 48, "augment": "standard"},
        "finetune": {},
        "train": {"epochs": 2, "batch_size": 3, "lr": 0.005, "workers": 0, "device": "cpu", "progress": False},
        "run": {"dir": str(run)},
    }
    return with_sections(raw, sections)


def test_train_evaluate_predict_masks(tmp_path: Path) -> None:
    root = make_segmentation_folders(tmp_path / "data")
    run = tmp_path / "run"
    metrics = train(build_config(seg_config(root, run, model={"loss": "ce+dice"})))
    assert {"mIoU", "mDice", "pixel_accuracy", "IoU/red", "IoU/green", "confusion_matrix"} <= set(metrics)
    assert 0.0 <= metrics["mIoU"] <= 1.0
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best"]["epoch"] in (1, 2) and "mIoU" in (run / "log.csv").read_text().splitlines()[0]
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["classes"] == ["background", "red", "green"] and ckpt["task"] == "segmentation"

    out = tmp_path / "pred"
    done = cli_run("predict", run / "checkpoints" / "best.pt", root / "images" / "val", "--out", out, "--overlay")
    assert done.returncode == 0, done.stderr
    for image in sorted((root / "images" / "val").iterdir()):
        with Image.open(out / f"{image.stem}.png") as mask, Image.open(image) as im:
            assert mask.size == im.size == (67, 53)
            assert np.asarray(mask).max() < 3
        assert (out / "overlay" / f"{image.stem}.png").is_file()

    done = cli_run("evaluate", run / "checkpoints" / "best.pt", "--out", tmp_path / "eval")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["mIoU"] == pytest.approx(saved["best"]["mIoU"])


def test_overfit_one_batch_learns_the_masks(tmp_path: Path) -> None:
    root = make_segmentation_folders(tmp_path / "data", train=2, val=1)
    # resnet18: the thresholds below are what its capacity reaches in 25 steps
    metrics = train(build_config(seg_config(root, tmp_path / "run", model={"backbone": "resnet18"},
                                            train={"overfit_batches": 1, "epochs": 25, "lr": 0.01, "batch_size": 2,
                                                   "optimizer": "adam", "schedule": "constant"})))
    assert metrics["pixel_accuracy"] > 0.9 and metrics["mIoU"] > 0.5


def test_coco_polygons_as_semantic_masks(tmp_path: Path) -> None:
    make_detection_coco(tmp_path, images=4, split="train", seed=0)
    make_detection_coco(tmp_path, images=2, split="val", seed=1)
    raw = seg_config(tmp_path, tmp_path / "run", data={"format": "coco", "train": "train.json", "val": "val.json",
                                                       "classes": None, "train_masks": None, "val_masks": None},
                     train={"epochs": 1})
    metrics = train(build_config(raw))
    assert {"IoU/background", "IoU/shape_0", "IoU/shape_5", "IoU/shape_17"} <= set(metrics)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["label_map"]["category_ids"] == [0, 5, 17]


def test_preview_blends_the_masks(tmp_path: Path) -> None:
    from visiontl.data.preview import preview

    root = make_segmentation_folders(tmp_path / "data", train=2, val=1)
    path = preview(build_config(seg_config(root, tmp_path / "run")), 2, tmp_path / "prev")
    with Image.open(path) as im:
        assert im.size[0] == 2 * 256 and im.size[1] >= 256  # two cells of 256 px, titles below
        assert np.asarray(im.convert("RGB")).std() > 10  # a picture, not a blank canvas
