"""The compiled COCO engine: hotcoco (pycocotools' COCOeval in Rust, MIT licence), used when installed.

Measured on a COCO-sized set (tools/bench_coco_eval.py, docs/benchmarks.md) it gives pycocotools' arrays
bit for bit, finds ground truth with annotation id 0 (pycocotools does not), and reads and scores the
files about a hundred times faster than pycocotools. The suite checks it against pycocotools on every
case `tests/test_cocoeval_parity.py` generates.

hotcoco is lenient where visiontl is strict (a result without a score, a ground truth annotation on an
unknown image): its own health check is the cheap trigger, and any finding sends the files through the
record-by-record checks of `visiontl.evaluation.cocoeval`, which name the file and the record.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# Health-check findings that visiontl treats as errors (hotcoco only warns about them).
_CHECK_WARNINGS = ("dt_missing_score", "dt_nan_score", "dt_orphan_image_id", "degenerate_bbox", "zero_dimensions")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """hotcoco prints load warnings from Rust straight to file descriptor 2; visiontl reports problems itself."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _run(gt: Any, dt: Any, iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    import hotcoco

    ev = hotcoco.COCOeval(gt, dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    return np.asarray(ev.eval["precision"], np.float64), np.asarray(ev.eval["recall"], np.float64)


def evaluate_with_hotcoco(coco_gt: dict, results: list, iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """precision [T, R, K, A, M] and recall [T, K, A, M] of records already checked by cocoeval."""
    import hotcoco

    with _quiet_stderr():
        gt = hotcoco.COCO(coco_gt)
        dt = gt.load_res(results)
        return _run(gt, dt, iou_type)


@dataclass
class FileScore:
    precision: np.ndarray
    recall: np.ndarray
    category_ids: list[int]
    category_names: list[str]
    num_results: int
    num_ignored: int  # results of a category the ground truth does not have


class NeedsChecking(Exception):
    """hotcoco could not read the files, or its health check found something: check record by record."""


def score_files_with_hotcoco(gt_path: Path, results_path: Path, iou_type: str) -> FileScore:
    """Read and score both files inside hotcoco (the fast path of `visiontl score`)."""
    import hotcoco

    if _first_character(results_path) != "[":
        raise NeedsChecking("the results file is not a JSON list")
    with _quiet_stderr():
        try:
            gt = hotcoco.COCO(str(gt_path))
            dt = gt.load_res(str(results_path))
        except Exception as exc:  # hotcoco raises ValueError/OSError/RuntimeError with a message of its own
            raise NeedsChecking(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        health = gt.healthcheck(dt)
        findings = list(health.get("errors", [])) + [w for w in health.get("warnings", [])
                                                      if w.get("code") in _CHECK_WARNINGS]
        if findings:
            raise NeedsChecking(f"{findings[0].get('code')}: {findings[0].get('message')}")
        precision, recall = _run(gt, dt, iou_type)
        categories = sorted(gt.load_cats(gt.get_cat_ids()), key=lambda c: c["id"])
        category_ids = [int(c["id"]) for c in categories]
        num_results = len(dt.get_ann_ids())
        num_scored = len(dt.get_ann_ids(cat_ids=category_ids)) if category_ids else 0
    return FileScore(precision, recall, category_ids, [str(c.get("name", c["id"])) for c in categories],
                     num_results, num_results - num_scored)


def _first_character(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some Windows tools write
        head = head[3:].lstrip()
    return head[:1].decode("latin-1")
