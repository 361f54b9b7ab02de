"""Matching one image's predicted boxes to its ground truth: the shared step of the per-image F1 and the
detection confusion matrix.

Boxes are pixel xyxy arrays of shape [N, 4]. Predictions are matched greedily in order of score (the
caller passes them sorted, highest first), each ground truth at most once, as COCO matches them.
Crowd regions never match; a prediction left unmatched that lies mostly inside a crowd region (at least
`threshold` of its own area, COCO's crowd overlap) is ignored: neither a true nor a false positive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from visiontl.data.annotations import AnnotationSet, ImageRecord
from visiontl.errors import DataError


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] intersection over union of xyxy boxes (0 where either box has no area)."""
    inter = _intersection(a, b)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_coverage(a: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """[N, M] share of each box of `a` that lies inside each region (intersection over the box's own area)."""
    inter = _intersection(a, regions)
    area = _area(a)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, inter / area, 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def greedy_match(pred_boxes: np.ndarray, pred_classes: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray,
                 threshold: float, same_class_only: bool) -> np.ndarray:
    """The ground-truth index each prediction is matched to, -1 where none; predictions sorted by score.

    A prediction takes the unmatched ground truth of highest IoU >= `threshold`, among those of its own
    class when there is one (or when `same_class_only`), else among all classes: a box in the right place
    with the wrong class is matched as a class confusion, but never takes a ground truth that a prediction
    of the right class could have.
    """
    iou = box_iou(pred_boxes, gt_boxes)
    same = np.asarray(pred_classes)[:, None] == np.asarray(gt_classes)[None, :]
    matched = np.full(len(iou), -1, dtype=np.int64)
    free = np.ones(iou.shape[1], dtype=bool)
    for p in range(len(iou)):  # sequential by nature: each match takes its ground truth away from the rest
        candidates = (iou[p] >= threshold) & free
        own_class = candidates & same[p]
        pool = own_class if own_class.any() or same_class_only else candidates
        if pool.any():
            g = int(np.argmax(np.where(pool, iou[p], -1.0)))
            matched[p], free[g] = g, False
    return matched


def in_crowd(pred_boxes: np.ndarray, pred_classes: np.ndarray, crowd_boxes: np.ndarray, crowd_classes: np.ndarray,
             threshold: float, same_class_only: bool) -> np.ndarray:
    """Per prediction: does it lie inside a crowd region (of its own class when `same_class_only`)?"""
    if len(crowd_boxes) == 0 or len(pred_boxes) == 0:
        return np.zeros(len(pred_boxes), dtype=bool)
    inside = box_coverage(pred_boxes, crowd_boxes) >= threshold
    if same_class_only:
        inside &= np.asarray(pred_classes)[:, None] == np.asarray(crowd_classes)[None, :]
    return inside.any(axis=1)


@dataclass
class ImageBoxes:
    """One image's boxes, classes as positions in the category list; predictions at or above the score
    threshold only, highest score first."""

    image: ImageRecord
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    crowd_boxes: np.ndarray
    crowd_classes: np.ndarray
    pred_boxes: np.ndarray
    pred_classes: np.ndarray
    pred_scores: np.ndarray


def image_boxes(gt: AnnotationSet, results: list[dict], category_ids: list[int], score: float) -> Iterator[ImageBoxes]:
    """Every image of `gt`, in its order, with its ground truth and its COCO results (bbox [x, y, w, h])."""
    position = {int(c): k for k, c in enumerate(category_ids)}
    known_images = {im.id for im in gt.images}
    preds: dict[int, list[dict]] = {}
    for r in results:
        if r["image_id"] not in known_images:
            raise DataError(f"a result refers to image id {r['image_id']}, which is not in the ground truth")
        if r["category_id"] not in position:
            raise DataError(f"a result on image {r['image_id']} has category id {r['category_id']}, "
                            f"not one of {list(category_ids)}")
        if r["score"] >= score:
            preds.setdefault(r["image_id"], []).append(r)
    for inst in gt.instances:
        if inst.category_id not in position:
            raise DataError(f"ground-truth annotation {inst.id} has category id {inst.category_id}, "
                            f"not one of {list(category_ids)}")
    groups = gt.by_image()
    for image in gt.images:
        counted = [i for i in groups[image.id] if not i.iscrowd]
        crowd = [i for i in groups[image.id] if i.iscrowd]
        mine = sorted(preds.get(image.id, []), key=lambda r: -r["score"])  # stable: ties keep their order
        yield ImageBoxes(
            image,
            _xyxy([i.xyxy for i in counted]), np.array([position[i.category_id] for i in counted], dtype=np.int64),
            _xyxy([i.xyxy for i in crowd]), np.array([position[i.category_id] for i in crowd], dtype=np.int64),
            _xyxy([_result_xyxy(r) for r in mine]), np.array([position[r["category_id"]] for r in mine], dtype=np.int64),
            np.array([r["score"] for r in mine], dtype=np.float64),
        )


def _result_xyxy(r: dict) -> tuple[float, float, float, float]:
    x, y, w, h = r["bbox"]
    return x, y, x + w, y + h


def _xyxy(boxes: list) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
