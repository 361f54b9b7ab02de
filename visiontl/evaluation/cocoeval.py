"""COCO detection scoring for boxes and masks: pycocotools' COCOeval numbers, computed with numpy.

pycocotools evaluates one (image, category, area range) at a time and matches detections to ground truth
in Python loops, which takes about a minute on a COCO-sized set. Here every step is an array operation
over all images and categories at once; the numbers are the same, bit for bit, because the arithmetic is
the same: the same IoU formula in the same order, the same stable sorts, the same cumulative sums and the
same precision envelope. The only sequential part is greedy matching, which is sequential only *within*
one (image, category): round r matches the r-th detection of every (image, category) at once.

COCOeval's protocol, kept exactly (see `docs/evaluation.md`):
- IoU thresholds .50:.05:.95; 101 recall points; at most 1, 10, 100 detections per image *and category*,
  highest scores first (ties keep the results file's order); area ranges all / small (≤ 32²) / medium
  (32² to 96²) / large (≥ 96²), bounds inclusive, by the ground truth's `area` field and the detection's
  box area (mask area for a mask result without a box).
- A detection matches the unmatched ground truth of its category with the highest IoU ≥ the threshold
  (the later one on a tie); ground truth outside the area range or marked `iscrowd` is matched only when
  nothing else is left, and a detection matched to it is ignored; a crowd region can absorb any number of
  detections, with IoU = intersection / detection area. Unmatched detections outside the area range are
  ignored.
- A metric with no ground truth in its range is -1.

One difference, where pycocotools is wrong: it records a match by the ground truth's annotation id, so an
annotation whose id is 0 can never count as found. Matches here are flags, so such a detection scores.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

import numpy as np

from visiontl.errors import DataError
from visiontl.evaluation.coco_masks import MAX_MASK_PIXELS, show, to_rles

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# (average precision?, IoU threshold or None for all, area label, max detections) per METRIC_NAMES entry
_SUMMARY = (
    (True, None, "all", 100), (True, 0.5, "all", 100), (True, 0.75, "all", 100),
    (True, None, "small", 100), (True, None, "medium", 100), (True, None, "large", 100),
    (False, None, "all", 1), (False, None, "all", 10), (False, None, "all", 100),
    (False, None, "small", 100), (False, None, "medium", 100), (False, None, "large", 100),
)


@dataclass
class GroundTruth:
    """A COCO ground truth as arrays. Images and categories sorted by id (pycocotools' order); one row per
    annotation, in file order."""

    image_ids: list[Any]
    image_sizes: list[tuple[int, int] | None]  # (height, width), needed to rasterise polygons
    category_ids: list[int]
    category_names: list[str]
    image: np.ndarray  # index into image_ids
    category: np.ndarray  # index into category_ids
    boxes: np.ndarray  # [N, 4] x, y, w, h
    area: np.ndarray
    crowd: np.ndarray
    masks: list[Any] | None = None  # RLEs (segm only)
    image_index: dict[Any, int] = field(default_factory=dict)
    category_index: dict[int, int] = field(default_factory=dict)


@dataclass
class Detections:
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    area: np.ndarray
    masks: list[Any] | None = None
    ignored: int = 0  # results of a category the ground truth does not have (not scored, as in pycocotools)


@dataclass
class CocoEvaluation:
    precision: np.ndarray  # [T, R, K, A, M] over the `scored` categories, -1 where there is no ground truth
    recall: np.ndarray  # [T, K, A, M]
    stats: np.ndarray  # the 12 numbers of METRIC_NAMES
    category_ids: list[int]  # every category of the ground truth
    category_names: list[str]
    scored: np.ndarray | None = None  # positions in category_ids of the K axis; None: every category

    def per_class(self, iou: float | None = None) -> np.ndarray:
        """AP per category (area all, 100 detections), at one IoU threshold or averaged over all; NaN where
        the category has no ground truth."""
        p = self.precision if iou is None else self.precision[np.flatnonzero(np.isclose(IOU_THRESHOLDS, iou))]
        positions = np.arange(p.shape[2]) if self.scored is None else self.scored
        out = np.full(len(self.category_ids), np.nan)
        for k, position in enumerate(positions):
            s = p[:, :, k, 0, -1]
            if (s > -1).any():
                out[position] = np.mean(s[s > -1])
        return out

    def raw(self) -> dict[str, Any]:
        """The arrays over every category (training: the model's classes), -1 for those without ground truth."""
        precision, recall = self.precision, self.recall
        if self.scored is not None:
            T, R, _, A, M = precision.shape
            precision, recall = -np.ones((T, R, len(self.category_ids), A, M)), -np.ones((T, len(self.category_ids), A, M))
            precision[:, :, self.scored], recall[:, self.scored] = self.precision, self.recall
        return {"precision": precision, "recall": recall, "iou_thresholds": IOU_THRESHOLDS,
                "rec_thresholds": RECALL_THRESHOLDS, "category_ids": list(self.category_ids),
                "area_ranges": [list(r) for r in AREA_RANGES], "area_labels": list(AREA_LABELS),
                "max_dets": list(MAX_DETS)}


# ----------------------------------------------------------------------------------------------- reading
#
# One reading for both engines: every value of both files is checked here (type, finiteness, range, masks
# decodable to the image's size) and turned into arrays; the numpy engine scores the arrays and hotcoco is
# handed the same arrays, never the files. So the two refuse exactly the same files, with the same line.


def _records(data: dict, key: str, source: str) -> list[dict]:
    records = data.get(key, [] if key == "annotations" else None)
    if not isinstance(records, list):
        raise DataError(f"{source}: '{key}' must be a list")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"{source}: {key}[{i}] is not an object")
    return records


def _is_integer(value: Any) -> bool:
    return type(value) is int  # JSON true/false are bools, not integers


def _whole_floats_as_ints(values: list) -> list:
    """Result ids written as whole floats (`1.0`: what `.tolist()` of a float array gives) as the integers they
    name, as pycocotools' dict lookups take them; anything else stays for `_index` to refuse."""
    if {type(v) for v in values} <= {int}:
        return values
    return [int(v) if type(v) is float and v.is_integer() and abs(v) <= 2**53 else v for v in values]


def _is_number(value: Any) -> bool:
    """A finite JSON number: not a string, not a boolean, not an integer beyond any float."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    return False


_FLOAT_MAX = int(np.finfo(np.float64).max)


def _record_name(what: str, records: list[dict], i: int) -> str:
    """'annotation 17' by the record's own id where it has one, else 'result #17' by position."""
    rid = records[i].get("id")
    return f"{what} {show(rid)}" if _is_integer(rid) or isinstance(rid, str) else f"{what} #{i}"


def _numbers(values: list, what: str, source: str, records: list[dict], key: str, width: int | None,
             rows: list[int] | None = None) -> np.ndarray:
    """A float array of one field of every record (of `rows` of `records`, where given); on any bad value, a
    one-line error naming the record."""
    if not values:
        return np.zeros((0,) if width is None else (0, width))
    arr = None
    rows_ok = width is None or (set(map(type, values)) == {list} and set(map(len, values)) == {width})
    flat = values if width is None else chain.from_iterable(values)
    if rows_ok and set(map(type, flat)) <= {int, float}:  # not str, bool, None (numpy would convert those)
        try:
            arr = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond any float
            arr = None
    if arr is not None and np.isfinite(arr).all():
        return arr.reshape(len(values), *(() if width is None else (width,)))
    for i, v in enumerate(values):
        ok = _is_number(v) if width is None else (isinstance(v, list) and len(v) == width and all(map(_is_number, v)))
        if not ok:
            row = i if rows is None else rows[i]
            raise DataError(f"{source}: {_record_name(what, records, row)}: '{key}' is {show(v)}, not "
                            + ("a finite number" if width is None else f"{width} finite numbers"))
    raise DataError(f"{source}: '{key}' values are not numbers")


def _index(values: list, index: dict, source: str, what: str, key: str, records: list[dict]) -> np.ndarray:
    """Positions of ids in `index`; an id that is not an integer (a string, a boolean, a float) or is not
    there is a one-line error naming the record."""
    if {type(v) for v in values} <= {int}:
        try:
            return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
        except KeyError:
            pass
    for i, v in enumerate(values):
        if not _is_integer(v):
            raise DataError(f"{source}: {_record_name(what, records, i)}: '{key}' is {show(v)}, not an integer")
        if v not in index:
            raise DataError(f"{source}: {_record_name(what, records, i)}: {key} {show(v)} is not in the ground "
                            f"truth's {'images' if key == 'image_id' else 'categories'}")
    raise AssertionError("unreachable")


# The largest side an image may claim: the 32-bit pixel offsets of pycocotools and hotcoco.
MAX_SIDE = 2**31 - 1


def _image_sizes(images: list[dict], source: str, iou_type: str) -> list[tuple[int, int] | None]:
    """(height, width) of every image: positive integers where given (a whole float such as 640.0 too);
    needed for masks, whose images must also stay within what pycocotools can count."""
    sizes: list[tuple[int, int] | None] = []
    for i, r in enumerate(images):
        given = {k: r.get(k) for k in ("height", "width")}
        if all(v is None for v in given.values()):
            sizes.append(None)
            continue
        for key, v in given.items():
            if not ((_is_integer(v) or (type(v) is float and v.is_integer())) and 0 < v):
                raise DataError(f"{source}: image {show(r['id'])}: '{key}' is {show(v)}, not a positive integer")
            if v > MAX_SIDE:
                raise DataError(f"{source}: image {show(r['id'])}: '{key}' is {show(v)}; no image is wider or taller "
                                f"than {MAX_SIDE:,} pixels")
        h, w = int(given["height"]), int(given["width"])
        if iou_type == "segm" and h * w > MAX_MASK_PIXELS:
            raise DataError(f"{source}: image {show(r['id'])}: {w}x{h} is more pixels than masks can be scored "
                            f"on (at most {MAX_MASK_PIXELS:,})")
        sizes.append((h, w))
    return sizes


def _crowd_flags(anns: list[dict], source: str) -> np.ndarray:
    """iscrowd: 0 or 1 (false or true too); absent is 0."""
    flags = [a.get("iscrowd", 0) for a in anns]
    for i, v in enumerate(flags):
        if v not in (0, 1) or type(v) not in (int, bool):
            raise DataError(f"{source}: {_record_name('annotation', anns, i)}: 'iscrowd' is {show(v)}, not 0 or 1")
    return np.array(flags, dtype=bool)


def _masks(records: list[dict], rows: np.ndarray, image: np.ndarray, sizes: list, source: str, what: str) -> list:
    """The compressed RLE of each record of `rows` (their segmentations checked first; coco_masks)."""
    wheres = [f"{source}: {_record_name(what, records, i)}" for i in rows]
    return to_rles([records[i]["segmentation"] for i in rows], [sizes[image[i]] for i in rows], wheres)


def ground_truth(coco: dict, iou_type: str = "bbox", source: str = "ground truth") -> GroundTruth:
    """A COCO ground-truth dict (images, annotations, categories) as arrays, every record checked."""
    if not isinstance(coco, dict):
        raise DataError(f"{source}: a COCO ground truth is an object with images, annotations and categories")
    images = _records(coco, "images", source)
    categories = _records(coco, "categories", source)
    anns = _records(coco, "annotations", source)
    for what, records in (("image", images), ("category", categories)):
        seen: set = set()
        for i, r in enumerate(records):
            rid = r.get("id")
            if not _is_integer(rid):
                raise DataError(f"{source}: {what} #{i}: 'id' is {show(rid)}, not an integer")
            if rid in seen:
                raise DataError(f"{source}: {what} id {show(rid)} appears twice")
            seen.add(rid)
    for r in categories:
        if not isinstance(r.get("name", ""), str):
            raise DataError(f"{source}: category {show(r['id'])}: 'name' is {show(r['name'])}, not a string")
    images = sorted(images, key=lambda r: r["id"])
    categories = sorted(categories, key=lambda r: r["id"])
    image_index = {r["id"]: i for i, r in enumerate(images)}
    category_index = {r["id"]: i for i, r in enumerate(categories)}
    sizes = _image_sizes(images, source, iou_type)

    needed = ("image_id", "category_id", "bbox") + (("segmentation",) if iou_type == "segm" else ())
    for i, a in enumerate(anns):
        missing = [k for k in needed if k not in a]
        if missing:
            raise DataError(f"{source}: {_record_name('annotation', anns, i)}: missing {', '.join(missing)}"
                            + (" (segm evaluation needs one)" if missing == ["segmentation"] else ""))
    ids = [a.get("id") for a in anns]
    for i, v in enumerate(ids):
        if v is not None and not _is_integer(v):
            raise DataError(f"{source}: annotation #{i}: 'id' is {show(v)}, not an integer")
    given_ids = [v for v in ids if v is not None]
    if len(set(given_ids)) < len(given_ids):
        seen = set()
        duplicate = next(i for i in given_ids if i in seen or seen.add(i))
        raise DataError(f"{source}: annotation id {show(duplicate)} appears twice")
    image = _index([a["image_id"] for a in anns], image_index, source, "annotation", "image_id", anns)
    category = _index([a["category_id"] for a in anns], category_index, source, "annotation", "category_id", anns)
    boxes = _numbers([a["bbox"] for a in anns], "annotation", source, anns, "bbox", 4).reshape(-1, 4)
    if (boxes[:, 2:] < 0).any():
        bad = int(np.flatnonzero((boxes[:, 2:] < 0).any(axis=1))[0])
        raise DataError(f"{source}: {_record_name('annotation', anns, bad)}: bbox {show(anns[bad]['bbox'])} has a "
                        "negative size")
    crowd = _crowd_flags(anns, source)

    with_mask = np.flatnonzero([iou_type == "segm" or "segmentation" in a and a.get("area") is None for a in anns])
    rles = dict(zip(with_mask.tolist(), _masks(anns, with_mask, image, sizes, source, "annotation")))
    area = boxes[:, 2] * boxes[:, 3]  # pycocotools needs `area`; without one, the mask's area, else the box's
    given = [(i, a["area"]) for i, a in enumerate(anns) if a.get("area") is not None]
    if given:
        rows = [i for i, _ in given]
        area[rows] = _numbers([v for _, v in given], "annotation", source, anns, "area", None, rows)
        if (area[rows] < 0).any():
            bad = rows[int(np.argmax(area[rows] < 0))]
            raise DataError(f"{source}: {_record_name('annotation', anns, bad)}: 'area' is {show(anns[bad]['area'])}, "
                            "not a finite number ≥ 0")
    if rles:
        from pycocotools import mask as mask_utils

        for i, rle in rles.items():
            if anns[i].get("area") is None:
                area[i] = float(mask_utils.area(rle))
    return GroundTruth(
        image_ids=[r["id"] for r in images], image_sizes=sizes,
        category_ids=[r["id"] for r in categories],
        category_names=[r.get("name", str(r["id"])) for r in categories],
        image=image, category=category, boxes=boxes, area=area, crowd=crowd,
        masks=[rles[i] for i in range(len(anns))] if iou_type == "segm" else None,
        image_index=image_index, category_index=category_index,
    )


def _fields(results: list, keys: tuple[str, ...], source: str) -> list[list]:
    """Each key's values over all results; a record without one is a one-line error naming it."""
    try:
        return [[r[k] for r in results] for k in keys]
    except (KeyError, TypeError):
        for i, r in enumerate(results):
            if not isinstance(r, dict):
                raise DataError(f"{source}: result #{i} is not an object") from None
            missing = [k for k in keys if k not in r]
            if missing:
                raise DataError(f"{source}: result #{i}: missing {', '.join(missing)}") from None
        raise


def detections(results: list, gt: GroundTruth, iou_type: str = "bbox", source: str = "results") -> Detections:
    """A COCO results list as arrays, every record checked. A result on an image the ground truth does not
    have is an error (as in pycocotools); one of a category it does not have is not scored (counted in
    `ignored`)."""
    if not isinstance(results, list):
        raise DataError(f"{source}: a COCO results file is a list of detections, got {type(results).__name__}")
    shape_key = "bbox" if iou_type == "bbox" else "segmentation"
    image_ids, category_ids, scores, _ = _fields(results, ("image_id", "category_id", "score", shape_key), source)
    image_ids, category_ids = _whole_floats_as_ints(image_ids), _whole_floats_as_ints(category_ids)
    image = _index(image_ids, gt.image_index, source, "result", "image_id", results)
    for i in [] if set(map(type, category_ids)) <= {int} else range(len(category_ids)):
        if not _is_integer(category_ids[i]):
            raise DataError(f"{source}: result #{i}: 'category_id' is {show(category_ids[i])}, not an integer")
    category = np.fromiter((gt.category_index.get(c, -1) for c in category_ids), np.int64, count=len(results))
    scores = _numbers(scores, "result", source, results, "score", None)
    if iou_type == "bbox":
        boxes = _numbers([r["bbox"] for r in results], "result", source, results, "bbox", 4).reshape(-1, 4)
        area = boxes[:, 2] * boxes[:, 3]
        masks = None
    else:
        boxes, area, masks = _mask_results(results, image, gt, source)
    known = category >= 0  # a box of negative size is scored as pycocotools scores it: it overlaps nothing
    if known.all():
        return Detections(image, category, boxes, scores, area, masks, 0)
    kept = np.flatnonzero(known)
    return Detections(image[kept], category[kept], boxes[kept], scores[kept], area[kept],
                      None if masks is None else [masks[i] for i in kept], int((~known).sum()))


def _mask_results(results: list, image: np.ndarray, gt: GroundTruth, source: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Boxes, areas and RLEs of mask results. As in pycocotools' loadRes, a result with a box keeps it and
    its area is the box's; a result without one (or with `bbox: []`, pycocotools' "no box") takes both
    from its mask."""
    from pycocotools import mask as mask_utils

    masks = _masks(results, np.arange(len(results)), image, gt.image_sizes, source, "result")
    with_box = [i for i, r in enumerate(results) if r.get("bbox", []) != []]
    boxes, area = np.zeros((len(results), 4)), np.zeros(len(results))
    if with_box:
        boxes[with_box] = _numbers([results[i]["bbox"] for i in with_box], "result", source, results, "bbox", 4,
                                   with_box)
        area[with_box] = boxes[with_box, 2] * boxes[with_box, 3]
    without = np.setdiff1d(np.arange(len(results)), with_box)
    if len(without):
        boxes[without] = mask_utils.toBbox([masks[i] for i in without]).reshape(-1, 4)
        area[without] = [float(mask_utils.area(masks[i])) for i in without]
    return boxes, area, masks


# -------------------------------------------------------------------------------------------- evaluation


def _box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired rows (pycocotools' bbIou, operation for operation, so the doubles are identical)."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    out = np.zeros(len(d))
    ok = (w > 0) & (h > 0)
    inter = w[ok] * h[ok]
    da = d[ok, 2] * d[ok, 3]
    ga = g[ok, 2] * g[ok, 3]
    union = np.where(crowd[ok], da, da + ga - inter)
    out[ok] = inter / union
    return out


def _mask_iou(det_of_pair: list, gt_of_pair: list, gt: GroundTruth, dt: Detections) -> np.ndarray:
    from pycocotools import mask as mask_utils

    parts = []
    for dets, gts in zip(det_of_pair, gt_of_pair):
        ious = mask_utils.iou([dt.masks[i] for i in dets], [gt.masks[j] for j in gts], [int(gt.crowd[j]) for j in gts])
        parts.append(np.asarray(ious, dtype=np.float64).reshape(len(dets), len(gts)).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(sorted_keys) else np.zeros(0, np.int64)


def _rank_in_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal keys."""
    starts = _run_starts(sorted_keys)
    return np.arange(len(sorted_keys)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_keys)]))


