"""How the numbers were computed, as (topic, sentence) pairs shown beside them.

metrics.json's own `protocol` is used when the run wrote one; older runs get it derived from what they do
hold: the COCO arrays of eval_raw.npz (thresholds, detection limits, area ranges) and the resolved config.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from visiontl.report.runs import Run
from visiontl.report.tables import format_value, task_group

# COCOeval's defaults, which visiontl uses: stated when a detection run has no eval_raw.npz.
COCO_DEFAULT_IOUS = np.linspace(0.5, 0.95, 10)
COCO_DEFAULT_AREAS = (("all", 0.0, 1e10), ("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e10))
COCO_DEFAULT_MAX_DETS = (1, 10, 100)


def evaluation_protocol(run: Run) -> list[tuple[str, str]]:
    stated = run.metrics.get("protocol")
    if isinstance(stated, dict) and stated:
        return [(str(k), format_value(v)) for k, v in stated.items()]
    group = task_group(run.task)
    if group == "detection":
        return detection_protocol(run)
    if group == "segmentation":
        return segmentation_protocol(run)
    return classification_protocol(run)


def detection_protocol(run: Run) -> list[tuple[str, str]]:
    raw = run.raw
    types = [t for t in ("bbox", "segm") if f"{t}/AP" in run.metrics or f"{t}_precision" in raw] or ["bbox"]
    prefix = types[0]
    ious = raw.get(f"{prefix}_iou_thresholds", COCO_DEFAULT_IOUS)
    recalls = raw.get(f"{prefix}_rec_thresholds")
    max_dets = [int(d) for d in raw.get(f"{prefix}_max_dets", COCO_DEFAULT_MAX_DETS)]
    areas = _areas(raw, prefix)
    source = "eval_raw.npz" if f"{prefix}_precision" in raw else "pycocotools' defaults (the run has no eval_raw.npz)"
    rows = [
        ("scorer", f"pycocotools COCOeval ({', '.join(types)}), every val image and every category, including images "
                   "without objects (false positives there count)"),
        ("IoU thresholds", f"{threshold_range(ious)} ({len(ious)} thresholds); AP is their mean"),
    ]
    if recalls is not None:
        rows.append(("recall points", f"{threshold_range(recalls)} ({len(recalls)} points, interpolated precision)"))
    rows += [
        ("detections per image", f"{' / '.join(map(str, max_dets))}, highest scores first; AP uses {max_dets[-1]}"),
        ("area ranges", "; ".join(_area_text(label, lo, hi) for label, lo, hi in areas)),
        ("crowd regions", "crowd regions (iscrowd) are neither rewarded nor penalised"),
        ("per-class AP", "mean over the IoU thresholds, all areas, " f"{max_dets[-1]} detections; – where the class "
                         "has no ground truth"),
    ]
    size = eval_image_size(run)
    if size:
        rows.append(("eval image size", size))
    if run.config:
        rows.append(("detections kept", f"score ≥ {run.setting('model.score_threshold')}, non-maximum suppression at "
                                        f"IoU {run.setting('model.nms_threshold')}, at most "
                                        f"{run.setting('model.detections_per_image')} per image"))
    if "bbox_confusion" in raw:
        rows.append(("confusion matrix", f"boxes matched at IoU ≥ {_scalar(raw.get('bbox_confusion_iou'))}, "
                                         f"detections scoring ≥ {_scalar(raw.get('bbox_confusion_score'))}; the "
                                         "background row holds false detections, the background column missed objects"))
    rows.append(("thresholds read from", source))
    return rows


def display_threshold_note(run: Run) -> str:
    """One line when no detection of the model reaches the display threshold (so the confusion matrix counts
    every object as missed and the gallery shows no predicted box), else ""."""
    return no_detection_shown(run.raw) if task_group(run.task) == "detection" else ""


def no_detection_shown(raw: dict[str, Any]) -> str:
    """`display_threshold_note` from a detection evaluation's raw arrays (eval_raw.npz, metrics["raw"])."""
    if "bbox_confusion" not in raw:
        return ""
    matrix = np.asarray(raw["bbox_confusion"])
    if matrix.ndim != 2 or matrix[:, :-1].sum() > 0:  # some detection was counted as a class
        return ""
    highest = raw.get("max_detection_score")
    best = "" if highest is None else f"; the highest score is {float(np.asarray(highest).ravel()[0]):.3g}"
    return (f"No detection reaches the display threshold {_scalar(raw.get('bbox_confusion_score'))}{best}: the "
            "confusion matrix counts every object as missed and the gallery draws no prediction (a young model); "
            "to see them, evaluate with a lower one (visiontl evaluate CKPT --out DIR --display-threshold T).")


