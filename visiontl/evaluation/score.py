"""`visiontl score GT.json RESULTS.json`: COCO scoring of any results file against any ground truth, with the
same code (and numbers) as training and `visiontl evaluate` use."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from visiontl.data.formats import read_coco
from visiontl.errors import DataError
from visiontl.evaluation.coco import METRIC_NAMES, evaluate_coco


def read_results(path: Path, iou_type: str) -> list[dict[str, Any]]:
    """A COCO results list; every record checked for the keys its IoU type needs (one line naming it)."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: results file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(results, list):
        raise DataError(f"{path}: a COCO results file is a list of detections, got {type(results).__name__}")
    shape_key = "bbox" if iou_type == "bbox" else "segmentation"
    for i, r in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score", shape_key) if not isinstance(r, dict) or k not in r]
        if missing:
            raise DataError(f"{path}: result #{i}: missing {', '.join(missing)}")
        if not isinstance(r["score"], (int, float)) or not math.isfinite(r["score"]):
            raise DataError(f"{path}: result #{i}: score {r['score']!r} is not a finite number")
    return results


def score_files(gt_path: Path, results_path: Path, iou_type: str = "bbox") -> dict[str, Any]:
    gt = read_coco(Path(gt_path), image_root=Path(gt_path).parent, sanitize=False)
    metrics, _ = evaluate_coco(gt, read_results(Path(results_path), iou_type), iou_type)
    return metrics


def format_table(metrics: dict[str, Any], iou_type: str) -> str:
    lines = [f"{'metric':10s} {'value':>8s}"]
    lines += [f"{name:10s} {metrics[f'{iou_type}/{name}']:8.4f}" for name in METRIC_NAMES]
    per_class = sorted(k for k in metrics if k.startswith(f"{iou_type}/AP/"))
    if per_class:
        lines.append(f"\n{'class':30s} {'AP':>8s} {'AP50':>8s}")
        for key in per_class:
            name = key[len(f"{iou_type}/AP/"):]
            lines.append(f"{name[:30]:30s} {metrics[key]:8.4f} {metrics[f'{iou_type}/AP50/{name}']:8.4f}")
    return "\n".join(lines)
