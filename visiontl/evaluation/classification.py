"""Classification metrics from one confusion matrix accumulated over the whole split."""

from __future__ import annotations

import numpy as np
import torch


class ClassificationMetrics:
    """`update(logits, labels)` per batch, `compute()` once: accuracy, macro F1, per-class precision,
    recall and F1 (keys `precision/<class>` ...), and the confusion matrix (rows: true, columns: predicted)."""

    def __init__(self, classes: list[str]):
        self.classes = list(classes)
        self.matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        pred = logits.argmax(dim=1).cpu().numpy()
        true = labels.cpu().numpy()
        k = len(self.classes)
        self.matrix += np.bincount(true * k + pred, minlength=k * k).reshape(k, k)

    def compute(self) -> dict:
        return metrics_from_confusion(self.matrix, self.classes)


def metrics_from_confusion(matrix: np.ndarray, classes: list[str]) -> dict:
    matrix = np.asarray(matrix, dtype=np.int64)
    total = int(matrix.sum())
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (actual > 0) | (predicted > 0)  # the classes scikit-learn averages over by default
    out: dict = {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "num_samples": total,
    }
    for i, name in enumerate(classes):
        out[f"precision/{name}"] = float(precision[i])
        out[f"recall/{name}"] = float(recall[i])
        out[f"f1/{name}"] = float(f1[i])
        out[f"support/{name}"] = int(actual[i])
    out["confusion_matrix"] = matrix.tolist()
    return out
