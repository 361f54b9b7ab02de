"""`visiontl score GT.json RESULTS.json`: COCO scoring of any results file against any ground truth, with the
same code (and numbers) as training and `visiontl evaluate` use.

Kept light on purpose: no torch import, so the whole command is about as fast as reading the two files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from visiontl.errors import DataError
from visiontl.evaluation.cocoeval import METRIC_NAMES, resolve_engine, score
from visiontl.text import printable


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file (orjson when installed: several times faster on big results files)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a {what} file") from None
    try:
        import orjson

        return orjson.loads(data)
    except (ImportError, ValueError):
        pass  # Python's json also reads the NaN and Infinity that Python writes, so the record gets named
    import json

    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    except ValueError:  # Python's guard against slow conversions: an integer of more than 4,300 digits
        raise DataError(f"{path}: holds an integer of more than 4,300 digits; no COCO value has that many") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON (nested too deeply)") from None


def read_results(path: Path, iou_type: str) -> list[dict[str, Any]]:
    """A COCO results list (records are checked where they are scored, each error naming its record)."""
    results = read_json(path, "results")
    if not isinstance(results, list):
        raise DataError(f"{path}: a COCO results file is a list of detections, got {type(results).__name__}")
    return results


def score_files(gt_path: Path, results_path: Path, iou_type: str = "bbox", engine: str = "auto") -> dict[str, Any]:
    """Metrics (`{iou_type}/AP` ... and per class), plus `num_results`, `num_ignored` (results of a category
    the ground truth does not have: not scored, as in pycocotools) and the `engine` that scored them. Both
    engines are given the same checked arrays (`cocoeval.score`), never the files themselves."""
    gt_path, results_path = Path(gt_path), Path(results_path)
    engine = resolve_engine(engine)
    coco_gt = read_json(gt_path, "ground-truth")
    results = read_results(results_path, iou_type)
    metrics, _, dt = score(coco_gt, results, iou_type, gt_source=str(gt_path), results_source=str(results_path),
                           engine=engine)
    return {**metrics, "num_results": len(results), "num_ignored": dt.ignored, "engine": engine}


def format_table(metrics: dict[str, Any], iou_type: str) -> str:
    """The metrics as a table. Class names come from the file: printed with control characters escaped (a
    newline in a name must not make a row of its own) and cut to the column."""
    lines = [f"{'metric':10s} {'value':>8s}"]
    lines += [f"{name:10s} {metrics[f'{iou_type}/{name}']:8.4f}" for name in METRIC_NAMES]
    per_class = [k for k in metrics if k.startswith(f"{iou_type}/AP/")]
    without = [k for k in per_class if math.isnan(metrics[k])]
    if per_class:
        lines.append(f"\n{'class':30s} {'AP':>8s} {'AP50':>8s}")
        for key in per_class:
            name = key[len(f"{iou_type}/AP/"):]
            ap, ap50 = metrics[key], metrics[f"{iou_type}/AP50/{name}"]
            if math.isnan(ap) and len(without) > _LISTED_WITHOUT_GROUND_TRUTH:
                continue
            shown = printable(name, 30)
            shown = shown if len(shown) <= 30 else shown[:29] + "…"
            if not math.isnan(ap):
                lines.append(f"{shown:30s} {ap:8.4f} {ap50:8.4f}")
            else:
                lines.append(f"{shown:30s} {'-':>8s} {'-':>8s}   (no ground truth)")
        if len(without) > _LISTED_WITHOUT_GROUND_TRUTH:
            lines.append(f"({len(without):,} classes have no ground truth: not listed; their AP is NaN in --out)")
    if metrics.get("num_ignored"):
        lines.append(f"\n{metrics['num_ignored']} of {metrics['num_results']} results name a category the ground "
                     "truth does not have; they are not scored")
    return "\n".join(lines)


# Classes without ground truth are listed one a line up to this many; beyond, counted in one line.
_LISTED_WITHOUT_GROUND_TRUTH = 50
