"""The vectorised COCO evaluator against pycocotools' COCOeval, the reference, on generated suites that
cover crowd regions, images without annotations, classes without ground truth, more than 100 detections
of one class in an image, tied scores, every area range, and polygon and RLE masks."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visiontl.evaluation.cocoeval import METRIC_NAMES, hotcoco_available, score

ENGINES = ["numpy", pytest.param("hotcoco", marks=pytest.mark.skipif(not hotcoco_available(), reason="hotcoco not installed"))]

CATEGORY_IDS = [1, 2, 5, 7, 11, 90]  # gaps on purpose; 90 never has ground truth


def _box(rng: np.random.Generator, w: int, h: int, big: bool = False) -> list[float]:
    side = rng.choice([rng.uniform(4, 30), rng.uniform(30, 100), rng.uniform(100, 300)], p=[0.4, 0.35, 0.25])
    if big:
        side = rng.uniform(120, 300)
    bw, bh = min(side * rng.uniform(0.5, 1.5), w - 1), min(side * rng.uniform(0.5, 1.5), h - 1)
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return [round(float(v), 2) for v in (x, y, bw, bh)]


def _jitter(rng: np.random.Generator, box: list[float], scale: float) -> list[float]:
    x, y, w, h = box
    return [round(float(v), 2) for v in (x + rng.normal(0, scale * w), y + rng.normal(0, scale * h),
                                         max(1.0, w * rng.uniform(1 - scale, 1 + scale)),
                                         max(1.0, h * rng.uniform(1 - scale, 1 + scale)))]


def _polygon(box: list[float], rng: np.random.Generator) -> list[list[float]]:
    x, y, w, h = box
    # an octagon inside the box: a mask whose area differs from the box's
    cx, cy = x + w / 2, y + h / 2
    angles = np.sort(rng.uniform(0, 2 * np.pi, 8))
    pts = [(cx + np.cos(a) * w / 2 * rng.uniform(0.6, 1.0), cy + np.sin(a) * h / 2 * rng.uniform(0.6, 1.0)) for a in angles]
    return [[round(float(v), 2) for p in pts for v in p]]


def _rle(box: list[float], height: int, width: int, compressed: bool) -> dict:
    m = np.zeros((height, width), np.uint8, order="F")
    x, y, w, h = (int(round(v)) for v in box)
    m[y: y + max(h, 1), x: x + max(w, 1)] = 1
    rle = mask_utils.encode(m)
    if compressed:
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    # uncompressed counts, as COCO writes crowd regions
    flat = m.ravel(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [height, width], "counts": counts}


def make_suite(seed: int, segm: bool = False) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    n_images = int(rng.integers(3, 25))
    image_ids = sorted(rng.choice(np.arange(1, 10_000), n_images, replace=False).tolist(), key=lambda _: rng.random())
    for image_id in image_ids:
        w, h = int(rng.integers(80, 400)), int(rng.integers(80, 400))
        images.append({"id": int(image_id), "width": w, "height": h, "file_name": f"{image_id}.jpg"})
        n_gt = int(rng.choice([0, 0, 1, 3, 6, 12]))
        for _ in range(n_gt):
            cat = int(rng.choice(CATEGORY_IDS[:-1]))
            crowd = rng.random() < 0.08
            box = _box(rng, w, h, big=crowd)
            ann = {"id": len(anns) + 1, "image_id": int(image_id), "category_id": cat, "bbox": box,
                   "iscrowd": int(crowd), "area": round(box[2] * box[3] * (rng.uniform(0.5, 1.0) if rng.random() < 0.3 else 1.0), 3)}
            if segm:
                if crowd:
                    ann["segmentation"] = _rle(box, h, w, compressed=False)
                elif rng.random() < 0.3:
                    ann["segmentation"] = _rle(box, h, w, compressed=True)
                else:
                    ann["segmentation"] = _polygon(box, rng)
                ann["area"] = float(mask_utils.area(_to_rle(ann["segmentation"], h, w)))
            anns.append(ann)
            for _ in range(int(rng.choice([0, 1, 1, 2]))):  # true positives of varying quality, duplicates
                det = {"image_id": int(image_id), "category_id": cat if rng.random() < 0.85 else int(rng.choice(CATEGORY_IDS)),
                       "bbox": _jitter(rng, box, rng.choice([0.02, 0.1, 0.25])), "score": _score(rng)}
                results.append(det)
        for _ in range(int(rng.integers(0, 6))):  # false positives, also on images without ground truth
            results.append({"image_id": int(image_id), "category_id": int(rng.choice(CATEGORY_IDS)),
                            "bbox": _box(rng, w, h), "score": _score(rng)})
    # one (image, category) with more than 100 detections: the cut at 100 and the 1/10/100 limits matter
    crowded = images[0]
    for _ in range(130):
        results.append({"image_id": crowded["id"], "category_id": CATEGORY_IDS[0],
                        "bbox": _box(rng, crowded["width"], crowded["height"]), "score": _score(rng)})
    if segm:
        sizes = {im["id"]: (im["height"], im["width"]) for im in images}
        for r in results:
            h, w = sizes[r["image_id"]]
            r["segmentation"] = _rle(_clip(r["bbox"], w, h), h, w, compressed=True)
    rng.shuffle(results)
    cats = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": anns, "categories": cats}, results


def _clip(box: list[float], w: int, h: int) -> list[float]:
    x, y, bw, bh = box
    x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
    return [x, y, min(bw, w - x), min(bh, h - y)]


def _score(rng: np.random.Generator) -> float:
    return round(float(rng.random()), 1 if rng.random() < 0.5 else 4)  # many exact ties


def _to_rle(seg, h: int, w: int) -> dict:
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, h, w)
    return seg


def pycocotools_eval(coco_gt: dict, results: list[dict], iou_type: str) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(coco_gt)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results)) if results else _empty_results(gt)
        ev = COCOeval(gt, dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _empty_results(gt: COCO) -> COCO:
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": gt.dataset["categories"], "annotations": []}
    dt.createIndex()
    return dt


def assert_same(coco_gt: dict, results: list[dict], iou_type: str, engine: str) -> None:
    ref = pycocotools_eval(coco_gt, results, iou_type)
    metrics, ev, _ = score(coco_gt, results, iou_type, engine=engine)
    # categories without ground truth are not evaluated; raw() gives them pycocotools' -1
    np.testing.assert_array_equal(ev.raw()["precision"], ref.eval["precision"])
    np.testing.assert_array_equal(ev.raw()["recall"], ref.eval["recall"])
    for name, value in zip(METRIC_NAMES, ref.stats):
        assert abs(metrics[f"{iou_type}/{name}"] - value) <= 1e-9, name


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(12))
def test_boxes_equal_pycocotools(seed: int, engine: str) -> None:
    assert_same(*make_suite(seed), "bbox", engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(4))
def test_masks_equal_pycocotools(seed: int, engine: str) -> None:
    coco_gt, results = make_suite(100 + seed, segm=True)
    assert_same(coco_gt, results, "segm", engine)
    # results without a box take area and box from the mask, as pycocotools' loadRes does
    assert_same(coco_gt, [{k: v for k, v in r.items() if k != "bbox"} for r in results], "segm", engine)


def test_inputs_are_not_modified() -> None:
    coco_gt, results = make_suite(11, segm=True)
    before = copy.deepcopy((coco_gt, results))
    for engine in ("numpy", "hotcoco") if hotcoco_available() else ("numpy",):
        score(coco_gt, results, "segm", engine=engine)
        assert (coco_gt, results) == before


@pytest.mark.parametrize("engine", ENGINES)
def test_polygon_results_equal_pycocotools(engine: str) -> None:
    coco_gt, results = make_suite(7, segm=True)
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco_gt["images"]}
    for r in results[::2]:
        h, w = sizes[r["image_id"]]
        r["segmentation"] = [[float(v) for v in (*r["bbox"][:2], r["bbox"][0] + r["bbox"][2], r["bbox"][1],
                                                  r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3])]]
    # pycocotools' loadRes converts polygons only through annToRLE during evaluation; give it RLE to compare
    ref_results = copy.deepcopy(results)
    for r in ref_results:
        h, w = sizes[r["image_id"]]
        rle = _to_rle(r["segmentation"], h, w)
        r["segmentation"] = {"size": rle["size"], "counts": rle["counts"] if isinstance(rle["counts"], str) else rle["counts"].decode()}
    ref = pycocotools_eval(coco_gt, ref_results, "segm")
    _, ev, _ = score(coco_gt, results, "segm", engine=engine)
    np.testing.assert_array_equal(ev.raw()["precision"], ref.eval["precision"])


@pytest.mark.parametrize("engine", ENGINES)
def test_no_results_and_no_ground_truth(engine: str) -> None:
    coco_gt, results = make_suite(3)
    assert_same(coco_gt, [], "bbox", engine)
    empty_gt = {**coco_gt, "annotations": []}
    metrics, _, _ = score(empty_gt, results, "bbox", engine=engine)
    assert all(metrics[f"bbox/{n}"] == -1 for n in METRIC_NAMES)
    assert_same(empty_gt, results, "bbox", engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_results_of_unknown_categories_are_not_scored(engine: str) -> None:
    coco_gt, results = make_suite(5)
    extra = [{**r, "category_id": 999} for r in results[:10]]
    metrics, _, dt = score(coco_gt, results + extra, "bbox", engine=engine)
    ref, _, _ = score(coco_gt, results, "bbox", engine=engine)
    assert dt.ignored == 10
    assert metrics.keys() == ref.keys()
    np.testing.assert_array_equal(list(metrics.values()), list(ref.values()))  # NaN (no ground truth) equal too


@pytest.mark.parametrize("engine", ENGINES)
def test_ground_truth_id_zero_is_found(engine: str) -> None:
    """pycocotools marks a match with the annotation id, so id 0 never counts; here it does."""
    coco_gt = {"images": [{"id": 1, "width": 100, "height": 100}],
               "categories": [{"id": 1, "name": "cell"}],
               "annotations": [{"id": 0, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9}]
    assert pycocotools_eval(coco_gt, results, "bbox").stats[0] == 0.0  # the reference's bug, still there
    metrics, _, _ = score(coco_gt, results, "bbox", engine=engine)
    # precision is tp / (tp + fp + eps) in COCOeval, so a perfect score is 1 - 2.2e-16
    assert metrics["bbox/AP"] == pytest.approx(1.0, abs=1e-12) and metrics["bbox/AR100"] == 1.0
    assert metrics["bbox/AP/cell"] == pytest.approx(1.0, abs=1e-12)