def evaluate(gt: GroundTruth, dt: Detections, iou_type: str = "bbox") -> CocoEvaluation:
    K, A, T = len(gt.category_ids), len(AREA_RANGES), len(IOU_THRESHOLDS)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)  # pycocotools' cap, so IoU 1.0 always counts
    lo = np.array([r[0] for r in AREA_RANGES])
    hi = np.array([r[1] for r in AREA_RANGES])

    # Detections of each (image, category), best first (ties in file order), at most MAX_DETS[-1].
    det_key = dt.image * K + dt.category
    order = np.lexsort((-dt.scores, det_key))
    det_key = det_key[order]
    rank = _rank_in_runs(det_key)
    keep = rank < MAX_DETS[-1]
    det, rank, det_key = order[keep], rank[keep], det_key[keep]
    n_det = len(det)

    gt_key = gt.image * K + gt.category
    gt_order = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_order]
    gt_ignored = gt.crowd[:, None] | (gt.area[:, None] < lo) | (gt.area[:, None] > hi)  # [G, A]
    det_outside = (dt.area[det][:, None] < lo) | (dt.area[det][:, None] > hi)  # [D, A]

    # Every (detection, ground truth) of the same image and category, detection-major, gt in file order.
    g_start = np.searchsorted(gt_key_sorted, det_key, "left")
    g_count = np.searchsorted(gt_key_sorted, det_key, "right") - g_start
    entry_det = np.repeat(np.arange(n_det), g_count)
    within = np.arange(len(entry_det)) - np.repeat(np.cumsum(g_count) - g_count, g_count)
    entry_gt = gt_order[g_start[entry_det] + within]
    if iou_type == "bbox":
        entry_iou = _box_iou(dt.boxes[det[entry_det]], gt.boxes[entry_gt], gt.crowd[entry_gt])
    else:
        # One pycocotools mask IoU call per (image, category) that has both; its [dets, gts] matrix,
        # read row by row, is exactly the entries' order.
        pairs = np.unique(det_key[entry_det])
        first, last = np.searchsorted(det_key, pairs, "left"), np.searchsorted(det_key, pairs, "right")
        entry_iou = _mask_iou([det[f:l] for f, l in zip(first, last)],
                              [gt_order[g_start[f]: g_start[f] + g_count[f]] for f in first], gt, dt)

    # Only pairs that reach the lowest threshold can ever match.
    reach = entry_iou >= thresholds.min()
    entry_det, entry_gt, entry_iou = entry_det[reach], entry_gt[reach], entry_iou[reach]
    # Matching is greedy within an (image, category): round r takes the r-th detection (of those with any
    # candidate) of every (image, category) at once; different (image, category)s never share ground truth.
    has_candidate = np.zeros(n_det, bool)
    has_candidate[entry_det] = True
    candidates = np.flatnonzero(has_candidate)
    round_of_det = np.zeros(n_det, np.int64)
    round_of_det[candidates] = _rank_in_runs(det_key[candidates])
    entry_round = round_of_det[entry_det]
    by_round = np.argsort(entry_round, kind="stable")
    entry_det, entry_gt, entry_iou, entry_round = (entry_det[by_round], entry_gt[by_round], entry_iou[by_round],
                                                   entry_round[by_round])
    round_bounds = np.searchsorted(entry_round, np.arange(entry_round.max() + 2 if len(entry_round) else 1))

    gt_taken = np.zeros((len(gt.boxes), A, T), bool)
    det_matched = np.zeros((n_det, A, T), bool)
    det_ignored_by_gt = np.zeros((n_det, A, T), bool)
    # Eligible ground truth ranks: 2 = counted, 1 = ignored (taken only when no counted one qualifies).
    tier_of_gt = (2 - gt_ignored.astype(np.int8))
    for r in range(len(round_bounds) - 1):
        sl = slice(round_bounds[r], round_bounds[r + 1])
        e_det, e_gt, e_iou = entry_det[sl], entry_gt[sl], entry_iou[sl]
        if not len(e_det):
            continue
        seg = _run_starts(e_det)
        seg_len = np.diff(np.r_[seg, len(e_det)])
        free = ~gt_taken[e_gt] | gt.crowd[e_gt][:, None, None]
        eligible = free & (e_iou[:, None, None] >= thresholds)
        tier = np.where(eligible, tier_of_gt[e_gt][:, :, None], 0).astype(np.int8)
        best_tier = np.repeat(np.maximum.reduceat(tier, seg, axis=0), seg_len, axis=0)
        in_tier = (tier == best_tier) & (tier > 0)
        value = np.where(in_tier, e_iou[:, None, None], -1.0)
        best_value = np.repeat(np.maximum.reduceat(value, seg, axis=0), seg_len, axis=0)
        position = np.where(in_tier & (value == best_value), np.arange(len(e_det))[:, None, None], -1)
        chosen = np.maximum.reduceat(position, seg, axis=0)  # the last best: pycocotools' tie rule
        i, a, t = np.nonzero(chosen >= 0)
        g = e_gt[chosen[i, a, t]]
        d = e_det[seg[i]]
        gt_taken[g, a, t] = True
        det_matched[d, a, t] = True
        det_ignored_by_gt[d, a, t] = gt_ignored[g, a]
    det_ignored = np.where(det_matched, det_ignored_by_gt, det_outside[:, :, None])
    tp = det_matched & ~det_ignored
    fp = ~det_matched & ~det_ignored

    precision, recall = _accumulate(gt, dt, det, rank, tp, fp, gt_ignored)
    return CocoEvaluation(precision, recall, summarize(precision, recall), list(gt.category_ids), list(gt.category_names))


