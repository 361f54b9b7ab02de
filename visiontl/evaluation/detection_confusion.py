"""The detection confusion matrix: which class each ground-truth object was detected as, if any.

Rows are the true class, columns the predicted class, both in `category_ids` order; the last row and
column are background. Per image, predictions scoring at least `score` are matched to ground truth of any
class with IoU >= `iou`, highest score first, each ground truth at most once; a prediction prefers an
overlapping ground truth of its own class and otherwise takes the one it overlaps most
(`box_matching.greedy_match`). Then:

- matched prediction            -> [its ground truth's class, its class]  (diagonal: right; off it: confused)
- unmatched prediction          -> [background, its class]                 (a false positive)
- unmatched ground truth        -> [its class, background]                 (a miss)

Crowd regions (`iscrowd`) are neither counted nor matched, and an unmatched prediction lying inside one
(at least `iou` of its area, any class) is left out, as COCO neither rewards nor penalises detections there.
So each row of a class sums to its non-crowd ground-truth count, and the background row to the false
positives.
"""

from __future__ import annotations

import numpy as np

from visiontl.data.annotations import AnnotationSet
from visiontl.evaluation.box_matching import greedy_match, image_boxes, in_crowd


def detection_confusion(gt: AnnotationSet, results: list[dict], category_ids: list[int], iou: float = 0.5,
                        score: float = 0.5) -> np.ndarray:
    """(K+1) x (K+1) int64 counts for COCO results (bbox [x, y, w, h]) against `gt`."""
    k = len(category_ids)
    background = k
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    for im in image_boxes(gt, results, category_ids, score):
        matched = greedy_match(im.pred_boxes, im.pred_classes, im.gt_boxes, im.gt_classes, iou, same_class_only=False)
        hit = matched >= 0
        np.add.at(matrix, (im.gt_classes[matched[hit]], im.pred_classes[hit]), 1)
        ignored = in_crowd(im.pred_boxes, im.pred_classes, im.crowd_boxes, im.crowd_classes, iou, same_class_only=False)
        false_positive = ~hit & ~ignored
        np.add.at(matrix, (background, im.pred_classes[false_positive]), 1)
        missed = np.ones(len(im.gt_classes), dtype=bool)
        missed[matched[hit]] = False
        np.add.at(matrix, (im.gt_classes[missed], background), 1)
    return matrix
