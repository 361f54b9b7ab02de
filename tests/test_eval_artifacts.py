"""The evaluation files a run report reads: per-image scores (eval_images.json), the detection confusion
matrix (eval_raw.npz), the gallery of worst and best images, metrics.json's protocol and run.json."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from test_segmentation import seg_config
from visiontl.config import build_config
from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.synthetic import make_segmentation_folders
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.engine.gallery import pick_examples
from visiontl.engine.inference import evaluate_checkpoint
from visiontl.engine.trainer import train
from visiontl.errors import DataError
from visiontl.evaluation.detection_confusion import detection_confusion
from visiontl.evaluation.per_image import (detection_image_scores, display_threshold, image_confusions,
                                           segmentation_image_scores)
from visiontl.evaluation.segmentation import SegmentationMetrics

CAT, DOG = 1, 2  # category ids; matrix positions 0 and 1, background 2


def annotations(*images: list[tuple[int, tuple[float, float, float, float], bool]]) -> AnnotationSet:
    """One image per argument (ids 1, 2, ...), each a list of (category id, [x, y, w, h], iscrowd)."""
    records = [ImageRecord(i, f"img_{i}.png", 100, 100) for i in range(1, len(images) + 1)]
    instances = [Instance(len(records) * 100 + n, image_id, cat, box, crowd)
                 for image_id, objects in enumerate(images, start=1) for n, (cat, box, crowd) in enumerate(objects)]
    return AnnotationSet([Category(CAT, "cat"), Category(DOG, "dog")], records, instances, Path("."))


def result(image_id: int, cat: int, box: tuple[float, float, float, float], score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


A, B = (0, 0, 10, 10), (20, 20, 10, 10)


@pytest.mark.parametrize("gts, preds, expected", [
    # right place, right class: the diagonal
    ([(CAT, A, False)], [(CAT, A, 0.9)], [[1, 0, 0], [0, 0, 0], [0, 0, 0]]),
    # right place, wrong class: row dog, column cat
    ([(DOG, B, False)], [(CAT, B, 0.8)], [[0, 0, 0], [1, 0, 0], [0, 0, 0]]),
    # a detection where there is nothing: background row
    ([], [(DOG, A, 0.7)], [[0, 0, 0], [0, 0, 0], [0, 1, 0]]),
    # an object nobody found: background column
    ([(CAT, A, False)], [], [[0, 0, 1], [0, 0, 0], [0, 0, 0]]),
    # a crowd region neither counts nor matches, and a detection inside it is not a false positive
    ([(CAT, (0, 0, 50, 50), True)], [(CAT, (5, 5, 10, 10), 0.9)], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]),
    # a detection below the score threshold does not exist: the object is missed
    ([(DOG, A, False)], [(DOG, A, 0.3)], [[0, 0, 0], [0, 0, 1], [0, 0, 0]]),
    # too little overlap (IoU 25/175) is a false positive and a miss
    ([(CAT, A, False)], [(CAT, (5, 5, 10, 10), 0.9)], [[0, 0, 1], [0, 0, 0], [1, 0, 0]]),
    # a same-class ground truth is preferred to a better-overlapping one of another class
    ([(DOG, (0, 0, 10, 10), False), (CAT, (0, 0, 10, 14), False)], [(CAT, (0, 0, 10, 11), 0.9)],
     [[1, 0, 0], [0, 0, 1], [0, 0, 0]]),
    # greedy by score: the higher score takes the object, the duplicate is a false positive
    ([(CAT, A, False)], [(DOG, A, 0.6), (CAT, A, 0.95)], [[1, 0, 0], [0, 0, 0], [0, 1, 0]]),
])
def test_detection_confusion_hand_made_cases(gts: list, preds: list, expected: list) -> None:
    gt = annotations(gts)
    results = [result(1, cat, box, score) for cat, box, score in preds]
    matrix = detection_confusion(gt, results, [CAT, DOG], iou=0.5, score=0.5)
    assert matrix.shape == (3, 3) and matrix.dtype == np.int64
    assert matrix.tolist() == expected


def test_detection_confusion_sums_over_images_and_refuses_unknown_ids() -> None:
    gt = annotations([(CAT, A, False)], [(DOG, B, False)], [])
    results = [result(1, CAT, A, 0.9), result(2, CAT, B, 0.8), result(3, DOG, A, 0.7)]
    assert detection_confusion(gt, results, [CAT, DOG]).tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    with pytest.raises(DataError, match="category id 7"):
        detection_confusion(gt, [result(1, 7, A, 0.9)], [CAT, DOG])
    with pytest.raises(DataError, match="image id 9"):
        detection_confusion(gt, [result(9, CAT, A, 0.9)], [CAT, DOG])


def test_detection_per_image_f1_by_hand() -> None:
    gt = annotations([(CAT, A, False), (DOG, B, False)], [], [(CAT, (0, 0, 50, 50), True)])
    results = [
        result(1, CAT, A, 0.9),              # true positive
        result(1, CAT, B, 0.8),              # right place, wrong class: a false positive for F1
        result(1, DOG, (60, 60, 10, 10), 0.6),  # nothing there: a false positive
        result(1, DOG, B, 0.4),              # would be right, but scores below the threshold
        result(3, CAT, (5, 5, 10, 10), 0.9),  # inside a crowd region of its class: ignored
    ]
    scores = detection_image_scores(gt, results, [CAT, DOG], score=0.5)
    assert scores[1] == {"score": pytest.approx(2 * 1 / (2 + 3)), "num_gt": 2, "num_pred": 3, "tp": 1}
    assert scores[2] == {"score": 1.0, "num_gt": 0, "num_pred": 0, "tp": 0}  # nothing to find, nothing found
    assert scores[3] == {"score": 1.0, "num_gt": 0, "num_pred": 0, "tp": 0}
    assert [display_threshold(0.5, t) for t in (0.05, 0.3, 0.7)] == [0.5, 0.5, 0.7]
    assert display_threshold(0.2, 0.05) == 0.2


def test_segmentation_per_image_iou_by_hand() -> None:
    target = torch.tensor([[[0, 0, 1], [1, 1, 255]], [[255, 255, 255], [255, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]], [[0, 1, 2], [0, 1, 2]]])
    confusions = image_confusions(pred, target, 3, 255)
    # image 0, labelled pixels (true, predicted): (0,0) (0,1) (1,1) (1,1) (1,2); the pixel under 255 is not counted
    assert confusions[0].tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 0]]
    assert confusions[1].sum() == 0
    miou, accuracy = segmentation_image_scores(confusions.numpy())
    # IoU: class 0 1/(1+0+1), class 1 2/(2+1+1), class 2 0/(0+1+0): mean 1/3; accuracy 3 of 5
    assert miou.tolist() == pytest.approx([1 / 3, 1.0]) and accuracy.tolist() == pytest.approx([0.6, 1.0])
    whole = SegmentationMetrics(["a", "b", "c"], 255)
    whole.update(pred, target)
    assert torch.equal(confusions.sum(0), whole.matrix)


def test_pick_examples_worst_and_best_without_repeats() -> None:
    records = [{"file": f"f{i}", "score": s} for i, s in enumerate([0.5, 0.1, 0.9, 0.1, 0.7, 0.3, 0.9, 0.2, 0.6, 0.4])]
    picked = [(kind, r["file"]) for kind, r in pick_examples(records)]
    assert picked == [("worst", "f1"), ("worst", "f3"), ("worst", "f7"), ("worst", "f5"),
                      ("best", "f2"), ("best", "f6"), ("best", "f4"), ("best", "f8")]
    few = [(kind, r["file"]) for kind, r in pick_examples(records[:3])]
    assert few == [("worst", "f1"), ("worst", "f0"), ("best", "f2")]


RUN_KEYS = {"command", "task", "visiontl", "python", "torch", "torchvision", "timm", "segmentation_models_pytorch",
            "albumentations", "numpy", "platform", "device", "started", "finished", "wall_seconds", "train_images",
            "val_images"}


def check_gallery(folder: Path, images: int) -> list[dict]:
    index = json.loads((folder / "gallery" / "index.json").read_text())
    worst = min(4, (images + 1) // 2)
    assert [e["kind"] for e in index] == ["worst"] * worst + ["best"] * min(4, images - worst)
    assert len({e["file"] for e in index}) == len(index)
    assert sorted(p.name for p in (folder / "gallery").glob("*.png")) == sorted(e["png"] for e in index)
    for e in index:
        with Image.open(folder / "gallery" / e["png"]) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 200
    return index


def check_run_json(folder: Path, command: str, task: str, train_images: int | None, val_images: int) -> None:
    run = json.loads((folder / "run.json").read_text())
    # a gradient-trained run also says which fine-tuning phases ran (finetune.phase_record)
    assert set(run) == RUN_KEYS | ({"phases"} if command == "train" else set())
    if command == "train":
        assert [p["phase"] for p in run["phases"]] == [1] and run["phases"][0]["first_step"] == 1
    assert (run["command"], run["task"], run["device"]) == (command, task, "cpu")
    assert (run["train_images"], run["val_images"]) == (train_images, val_images)
    assert run["started"] <= run["finished"] and run["started"].endswith("+00:00") and run["wall_seconds"] > 0
    assert run["numpy"] == np.__version__ and run["torch"] != "not installed"


def test_classification_run_and_evaluate_leave_the_report_files(synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(build_config(tiny_config(synthetic_root, run, train={"epochs": 1})))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["protocol"]["eval_image_size"].startswith("32x32") and "argmax" in saved["protocol"]["prediction"]
    assert "per_image" not in saved
    assert "protocol" not in load_checkpoint(run / "checkpoints" / "last.pt")["metrics"]
    with open(run / "log.csv", newline="") as f:
        assert "protocol" not in next(csv.reader(f))

    per_image = json.loads((run / "eval_images.json").read_text())
    assert per_image["higher_is_better"] is True and "true class" in per_image["metric"]
    images = per_image["images"]
    val_files = sorted(p.relative_to(synthetic_root).as_posix() for p in (synthetic_root / "val").rglob("*.png"))
    assert sorted(r["file"] for r in images) == val_files  # one record per val image, relative to the root
    assert all(0.0 <= r["score"] <= 1.0 and r["correct"] == (r["true"] == r["predicted"]) for r in images)
    assert sum(r["correct"] for r in images) / len(images) == pytest.approx(saved["accuracy"])
    assert all(r["true"] == Path(r["file"]).parent.name for r in images)
    index = check_gallery(run, 12)
    by_file = {r["file"]: r["score"] for r in images}
    assert all(e["score"] == by_file[e["file"]] for e in index)
    assert max(e["score"] for e in index if e["kind"] == "worst") <= min(e["score"] for e in index if e["kind"] == "best")
    check_run_json(run, "train", "classification", 24, 12)

    out = tmp_path / "eval"
    (out / "gallery").mkdir(parents=True)
    (out / "gallery" / "worst_9.png").write_bytes(b"from an older evaluation")
    metrics = evaluate_checkpoint(run / "checkpoints" / "last.pt", [], out)
    assert metrics["accuracy"] == pytest.approx(saved["accuracy"])
    assert json.loads((out / "metrics.json").read_text())["protocol"] == saved["protocol"]
    again = json.loads((out / "eval_images.json").read_text())["images"]
    assert [r["file"] for r in again] == [r["file"] for r in images]
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in images], abs=1e-5)
    check_gallery(out, 12)  # the stale picture is gone
    check_run_json(out, "evaluate", "classification", None, 12)  # evaluate reads only the split it scores
    assert not list(tmp_path.rglob("*.tmp"))

    # both directories end with their report, drawn from the files above (the gallery embedded)
    for folder, accuracy in ((run, saved["accuracy"]), (out, metrics["accuracy"])):
        html = (folder / "report.html").read_text()
        assert f"{accuracy:.4f}" in html and '<footer id="report-end">' in html
        for entry in json.loads((folder / "gallery" / "index.json").read_text()):
            assert base64.b64encode((folder / "gallery" / entry["png"]).read_bytes()).decode() in html
        assert "accuracy" in (folder / "report.md").read_text()


def test_detection_run_leaves_confusion_matrix_and_gallery(trained_detector: tuple[Path, Path]) -> None:
    shapes = trained_detector[1]
    run = shapes / "run"  # the session's detection run (conftest), read only
    raw = np.load(run / "eval_raw.npz", allow_pickle=False)
    names = ["shape_0", "shape_5", "shape_17"]
    assert raw["class_names"].tolist() == names
    confusion = raw["bbox_confusion"]
    assert confusion.shape == (4, 4)
    assert float(raw["bbox_confusion_iou"]) == 0.5 and float(raw["bbox_confusion_score"]) == 0.5  # model threshold 0.0
    val = json.loads((shapes / "val.json").read_text())
    gt_counts = [sum(a["category_id"] == c for a in val["annotations"]) for c in (0, 5, 17)]
    assert confusion[:3].sum(axis=1).tolist() == gt_counts
    assert confusion[3, 3] == 0

    images = json.loads((run / "eval_images.json").read_text())["images"]
    assert [r["file"] for r in images] == [f"val/img_{i:03d}.png" for i in range(3)]
    assert [r["num_gt"] for r in images] == [sum(a["image_id"] == 100 + i for a in val["annotations"]) for i in range(3)]
    assert confusion[:, :3].sum() == sum(r["num_pred"] for r in images)  # every shown detection counted once
    assert images[0]["num_gt"] == 0 and images[0]["score"] == (1.0 if images[0]["num_pred"] == 0 else 0.0)
    protocol = json.loads((run / "metrics.json").read_text())["protocol"]
    assert protocol["iou_thresholds"] == "0.50:0.05:0.95 (10)" and protocol["max_detections"] == "1, 10, 100"
    assert protocol["eval_image_size"] == "shorter side 72, longer side at most 96 (aspect ratio kept)"
    check_gallery(run, 3)


def test_segmentation_run_leaves_per_image_iou_and_gallery(tmp_path: Path) -> None:
    root = make_segmentation_folders(tmp_path / "data", train=3, val=3)
    run = tmp_path / "run"
    metrics = train(build_config(seg_config(root, run, train={"epochs": 1})))
    per_image = json.loads((run / "eval_images.json").read_text())
    assert "mean IoU" in per_image["metric"]
    images = per_image["images"]
    assert [r["file"] for r in images] == [f"images/val/val_{i:03d}.jpg" for i in range(3)]
    assert all(0.0 <= r["score"] <= 1.0 and 0.0 <= r["pixel_accuracy"] <= 1.0 for r in images)
    # the split's pixel accuracy is the per-image accuracies weighted by labelled pixels: all equal here
    masks = [np.asarray(Image.open(root / "masks" / "val" / f"val_{i:03d}.png")) for i in range(3)]
    labelled = np.array([(m != 255).sum() for m in masks])
    accuracy = np.array([r["pixel_accuracy"] for r in images])
    assert (accuracy * labelled).sum() / labelled.sum() == pytest.approx(metrics["pixel_accuracy"])
    assert json.loads((run / "metrics.json").read_text())["protocol"]["ignore_index"].startswith("255")
    check_gallery(run, 3)
