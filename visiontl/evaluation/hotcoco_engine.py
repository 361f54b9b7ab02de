"""The compiled COCO engine: hotcoco (pycocotools' COCOeval in Rust, MIT licence), used when installed.

Measured on a COCO-sized set (tools/bench_coco_eval.py, docs/benchmarks.md) it gives pycocotools' arrays
bit for bit, finds ground truth with annotation id 0 (pycocotools does not), and scores about a hundred
times faster than pycocotools. The suite checks it against pycocotools on every case
`tests/test_cocoeval_parity.py` generates.

hotcoco never sees a file or a record as written: it is handed the arrays `visiontl.evaluation.cocoeval`
built after checking every value (ids renumbered 1..n, boxes and scores as floats, masks as checked RLEs),
so both engines score, and refuse, exactly the same inputs.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Iterator

import numpy as np

from visiontl.data import rle

if TYPE_CHECKING:
    from visiontl.evaluation.cocoeval import Detections, GroundTruth


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


def evaluate_with_hotcoco(gt: GroundTruth, dt: Detections, iou_type: str) -> tuple[np.ndarray, np.ndarray]:
    """precision [T, R, K, A, M] and recall [T, K, A, M] over gt's categories, from checked arrays."""
    import hotcoco

    # Image and category ids become their positions + 1: sorted like the originals, so pycocotools' order
    # of images and categories is kept, and small enough for any id type hotcoco uses.
    images = [{"id": i + 1, "height": size[0], "width": size[1]} if size else {"id": i + 1}
              for i, size in enumerate(gt.image_sizes)]
    categories = [{"id": k + 1, "name": str(k + 1)} for k in range(len(gt.category_ids))]
    segm = iou_type == "segm"
    with _quiet_stderr():
        coco_gt = hotcoco.COCO.from_arrays(
            images, categories, gt.image + 1, gt.category + 1, gt.boxes, ids=np.arange(1, len(gt.boxes) + 1),
            area=gt.area, iscrowd=gt.crowd, segmentation=_rles(gt.masks) if segm else None)
        rows = np.column_stack([dt.image + 1, dt.boxes, dt.scores, dt.category + 1]).astype(np.float64)
        coco_dt = coco_gt.load_res(rows.reshape(-1, 7), segmentation=_rles(dt.masks) if segm else None)
        if segm and len(dt.area):  # a row's area is its box's; a mask result without a box has its mask's
            coco_dt.update_anns(ids=np.arange(1, len(dt.area) + 1), area=dt.area)
        ev = hotcoco.COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"], np.float64), np.asarray(ev.eval["recall"], np.float64)


def _rles(masks: list | None) -> list[dict]:
    return [rle.as_json(m) for m in masks or []]