def _first_reaching(counted: int, thresholds: np.ndarray) -> np.ndarray:
    """For each recall threshold, the least number of true positives j with j / counted >= threshold, in
    the same floating-point division pycocotools does (so the comparison is exactly its comparison)."""
    base = np.maximum(np.floor(thresholds * counted).astype(np.int64) - 2, 0)
    cands = base[:, None] + np.arange(5)
    ok = (cands / np.float64(counted)) >= thresholds[:, None]
    return cands[np.arange(len(thresholds)), ok.argmax(axis=1)]


def _accumulate(gt: GroundTruth, dt: Detections, det: np.ndarray, rank: np.ndarray, tp: np.ndarray, fp: np.ndarray,
                gt_ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate() for every category, area range and threshold at once. Columns are the
    (area range, IoU threshold) combinations; rows of a column run category by category."""
    K, A, T, R, M = len(gt.category_ids), len(AREA_RANGES), len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(MAX_DETS)
    C = A * T
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    counted = np.stack([np.bincount(gt.category[~gt_ignored[:, a]], minlength=K) for a in range(A)], axis=1)  # [K, A]
    scored = counted > 0  # pycocotools leaves -1 where a category has no ground truth in the range
    need = np.zeros((K, A, R), np.int64)
    for k, a in zip(*np.nonzero(scored)):
        need[k, a] = _first_reaching(int(counted[k, a]), RECALL_THRESHOLDS)
    need_by_column = np.repeat(need, T, axis=1)  # [K, C, R], column = area * T + threshold

    # pycocotools concatenates the images in id order, each image's detections best first, then sorts all
    # by score with a stable sort: so equal scores rank by image, then by their place in the image.
    cat, img, score = dt.category[det], dt.image[det], dt.scores[det]
    order = np.lexsort((rank, img, -score, cat))
    cat_all, rank_all = cat[order], rank[order]
    tp_all = np.ascontiguousarray(tp[order].reshape(len(order), C).T)
    fp_all = np.ascontiguousarray(fp[order].reshape(len(order), C).T)
    eps = np.spacing(1)
    columns = np.arange(C)
    for m, max_det in enumerate(MAX_DETS):
        keep = rank_all < max_det
        cats = cat_all[keep]
        n = len(cats)
        bounds = np.searchsorted(cats, np.arange(K + 1))
        sizes = np.diff(bounds)
        if n == 0:
            precision[:, :, :, :, m] = np.where(scored, 0.0, -1.0)[None, None]
            recall[:, :, :, m] = np.where(scored, 0.0, -1.0)[None]
            continue
        every = n == len(keep)
        tp_int = _cumsum_by_category(tp_all if every else tp_all[:, keep], bounds)  # [C, n]
        fp_int = _cumsum_by_category(fp_all if every else fp_all[:, keep], bounds)
        tp_sum = tp_int.astype(np.float64)
        pr = tp_sum / (fp_int.astype(np.float64) + tp_sum + eps)
        envelope = np.empty_like(pr)  # precision made non-increasing from the right, within each category
        for k in np.flatnonzero(sizes):
            b0, b1 = bounds[k], bounds[k + 1]
            envelope[:, b0:b1] = np.maximum.accumulate(pr[:, b0:b1][:, ::-1], axis=1)[:, ::-1]

        last = np.where(sizes > 0, bounds[1:] - 1, 0)
        final_tp = np.where(sizes[None, :] > 0, tp_sum[:, last], 0.0)  # [C, K]
        npig = np.repeat(counted, T, axis=1).T.astype(np.float64)  # [C, K]
        with np.errstate(divide="ignore", invalid="ignore"):
            rec = final_tp / npig
        # First row where recall reaches each threshold. recall = tp / npig is monotone in the integer tp,
        # so search the integer counts: one searchsorted over every (column, category) block, made
        # globally sorted by adding a different multiple of (n + 1) to each block.
        block = (columns[:, None] * K + cats[None, :]) * (n + 1)
        flat = (tp_int + block).ravel()
        block_start = (columns[:, None] * K + np.arange(K)[None, :]) * (n + 1)  # [C, K]
        queries = need_by_column.transpose(1, 0, 2) + block_start[:, :, None]  # [C, K, R]
        row0 = columns[:, None] * n + bounds[None, :-1]  # flat index of each block's first row
        pos = np.searchsorted(flat, queries.ravel(), "left").reshape(C, K, R) - row0[:, :, None]
        found = pos < sizes[None, :, None]
        index = row0[:, :, None] + np.clip(pos, 0, np.maximum(sizes - 1, 0)[None, :, None])
        q = np.where(found, envelope.ravel()[np.minimum(index, C * n - 1)], 0.0)  # [C, K, R]

        q = q.reshape(A, T, K, R).transpose(1, 3, 2, 0)  # [T, R, K, A]
        rec = rec.reshape(A, T, K).transpose(1, 2, 0)  # [T, K, A]
        precision[:, :, :, :, m] = np.where(scored[None, None], q, -1.0)
        recall[:, :, :, m] = np.where(scored[None], rec, -1.0)
    return precision, recall


def _cumsum_by_category(flags: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Running counts along each row, restarting at every category boundary (exact: integers)."""
    total = np.cumsum(flags.astype(np.int64), axis=1)  # casting first: accumulating bools casts slowly
    before = np.zeros((flags.shape[0], len(bounds) - 1), np.int64)
    starts = bounds[:-1]
    has_before = starts > 0
    before[:, has_before] = total[:, starts[has_before] - 1]
    total -= np.repeat(before, np.diff(bounds), axis=1)
    return total


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 numbers of COCOeval.summarize(), from the same arrays in the same order."""
    stats = np.zeros(len(_SUMMARY))
    for n, (is_ap, iou, area, max_det) in enumerate(_SUMMARY):
        a, m = AREA_LABELS.index(area), MAX_DETS.index(max_det)
        s = precision if is_ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if is_ap else s[:, :, a, m]
        valid = s[s > -1]
        stats[n] = np.mean(valid) if len(valid) else -1
    return stats


ENGINES = ("auto", "hotcoco", "numpy")


def resolve_engine(engine: str = "auto") -> str:
    """'hotcoco' (compiled, ~100x pycocotools) when installed, else 'numpy' (this module); both give
    pycocotools' numbers and both find ground truth with annotation id 0."""
    if engine not in ENGINES:
        raise DataError(f"COCO scoring engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine != "auto":
        if engine == "hotcoco" and not hotcoco_available():
            raise DataError("the hotcoco engine is not installed (pip install hotcoco); use --engine numpy")
        return engine
    return "hotcoco" if hotcoco_available() else "numpy"


def hotcoco_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("hotcoco") is not None


def score(coco_gt: dict, results: list, iou_type: str = "bbox", gt_source: str = "ground truth",
          results_source: str = "results", engine: str = "auto") -> tuple[dict[str, float], CocoEvaluation, Detections]:
    """Every record checked (one-line errors naming it), then scored by `engine`. Metrics under
    `{iou_type}/AP` ... plus per class `{iou_type}/AP/<name>` and `{iou_type}/AP50/<name>`."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    engine = resolve_engine(engine)
    # A finite box of 1e200 has an infinite area, as in pycocotools' Python floats: no warning lines.
    with np.errstate(over="ignore", invalid="ignore"):
        return _score(coco_gt, results, iou_type, gt_source, results_source, engine)


def _score(coco_gt: dict, results: list, iou_type: str, gt_source: str, results_source: str,
           engine: str) -> tuple[dict[str, float], CocoEvaluation, Detections]:
    gt = ground_truth(coco_gt, iou_type, gt_source)
    dt = detections(results, gt, iou_type, results_source)
    scored_gt, scored_dt, scored = _scored_only(gt, dt, gt_source)
    if not len(scored):  # nothing to find: every number is -1 (no engine needed)
        precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), 0, len(AREA_RANGES), len(MAX_DETS)))
        recall = -np.ones((len(IOU_THRESHOLDS), 0, len(AREA_RANGES), len(MAX_DETS)))
    elif engine == "hotcoco":
        from visiontl.evaluation.hotcoco_engine import evaluate_with_hotcoco

        precision, recall = evaluate_with_hotcoco(scored_gt, scored_dt, iou_type)
    else:
        ev = evaluate(scored_gt, scored_dt, iou_type)
        precision, recall = ev.precision, ev.recall
    ev = CocoEvaluation(precision, recall, summarize(precision, recall), list(gt.category_ids),
                        list(gt.category_names), scored)
    return metrics_of(ev, iou_type), ev, dt


# Each category with ground truth costs about 0.4 MB while it is scored (pycocotools' precision array alone
# is 10 x 101 x 4 x 3 doubles per category); the largest real detection vocabularies have about 13,000.
MAX_SCORED_CATEGORIES = 20_000


def _scored_only(gt: GroundTruth, dt: Detections, source: str) -> tuple[GroundTruth, Detections, np.ndarray]:
    """The ground truth and detections of the categories that have ground truth, renumbered 0..K-1, and
    those categories' positions. A category without ground truth scores -1 everywhere in pycocotools and
    changes no other number, so it is not evaluated at all: memory follows the annotations, not the list
    of categories a file declares."""
    scored = np.unique(gt.category)
    if len(scored) > MAX_SCORED_CATEGORIES:
        raise DataError(f"{source}: {len(scored):,} categories have ground truth; visiontl score evaluates at most "
                        f"{MAX_SCORED_CATEGORIES:,} (about 0.4 MB of memory each)")
    new = np.full(len(gt.category_ids), -1, np.int64)
    new[scored] = np.arange(len(scored))
    gt = replace(gt, category_ids=[gt.category_ids[k] for k in scored],
                 category_names=[gt.category_names[k] for k in scored], category=new[gt.category],
                 category_index={})
    keep = np.flatnonzero(new[dt.category] >= 0)
    dt = replace(dt, image=dt.image[keep], category=new[dt.category[keep]], boxes=dt.boxes[keep],
                 scores=dt.scores[keep], area=dt.area[keep],
                 masks=None if dt.masks is None else [dt.masks[i] for i in keep])
    return gt, dt, scored


def metrics_of(ev: CocoEvaluation, iou_type: str) -> dict[str, float]:
    metrics = {f"{iou_type}/{name}": float(v) for name, v in zip(METRIC_NAMES, ev.stats)}
    names = list(ev.category_names)
    uses = Counter(names)
    for k, name in enumerate(names):
        if uses[name] > 1:  # two categories of one name must not share (and overwrite) a key
            names[k] = f"{name} (id {ev.category_ids[k]})"
    for name, ap, ap50 in zip(names, ev.per_class(), ev.per_class(0.5)):
        metrics[f"{iou_type}/AP/{name}"] = float(ap)
        metrics[f"{iou_type}/AP50/{name}"] = float(ap50)
    return metrics
