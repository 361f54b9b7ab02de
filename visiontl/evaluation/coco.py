"""COCO-style detection and instance-mask evaluation of an `AnnotationSet` (training, `visiontl evaluate`).

Ground truth is an `AnnotationSet`; predictions are COCO result dicts (`results_from_instances` makes them
from scored `Instance`s). Every image of the set is evaluated, with or without annotations, so false
positives on empty images count; every category of the set is evaluated. The scoring itself is
`visiontl.evaluation.cocoeval`: pycocotools' COCOeval protocol and numbers (IoU .50:.05:.95, 101 recall
points, 1/10/100 detections, area ranges by annotation area, crowd regions neither rewarded nor
penalised), computed with numpy, and right where pycocotools is wrong (ground truth with annotation id 0).
A metric with no ground truth in its range is -1, as pycocotools reports it; per-class AP of a class with
no ground truth is NaN.
"""

from __future__ import annotations

import copy

from visiontl.data import rle
from visiontl.data.annotations import AnnotationSet, Instance
from visiontl.errors import DataError
from visiontl.evaluation.cocoeval import AREA_LABELS, METRIC_NAMES, metrics_of, score

__all__ = ["AREA_LABELS", "METRIC_NAMES", "evaluate_coco", "results_from_instances", "to_coco_dict"]


def _area(inst: Instance, image: dict) -> float:
    """The instance's own area; else the mask area (pycocotools) where there is a mask; else the box's."""
    if inst.area is not None:
        return float(inst.area)
    seg = inst.segmentation
    if seg is None:
        return float(inst.bbox[2] * inst.bbox[3])
    return rle.area(seg, image["height"], image["width"])


def to_coco_dict(aset: AnnotationSet) -> dict:
    """COCO ground-truth dict: every image and category of the set, annotation ids as the set has them."""
    images = [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height} for im in aset.images]
    by_id = {im["id"]: im for im in images}
    anns = []
    for inst in aset.instances:
        ann = {"id": inst.id, "image_id": inst.image_id, "category_id": inst.category_id,
               "bbox": [float(v) for v in inst.bbox], "iscrowd": int(bool(inst.iscrowd)),
               "area": _area(inst, by_id[inst.image_id])}
        if inst.segmentation is not None:
            ann["segmentation"] = copy.deepcopy(inst.segmentation)
        anns.append(ann)
    cats = [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in aset.categories]
    return {"images": images, "annotations": anns, "categories": cats}


def results_from_instances(preds: list[Instance]) -> list[dict]:
    """COCO result dicts from scored predictions (segmentation included where the prediction has one)."""
    out = []
    for p in preds:
        if p.score is None:
            raise DataError(f"prediction {p.id} on image {p.image_id} has no score")
        r = {"image_id": p.image_id, "category_id": p.category_id,
             "bbox": [float(v) for v in p.bbox], "score": float(p.score)}
        if p.segmentation is not None:
            r["segmentation"] = copy.deepcopy(p.segmentation)
        out.append(r)
    return out


def evaluate_coco(gt: AnnotationSet, results: list[dict], iou_type: str = "bbox",
                  category_names: dict[int, str] | None = None) -> tuple[dict[str, float], dict]:
    """Return (metrics, raw). metrics: f"{iou_type}/{name}" for the 12 METRIC_NAMES (COCOeval.stats), and per
    class f"{iou_type}/AP/{class}" (IoU .50:.95) and f"{iou_type}/AP50/{class}", area all, 100 detections;
    NaN for a class without ground truth. raw: precision [T,R,K,A,M], recall [T,K,A,M] and their axes."""
    coco = to_coco_dict(gt)
    for c in coco["categories"]:
        c["name"] = (category_names or {}).get(c["id"], c["name"])
    _, ev, _ = score(coco, results, iou_type, gt_source=str(gt.report.source), results_source="predictions")
    return metrics_of(ev, iou_type), ev.raw()
