"""Segmentation metrics: a hand-counted case, accumulation, input forms, the ignore rule, and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

from visiontl.evaluation.segmentation import SegmentationMetrics, metrics_from_confusion

CLASSES = ["bg", "cat", "dog"]
# Two 2x4 images. 255 marks an ignored region (its predictions must not count).
TARGET = torch.tensor([[[0, 0, 1, 1],
                        [255, 255, 1, 1]],
                       [[0, 0, 0, 0],
                        [1, 1, 0, 0]]])
PRED = torch.tensor([[[0, 1, 1, 1],
                      [2, 2, 1, 0]],
                     [[0, 0, 2, 0],
                      [1, 0, 0, 0]]])  # "dog" is predicted once but never in the ground truth


def one_hot_logits(pred: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, k).permute(0, 3, 1, 2).float()


def test_hand_counted_case() -> None:
    m = SegmentationMetrics(CLASSES)
    m.update(PRED, TARGET)
    out = m.compute()
    assert out["confusion_matrix"] == [[6, 1, 1], [2, 4, 0], [0, 0, 0]]
    assert out["num_pixels"] == 14  # 16 pixels minus the 2 ignored
    # (TP, FP, FN) per class, counted by hand from the arrays above
    counts = {"bg": (6, 2, 2), "cat": (4, 1, 2), "dog": (0, 1, 0)}
    iou = {c: tp / (tp + fp + fn) for c, (tp, fp, fn) in counts.items()}
    dice = {c: 2 * tp / (2 * tp + fp + fn) for c, (tp, fp, fn) in counts.items()}
    for c in CLASSES:
        assert out[f"IoU/{c}"] == iou[c]
        assert out[f"Dice/{c}"] == dice[c]
    assert (iou["bg"], iou["cat"], iou["dog"]) == (6 / 10, 4 / 7, 0.0)
    assert (dice["bg"], dice["cat"], dice["dog"]) == (12 / 16, 8 / 11, 0.0)
    assert out["mIoU"] == (6 / 10 + 4 / 7 + 0.0) / 3  # dog is present (predicted)
    assert out["mDice"] == (12 / 16 + 8 / 11 + 0.0) / 3
    assert out["pixel_accuracy"] == 10 / 14
    assert out["mean_accuracy"] == (6 / 8 + 4 / 6) / 2  # dog has no ground truth


def test_class_absent_everywhere_is_nan_and_excluded() -> None:
    m = SegmentationMetrics(CLASSES + ["bird"])
    m.update(PRED, TARGET)
    out = m.compute()
    assert math.isnan(out["IoU/bird"]) and math.isnan(out["Dice/bird"])
    assert out["mIoU"] == (6 / 10 + 4 / 7 + 0.0) / 3
    empty = SegmentationMetrics(CLASSES).compute()
    assert empty["mIoU"] == 0.0 and empty["mDice"] == 0.0 and empty["num_pixels"] == 0
    assert all(math.isnan(empty[f"IoU/{c}"]) for c in CLASSES)


def test_two_updates_equal_one_on_concatenation() -> None:
    split = SegmentationMetrics(CLASSES)
    split.update(PRED[:1], TARGET[:1])
    split.update(PRED[1:], TARGET[1:])
    whole = SegmentationMetrics(CLASSES)
    whole.update(PRED, TARGET)
    assert _same(split.compute(), whole.compute())


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_labels_equal_logits() -> None:
    from_labels = SegmentationMetrics(CLASSES)
    from_labels.update(PRED, TARGET)
    from_logits = SegmentationMetrics(CLASSES)
    from_logits.update(one_hot_logits(PRED, 3) + 0.1 * torch.rand(2, 3, 2, 4), TARGET)
    assert _same(from_labels.compute(), from_logits.compute())


def test_out_of_range_target_raises() -> None:
    bad = TARGET.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="7"):
        SegmentationMetrics(CLASSES).update(PRED, bad)


def test_ignore_index_none_counts_everything() -> None:
    target = TARGET.clone()
    target[target == 255] = 2  # the formerly ignored pixels now carry a real label
    m = SegmentationMetrics(CLASSES, ignore_index=None)
    m.update(PRED, target)
    out = m.compute()
    assert out["num_pixels"] == 16
    assert out["confusion_matrix"] == [[6, 1, 1], [2, 4, 0], [0, 0, 2]]
    with pytest.raises(ValueError, match="255"):
        SegmentationMetrics(CLASSES, ignore_index=None).update(PRED, TARGET)


def test_matches_sklearn_jaccard_on_random_data() -> None:
    rng = np.random.default_rng(0)
    k = 5
    target = rng.integers(0, k, (4, 16, 16))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, k, target.shape))
    m = SegmentationMetrics([f"c{i}" for i in range(k)])
    m.update(torch.from_numpy(pred[:2]), torch.from_numpy(target[:2]))
    m.update(one_hot_logits(torch.from_numpy(pred[2:]), k), torch.from_numpy(target[2:]))
    out = m.compute()
    ref = jaccard_score(target.ravel(), pred.ravel(), average=None, labels=list(range(k)))
    assert [out[f"IoU/c{i}"] for i in range(k)] == pytest.approx(ref, abs=1e-12)
    assert out["mIoU"] == pytest.approx(ref.mean(), abs=1e-12)
    assert metrics_from_confusion(np.array(out["confusion_matrix"]), [f"c{i}" for i in range(k)])["mIoU"] == out["mIoU"]
