"""Detection on tiny synthetic data: every detector on several backbones, category ids round trip
through training and prediction, a Roboflow-shaped export, fine-tuning policies on detectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import cli_run, with_sections
from visiontl.backbones import create_backbone
from visiontl.config import build_config
from visiontl.data.annotations import LabelMap
from visiontl.data.formats.coco import read_coco
from visiontl.data.synthetic import make_detection_coco
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.engine.trainer import train
from visiontl.evaluation.coco import evaluate_coco
from visiontl.models.detection import build_faster_rcnn, build_ssd
from visiontl.tasks.detection import _to_results

ARCHS = ["faster_rcnn_fpn", "faster_rcnn_single", "ssd", "ssdlite"]
BACKBONES = ["vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0", "inception_v3"]
# the tiny ones run by default; the full-size grid is `slow` (`make test` runs it, `pytest -m "not slow"` does not)
GRID = ["timm:test_resnet", "timm:test_efficientnet", *(pytest.param(b, marks=pytest.mark.slow) for b in BACKBONES)]


def build(arch: str, backbone_name: str, num_classes: int = 3) -> torch.nn.Module:
    backbone = create_backbone(backbone_name, "none")
    if arch.startswith("faster_rcnn"):
        neck = "fpn" if arch.endswith("fpn") else "none"
        return build_faster_rcnn(backbone, num_classes, neck=neck, fpn_channels=32, min_size=96, max_size=128,
                                 score_threshold=0.0, detections_per_image=20)
    return build_ssd(backbone, num_classes, lite=arch == "ssdlite", ssd_size=96, score_threshold=0.0,
                     nms_threshold=0.45, detections_per_image=20)


@pytest.mark.parametrize("backbone", GRID)
@pytest.mark.parametrize("arch", ARCHS)
def test_detector_trains_two_steps_and_predicts(arch: str, backbone: str) -> None:
    torch.manual_seed(0)
    model = build(arch, backbone)
    images = [torch.rand(3, 80, 104), torch.rand(3, 72, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [60.0, 20.0, 90.0, 70.0]]), "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    head = {n: p for n, p in model.named_parameters() if not n.startswith("backbone.body.")}
    head_before = {n: p.detach().clone() for n, p in head.items()}
    model.train()
    for _ in range(2):
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    changed = [n for n, p in head.items() if not torch.equal(head_before[n], p)]
    # the class scores and the box regression learn (SSD's hard-negative mining may leave some levels untouched)
    assert any("classification_head" in n or "cls_score" in n for n in changed)
    assert any("regression_head" in n or "bbox_pred" in n for n in changed)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, img in zip(out, images):
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"]) <= 20
        if len(o["boxes"]):
            assert o["labels"].min() >= 1 and o["labels"].max() <= 3  # never background
            assert o["boxes"][:, 2].max() <= img.shape[2] + 1e-3 and o["boxes"][:, 3].max() <= img.shape[1] + 1e-3


def det_config(root: Path, run: Path, **sections: dict) -> dict:
    raw = {
        "task": "detection",
        "model": {"arch": "faster_rcnn", "backbone": "mobilenet_v2", "weights": "none", "min_size": 72, "max_size": 96,
                  "fpn_channels": 32, "score_threshold": 0.0},
        "data": {"format": "coco", "root": str(root), "train": "train.json", "val": "val.json", "augment": "light"},
        "finetune": {},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "optimizer": "sgd", "workers": 0, "device": "cpu", "progress": False},
        "run": {"dir": str(run)},
    }
    return with_sections(raw, sections)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_detection_coco(root, images=6, split="train", seed=0)
    make_detection_coco(root, images=3, split="val", seed=1)
    return root


def test_category_ids_round_trip_through_train_and_predict(shapes: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train(build_config(det_config(shapes, run)))
    assert {"bbox/AP", "bbox/AP50", "bbox/ARl", "bbox/AP/shape_0", "bbox/AP/shape_5", "bbox/AP/shape_17"} <= set(metrics)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["raw"] == "eval_raw.npz" and (run / "eval_raw.npz").is_file()
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["label_map"] == {"category_ids": [0, 5, 17], "names": ["shape_0", "shape_5", "shape_17"]}
    assert ckpt["config"]["model"]["min_size"] == 72  # the eval-time resize travels with the weights

    out = tmp_path / "pred.json"
    done = cli_run("predict", run / "checkpoints" / "last.pt", shapes / "val", "--out", out, "--score-threshold", "0.0",
                   "--draw", tmp_path / "drawn")
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results, "a score threshold of 0 keeps every detection"
    assert {r["category_id"] for r in results} <= {0, 5, 17}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and 0 <= r["score"] <= 1 for r in results)
    assert {Path(r["file_name"]).name for r in results} <= {f"img_{i:03d}.png" for i in range(3)}
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 3

    done = cli_run("evaluate", run / "checkpoints" / "last.pt", "--out", tmp_path / "eval")
    assert done.returncode == 0, done.stderr
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["bbox/AP"] == pytest.approx(saved["bbox/AP"], abs=1e-9)


def roboflow_export(root: Path) -> Path:
    """The shape of a Roboflow COCO export: a supercategory-only category at id 0 without annotations,
    real classes from id 1, one class with a single sample, ids of annotations from 0."""
    path = make_detection_coco(root, images=5, split="train", category_ids=(1, 2, 3), seed=4, empty=0)
    coco = json.loads(path.read_text())
    coco["categories"] = [{"id": 0, "name": "cells", "supercategory": "none"}] + [
        {"id": c["id"], "name": n, "supercategory": "cells"} for c, n in zip(coco["categories"], ["RBC", "WBC", "Platelets"])]
    keep_one = [a for a in coco["annotations"] if a["category_id"] == 3][:1]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 3] + keep_one
    path.write_text(json.dumps(coco))
    return path


def test_roboflow_shaped_export_has_no_silent_zero(tmp_path: Path) -> None:
    path = roboflow_export(tmp_path)
    aset = read_coco(path)
    label_map = LabelMap.from_set(aset)
    assert label_map.category_ids == (1, 2, 3) and label_map.names == ("RBC", "WBC", "Platelets")
    # ground truth fed back as detections through the model's label space scores 1.0: the mapping is right
    fake = []
    for inst in aset.instances:
        x, y, w, h = inst.bbox
        out = {"boxes": torch.tensor([[x, y, x + w, y + h]]), "labels": torch.tensor([label_map.label(inst.category_id)]),
               "scores": torch.tensor([0.9])}
        fake += _to_results(inst.image_id, out, label_map)
    metrics, _ = evaluate_coco(aset, fake)
    assert metrics["bbox/AP"] == pytest.approx(1.0) and metrics["bbox/AP/Platelets"] == pytest.approx(1.0)

    raw = det_config(tmp_path, tmp_path / "run", data={"train": "train.json", "val": "train.json"})
    metrics = train(build_config(raw))
    assert {"bbox/AP/RBC", "bbox/AP/WBC", "bbox/AP/Platelets"} <= set(metrics)
    assert "bbox/AP/cells" not in metrics
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["classes"] == ["RBC", "WBC", "Platelets"]


def test_partial_freezing_on_a_detector(shapes: Path, tmp_path: Path) -> None:
    raw = det_config(shapes, tmp_path / "run", finetune={"strategy": "partial", "freeze_stages": 3},
                     model={"weights": "none"}, train={"epochs": 1})
    train(build_config(raw))
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    torch.manual_seed(0)
    fresh = create_backbone("mobilenet_v2", "none")  # the same seed-0 initialisation the run started from
    state = ckpt["model"]
    prefix = "backbone.body.body."
    frozen = [n for s in fresh.stages[:3] for n in s.param_names]
    trained = [n for s in fresh.stages[3:] for n in s.param_names]
    reference = fresh.state_dict()
    assert all(torch.equal(state["backbone.body." + n], reference[n]) for n in frozen)
    assert any(not torch.equal(state["backbone.body." + n], reference[n]) for n in trained)
    assert all(k.startswith(prefix) for k in state if k.startswith("backbone.body.") and "fpn" not in k)


def test_fine_tune_from_a_detector_with_other_classes(shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = tmp_path / "first"
    train(build_config(det_config(shapes, first)))
    other = tmp_path / "other"
    path = make_detection_coco(other, images=4, split="train", category_ids=(7, 9), seed=2)
    (other / "val.json").write_text(path.read_text())
    raw = det_config(other, tmp_path / "second", model={"weights": str(first / "checkpoints" / "last.pt")})
    train(build_config(raw))
    second = load_checkpoint(tmp_path / "second" / "checkpoints" / "last.pt")
    assert second["label_map"]["category_ids"] == [7, 9]
    assert second["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3  # 2 classes + background


def test_data_preview_writes_a_picture(shapes: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(det_config(shapes, tmp_path / "run", data={"augment": "strong"})))
    done = cli_run("data", "preview", cfg, "--n", "4", "--out", tmp_path / "prev")
    assert done.returncode == 0, done.stderr
    from PIL import Image

    with Image.open(tmp_path / "prev" / "preview.png") as im:
        assert im.size[0] == 2 * 256 and im.size[1] >= 2 * 256


def test_mask_rcnn_two_steps_and_segm_equal_to_pycocotools(tmp_path: Path) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from visiontl.engine.inference import load_trained
    from visiontl.evaluation.coco import to_coco_dict

    make_detection_coco(tmp_path, images=6, split="train", seed=0)  # rectangles with polygon segmentations
    make_detection_coco(tmp_path, images=3, split="val", seed=1)
    raw = det_config(tmp_path, tmp_path / "run", train={"epochs": 1, "batch_size": 3})
    raw["task"] = "instance_segmentation"
    raw["model"]["arch"] = "mask_rcnn"
    metrics = train(build_config(raw))
    assert {"bbox/AP", "segm/AP", "segm/AP50", "segm/ARl", "segm/AP/shape_5"} <= set(metrics)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2

    loaded = load_trained(tmp_path / "run" / "checkpoints" / "last.pt")
    data = loaded.task.prepare_data(loaded.config)
    _, val_set = loaded.task.datasets(loaded.config, data, loaded.backbone, augment=False)
    results = []
    for k in range(len(val_set)):
        image, _, image_id = val_set[k]
        out = loaded.task.detect(loaded.model, [image], torch.device("cpu"), contextlib.nullcontext())[0]
        results += _to_results(image_id, out, data.label_map)
    assert results and all("segmentation" in r for r in results)
    ours, _ = evaluate_coco(data.val, results, "segm")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = to_coco_dict(data.val)
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes([dict(r) for r in results]), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    from visiontl.evaluation.coco import METRIC_NAMES

    for name, value in zip(METRIC_NAMES, ev.stats):
        assert ours[f"segm/{name}"] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("task, arch", [("instance_segmentation", "mask_rcnn"), ("detection", "faster_rcnn")])
def test_fine_tune_from_an_instance_segmentation_checkpoint(tmp_path: Path, task: str, arch: str) -> None:
    """A Mask R-CNN checkpoint starts a detector whole: every tensor that fits (the mask head too, for a Mask
    R-CNN) is loaded, not only the backbone's."""
    from visiontl.engine.checkpoint import save_checkpoint
    from visiontl.tasks import get_task

    def build_model(weights: str) -> torch.nn.Module:
        raw = det_config(tmp_path, tmp_path / "run", model={"arch": arch, "weights": weights})
        raw["task"] = task
        cfg = build_config(raw)
        torch.manual_seed(2)
        return get_task(cfg).build_model(cfg, create_backbone(cfg.model.backbone, "none"), ["a", "b"])

    raw = det_config(tmp_path, tmp_path / "run", model={"arch": "mask_rcnn"})
    raw["task"] = "instance_segmentation"
    cfg = build_config(raw)
    torch.manual_seed(1)
    trained = get_task(cfg).build_model(cfg, create_backbone(cfg.model.backbone, "none"), ["a", "b", "c"])
    path = tmp_path / "maskrcnn.pt"
    save_checkpoint(path, {"model": trained.state_dict(), "config": cfg.to_dict(), "task": "instance_segmentation"})
    fresh, tuned = build_model("none").state_dict(), build_model(str(path)).state_dict()
    source = trained.state_dict()
    fits = [k for k in tuned if k in source and source[k].shape == tuned[k].shape]
    assert any(k.startswith("roi_heads.box_head.") for k in fits)  # beyond the backbone
    assert (arch == "mask_rcnn") == any(k.startswith("roi_heads.mask_head.") for k in fits)
    for key in fits:
        assert torch.equal(tuned[key], source[key]), key
    # the class heads (3 classes there, 2 here) keep their fresh initialisation
    assert torch.equal(tuned["roi_heads.box_predictor.cls_score.weight"], fresh["roi_heads.box_predictor.cls_score.weight"])
