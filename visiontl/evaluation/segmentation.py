"""Semantic segmentation metrics from one confusion matrix accumulated over the whole split.

The matrix M (rows: true class, columns: predicted class) sums every labelled pixel of the split;
nothing is averaged per batch or per image. Per class c: TP = M[c, c], FP = column sum - TP,
FN = row sum - TP.

- `IoU/<c>`  = TP / (TP + FP + FN); NaN when the class is absent from both ground truth and prediction.
- `Dice/<c>` = 2TP / (2TP + FP + FN); NaN under the same rule.
- `mIoU`, `mDice`: the plain mean over classes whose union TP + FP + FN > 0 (a class mean, not the
  micro-averaged "IoU of all pixels" some tools report). 0.0 when no pixel was counted.
- `pixel_accuracy`: sum of TP / labelled pixels.
- `mean_accuracy`: mean per-class recall TP / (TP + FN) over classes present in the ground truth.
- `num_pixels`: labelled pixels counted; `confusion_matrix`: M as a list of lists.

Ignore rule: pixels whose target equals `ignore_index` (default 255, `None` disables it) are skipped.
Any other target outside [0, C) raises ValueError: an out-of-range id is a data error, not padding.
"""

from __future__ import annotations

import numpy as np
import torch


class SegmentationMetrics:
    """`update(logits_or_pred, target)` per batch, `compute()` once per split."""

    def __init__(self, classes: list[str], ignore_index: int | None = 255):
        self.classes = list(classes)
        self.ignore_index = ignore_index
        self.matrix: torch.Tensor | None = None  # C x C int64, on the device of the first batch

    def update(self, logits_or_pred: torch.Tensor, target: torch.Tensor) -> None:
        k = len(self.classes)
        pred = logits_or_pred.argmax(dim=1) if logits_or_pred.dim() == 4 else logits_or_pred
        if pred.shape != target.shape or target.dim() != 3:
            raise ValueError(f"expected logits [N, C, H, W] or labels [N, H, W] matching target [N, H, W], "
                             f"got {tuple(logits_or_pred.shape)} and {tuple(target.shape)}")
        pred, target = pred.long().flatten(), target.long().flatten().to(pred.device)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        for name, labels in (("target", target), ("prediction", pred)):
            bad = (labels < 0) | (labels >= k)
            if bad.any():
                raise ValueError(f"{name} label {int(labels[bad][0])} is outside [0, {k}) "
                                 f"and is not ignore_index={self.ignore_index}")
        counts = torch.bincount(target * k + pred, minlength=k * k).reshape(k, k)
        self.matrix = counts if self.matrix is None else self.matrix + counts.to(self.matrix.device)

    def counts(self) -> torch.Tensor:
        """The C x C matrix so far (zeros before any batch)."""
        k = len(self.classes)
        return torch.zeros((k, k), dtype=torch.int64) if self.matrix is None else self.matrix

    def compute(self) -> dict:
        return metrics_from_confusion(self.counts().cpu().numpy(), self.classes)


def metrics_from_confusion(matrix: np.ndarray, classes: list[str]) -> dict:
    matrix = np.asarray(matrix, dtype=np.int64)
    total = int(matrix.sum())
    tp = np.diag(matrix).astype(np.float64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    union = tp + fp + fn
    present = union > 0          # in ground truth or prediction
    labelled = (tp + fn) > 0     # in ground truth
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / union, np.nan)
        dice = np.where(present, 2 * tp / (2 * tp + fp + fn), np.nan)
        recall = np.where(labelled, tp / (tp + fn), np.nan)
    out: dict = {
        "mIoU": float(iou[present].mean()) if present.any() else 0.0,
        "mDice": float(dice[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_accuracy": float(recall[labelled].mean()) if labelled.any() else 0.0,
        "num_pixels": total,
    }
    for i, name in enumerate(classes):
        out[f"IoU/{name}"] = float(iou[i])
        out[f"Dice/{name}"] = float(dice[i])
    out["confusion_matrix"] = matrix.tolist()
    return out