def eval_image_size(run: Run) -> str | None:
    arch = run.setting("model.arch")
    if arch in ("ssd", "ssdlite"):
        size = run.setting("model.ssd_size")
        return f"{size} × {size} px (ssd_size); detections mapped back to the original image before scoring"
    if arch in ("faster_rcnn", "mask_rcnn"):
        return (f"shorter side resized to {run.setting('model.min_size')} px, longer side at most "
                f"{run.setting('model.max_size')} px; detections mapped back to the original image before scoring")
    return None


def segmentation_protocol(run: Run) -> list[tuple[str, str]]:
    pixels = run.metrics.get("num_pixels")
    counted = f" ({int(pixels):,} pixels)" if isinstance(pixels, (int, float)) else ""
    ignore = run.setting("data.ignore_index")
    rows = [
        ("scored on", f"one confusion matrix over all labelled pixels of the val split{_split(run)}{counted}; "
                      "nothing is averaged per image or per batch"),
        ("ignored pixels", f"pixels labelled {ignore} (data.ignore_index) are neither scored nor counted"
                           if ignore is not None else "pixels labelled data.ignore_index are neither scored nor counted"),
        ("mIoU, mDice", "the plain mean over classes present in the ground truth or the prediction (a class mean, "
                        "not the pixel-weighted IoU)"),
        ("mean_accuracy", "mean per-class recall over classes present in the ground truth"),
        ("pixel_accuracy", "correctly labelled pixels / labelled pixels"),
    ]
    return rows


def classification_protocol(run: Run) -> list[tuple[str, str]]:
    samples = run.metrics.get("num_samples")
    counted = f" ({int(samples)} images)" if isinstance(samples, (int, float)) else ""
    rows = [
        ("prediction", "the argmax of the logits (top-1)"),
        ("scored on", f"the whole val split{_split(run)}{counted}, one confusion matrix (rows true, columns predicted)"),
        ("macro_f1", "unweighted mean of the per-class F1 over classes present in the ground truth or the prediction"),
    ]
    size = run.setting("data.image_size")
    if size:
        rows.append(("val images", f"resized to {size} × {size} px, no augmentation"))
    return rows


def threshold_range(values: Any) -> str:
    """`0.50:0.05:0.95` for evenly spaced thresholds (COCO's notation), else the values listed."""
    values = [float(v) for v in np.asarray(values).ravel()]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    steps = np.diff(values)
    if len(values) > 2 and np.allclose(steps, steps[0], atol=1e-6):
        return f"{values[0]:.2f}:{steps[0]:.2f}:{values[-1]:.2f}"
    return ", ".join(f"{v:.2f}" for v in values)


def _areas(raw: dict[str, np.ndarray], prefix: str) -> list[tuple[str, float, float]]:
    ranges, labels = raw.get(f"{prefix}_area_ranges"), raw.get(f"{prefix}_area_labels")
    if ranges is None or labels is None:
        return list(COCO_DEFAULT_AREAS)
    return [(str(label), float(lo), float(hi)) for label, (lo, hi) in zip(labels, np.asarray(ranges))]


def _area_text(label: str, lo: float, hi: float) -> str:
    unbounded = hi >= 1e9
    if lo <= 0 and unbounded:
        return f"{label}: any area"
    if lo <= 0:
        return f"{label}: area < {_px(hi)}"
    if unbounded:
        return f"{label}: area ≥ {_px(lo)}"
    return f"{label}: {_px(lo)} ≤ area < {_px(hi)}"


def _px(area: float) -> str:
    side = math.isqrt(int(area))
    square = f" ({side}²)" if side * side == int(area) and float(area).is_integer() else ""
    return f"{area:,.0f} px²{square}"


def _scalar(value: Any) -> str:
    return "?" if value is None else f"{float(np.asarray(value).ravel()[0]):g}"


def _split(run: Run) -> str:
    split = run.setting("data.val")
    return f" '{split}'" if split else ""
