"""COCO-style detection and instance-mask evaluation, computed by pycocotools' own `COCOeval`.

Ground truth is an `AnnotationSet`; predictions are COCO result dicts (`results_from_instances` makes them
from scored `Instance`s). Every image of the set is evaluated, with or without annotations, so false
positives on empty images count; every category of the set is evaluated (pycocotools' default). The
conventions are COCOeval's defaults: IoU thresholds .50:.05:.95 (10), 101 recall points 0:.01:1, at most
1/10/100 detections per image (highest scores first), area ranges all, small (< 32²), medium (32² to 96²)
and large (> 96²) by annotation area, crowd regions (`iscrowd`) neither rewarded nor penalised.
A metric with no ground truth in its range is -1, as pycocotools reports it; per-class AP of a class with
no ground truth is NaN.

Two conventions of our own, neither of which changes a score that pycocotools would compute correctly:
- Annotation ids are renumbered 1..N in `to_coco_dict`. pycocotools marks a match with the annotation id,
  so a ground truth with id 0 could never be matched (a perfect detection of it would score AP 0).
- No results at all: `COCO.loadRes([])` fails, so the detections are an empty COCO object built by hand and
  evaluated as usual. That is what pycocotools gives for a list with no detections of any evaluated class:
  AP and AR 0 where there is ground truth, -1 where there is none.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visiontl.data.annotations import AnnotationSet, Instance
from visiontl.errors import DataError

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
AREA_LABELS = ("all", "small", "medium", "large")


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _area(inst: Instance, image: dict) -> float:
    """The instance's own area; else the mask area (pycocotools) where there is a mask; else the box's."""
    if inst.area is not None:
        return float(inst.area)
    seg = inst.segmentation
    if seg is None:
        return float(inst.bbox[2] * inst.bbox[3])
    h, w = image["height"], image["width"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return float(mask_utils.area(rle))


def to_coco_dict(aset: AnnotationSet) -> dict:
    """COCO ground-truth dict: every image and category of the set; annotation ids renumbered 1..N."""
    images = [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height} for im in aset.images]
    by_id = {im["id"]: im for im in images}
    anns = []
    for n, inst in enumerate(aset.instances, start=1):
        ann = {"id": n, "image_id": inst.image_id, "category_id": inst.category_id,
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


def _load_results(gt: COCO, results: list[dict]) -> COCO:
    if not results:
        dt = COCO()
        dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                      "annotations": []}
        with _quiet():
            dt.createIndex()
        return dt
    results = copy.deepcopy(results)  # loadRes writes ids, areas and box polygons into the dicts
    for r in results:
        if "bbox" in r:
            r["bbox"] = [float(v) for v in r["bbox"]]
        elif isinstance(r.get("segmentation"), list) or isinstance(r.get("segmentation", {}).get("counts"), list):
            # loadRes takes only compressed RLE when there is no box; convert as COCO.annToRLE would
            im = gt.imgs[r["image_id"]]
            seg = r["segmentation"]
            rles = mask_utils.frPyObjects(seg, im["height"], im["width"])
            r["segmentation"] = mask_utils.merge(rles) if isinstance(seg, list) else rles
    with _quiet():
        return gt.loadRes(results)


def evaluate_coco(gt: AnnotationSet, results: list[dict], iou_type: str = "bbox",
                  category_names: dict[int, str] | None = None) -> tuple[dict[str, float], dict]:
    """Return (metrics, raw). metrics: f"{iou_type}/{name}" for the 12 METRIC_NAMES (COCOeval.stats), and per
    class f"{iou_type}/AP/{class}" (IoU .50:.95) and f"{iou_type}/AP50/{class}", area all, 100 detections;
    NaN for a class without ground truth. raw: precision [T,R,K,A,M], recall [T,K,A,M] and their axes."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    image_ids = {im.id for im in gt.images}
    unknown = sorted({r["image_id"] for r in results} - image_ids)
    if unknown:
        raise DataError(f"results refer to image id(s) {unknown[:5]} that are not in the ground truth")
    if iou_type == "segm":
        missing = [i.id for i in gt.instances if i.segmentation is None]
        if missing:
            raise DataError(f"segm evaluation: {len(missing)} ground-truth annotation(s) have no segmentation "
                            f"(ids {missing[:5]})")
    names = {c.id: c.name for c in gt.categories}
    names.update(category_names or {})

    with _quiet():
        coco_gt = COCO()
        coco_gt.dataset = to_coco_dict(gt)
        coco_gt.createIndex()
    coco_dt = _load_results(coco_gt, results)
    ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    with _quiet():
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    metrics = {f"{iou_type}/{name}": float(v) for name, v in zip(METRIC_NAMES, ev.stats)}
    p = ev.params
    precision, recall = ev.eval["precision"], ev.eval["recall"]
    t50 = int(np.argmin(np.abs(p.iouThrs - 0.5)))
    for k, cat_id in enumerate(p.catIds):
        name = names.get(int(cat_id), str(cat_id))
        metrics[f"{iou_type}/AP/{name}"] = _mean_valid(precision[:, :, k, 0, -1])
        metrics[f"{iou_type}/AP50/{name}"] = _mean_valid(precision[t50, :, k, 0, -1])
    raw = {"precision": precision, "recall": recall, "iou_thresholds": np.asarray(p.iouThrs),
           "rec_thresholds": np.asarray(p.recThrs), "category_ids": [int(c) for c in p.catIds],
           "area_ranges": [list(r) for r in p.areaRng], "area_labels": list(p.areaRngLbl),
           "max_dets": list(p.maxDets)}
    return metrics, raw


def _mean_valid(values: np.ndarray) -> float:
    """COCO's per-class AP: the mean over entries > -1 (-1 marks no ground truth); NaN when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else float("nan")
