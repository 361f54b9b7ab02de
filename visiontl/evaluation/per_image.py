"""Per-image scores: one number per val image saying how well the model did on it, so a report can show
the worst and the best images. They come from the predictions the split's evaluation makes anyway.

- detection: F1 at IoU 0.5 of the detections scoring at least the display threshold, matched greedily by
  score to ground truth of the same class (`box_matching`); crowd regions neither counted nor matched, and
  a detection inside a crowd region of its class left out. No ground truth and no detections: 1.0.
- segmentation: the image's own mean IoU over the classes present in its ground truth or its prediction,
  labelled pixels only. No labelled pixel: 1.0 (there was nothing to get wrong).
- classification: the probability given to the true class (in the task adapter: one line of torch).
"""

from __future__ import annotations

import numpy as np
import torch

from visiontl.data.annotations import AnnotationSet
from visiontl.evaluation.box_matching import greedy_match, image_boxes, in_crowd

# Detectors keep weak detections (default score_threshold 0.05) because AP needs the whole ranking; counted
# as hits and errors they would swamp F1, the confusion matrix and the pictures: model.display_threshold.
def display_threshold(configured: float, model_threshold: float) -> float:
    """The score a detection needs to count in the per-image F1, the confusion matrix and the gallery: the
    config's model.display_threshold, or the model's own threshold where that is higher (nothing lower exists)."""
    return max(float(configured), float(model_threshold))


def detection_image_scores(gt: AnnotationSet, results: list[dict], category_ids: list[int], score: float,
                           iou: float = 0.5) -> dict[int, dict[str, float | int]]:
    """Per image id of `gt`: {"score": F1, "num_gt", "num_pred", "tp"} (counted objects and detections)."""
    out: dict[int, dict[str, float | int]] = {}
    for im in image_boxes(gt, results, category_ids, score):
        matched = greedy_match(im.pred_boxes, im.pred_classes, im.gt_boxes, im.gt_classes, iou, same_class_only=True)
        hit = matched >= 0
        ignored = ~hit & in_crowd(im.pred_boxes, im.pred_classes, im.crowd_boxes, im.crowd_classes, iou,
                                  same_class_only=True)
        tp, num_gt, num_pred = int(hit.sum()), len(im.gt_classes), int((~ignored).sum())
        f1 = 1.0 if num_gt + num_pred == 0 else 2.0 * tp / (num_gt + num_pred)
        out[im.image.id] = {"score": f1, "num_gt": num_gt, "num_pred": num_pred, "tp": tp}
    return out


def image_confusions(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """[N, K, K] pixel confusion matrix of each image of a batch (rows true, columns predicted); pixels whose
    target is `ignore_index` (padding included) are not counted. Targets must be valid class ids otherwise."""
    n, k = pred.shape[0], num_classes
    image = torch.arange(n, device=pred.device).view(n, 1, 1).expand_as(pred)
    pred, target, image = pred.long().flatten(), target.long().flatten(), image.flatten()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target, image = pred[keep], target[keep], image[keep]
    return torch.bincount((image * k + target) * k + pred, minlength=n * k * k).reshape(n, k, k)


def segmentation_image_scores(confusions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean IoU, pixel accuracy) per image from [N, K, K] confusions; 1.0 and 1.0 with no labelled pixel."""
    m = np.asarray(confusions, dtype=np.float64)
    tp = np.diagonal(m, axis1=1, axis2=2)
    union = m.sum(axis=2) + m.sum(axis=1) - tp
    present = union > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / union, 0.0)
        counted = present.sum(axis=1)
        miou = np.where(counted > 0, iou.sum(axis=1) / counted, 1.0)
        total = m.sum(axis=(1, 2))
        accuracy = np.where(total > 0, tp.sum(axis=1) / total, 1.0)
    return miou, accuracy
