"""COCO evaluation: every number equals pycocotools' COCOeval run directly on the same dicts."""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.errors import DataError
from visiontl.evaluation.coco import METRIC_NAMES, evaluate_coco, results_from_instances, to_coco_dict


def make_set(gt: dict, root) -> AnnotationSet:
    """An AnnotationSet holding exactly what a COCO ground-truth dict holds."""
    cats = [Category(c["id"], c["name"]) for c in gt["categories"]]
    images = [ImageRecord(i["id"], f"{i['id']}.jpg", i["width"], i["height"]) for i in gt["images"]]
    insts = [Instance(a["id"], a["image_id"], a["category_id"], tuple(a["bbox"]), bool(a.get("iscrowd", 0)),
                      copy.deepcopy(a.get("segmentation")), a.get("area")) for a in gt["annotations"]]
    return AnnotationSet(cats, images, insts, root)


def reference(gt: dict, results: list[dict], iou_type: str = "bbox") -> COCOeval:
    """pycocotools by the book: COCO() + loadRes + evaluate/accumulate/summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def assert_stats_equal(metrics: dict, ev: COCOeval, iou_type: str = "bbox") -> None:
    assert len(ev.stats) == len(METRIC_NAMES) == 12
    for name, want in zip(METRIC_NAMES, ev.stats):
        assert metrics[f"{iou_type}/{name}"] == pytest.approx(float(want), abs=1e-12), name


def box_area(b):
    return float(b[2] * b[3])


def gt_ann(i, image_id, cat, bbox, iscrowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": iscrowd, "area": box_area(bbox)}


def det(image_id, cat, bbox, score):
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}


# Two categories with ground truth (cat, dog), one without (bird) that still gets detections; image 3 has no
# ground truth and a false positive; image 4 has a crowd region with two detections inside it; scores tie.
HANDMADE_GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 200, "height": 200},
               {"id": 3, "width": 100, "height": 100}, {"id": 4, "width": 300, "height": 300}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}],
    "annotations": [
        gt_ann(1, 1, 1, [10, 10, 20, 20]), gt_ann(2, 1, 2, [50, 50, 40, 40]),
        gt_ann(3, 2, 1, [0, 0, 100, 100]), gt_ann(4, 2, 1, [120, 120, 30, 30]),
        gt_ann(5, 4, 1, [0, 0, 200, 200], iscrowd=1), gt_ann(6, 4, 2, [210, 210, 50, 50]),
        gt_ann(7, 4, 1, [220, 10, 60, 60]),
    ],
}
HANDMADE_DETS = [
    det(1, 1, [11, 11, 20, 20], 0.9), det(1, 1, [60, 60, 10, 10], 0.9), det(1, 2, [50, 52, 40, 38], 0.8),
    det(2, 1, [2, 2, 95, 98], 0.7), det(2, 1, [118, 121, 30, 30], 0.5), det(2, 2, [0, 0, 100, 100], 0.6),
    det(3, 1, [10, 10, 30, 30], 0.9), det(3, 3, [5, 5, 10, 10], 0.4),
    det(4, 1, [10, 10, 50, 50], 0.85), det(4, 1, [100, 100, 40, 40], 0.3), det(4, 2, [212, 210, 50, 48], 0.7),
    det(4, 1, [225, 12, 58, 55], 0.5), det(4, 3, [0, 0, 10, 10], 0.2),
]


def test_handmade_case_matches_pycocotools(tmp_path):
    aset = make_set(HANDMADE_GT, tmp_path)
    results = copy.deepcopy(HANDMADE_DETS)
    metrics, raw = evaluate_coco(aset, results)
    ev = reference(HANDMADE_GT, HANDMADE_DETS)
    assert_stats_equal(metrics, ev)
    assert results == HANDMADE_DETS  # the caller's dicts are not modified
    # a case that exercises something: neither perfect nor empty, and every area range has ground truth
    assert 0.3 < metrics["bbox/AP"] < 0.9
    assert all(metrics[f"bbox/{n}"] >= 0 for n in METRIC_NAMES)
    assert raw["precision"].shape == (10, 101, 3, 4, 3)
    assert raw["recall"].shape == (10, 3, 4, 3)
    assert raw["category_ids"] == [1, 2, 3] and raw["max_dets"] == [1, 10, 100]
    assert raw["area_ranges"] == [[0, 1e10], [0, 32**2], [32**2, 96**2], [96**2, 1e10]]
    np.testing.assert_array_equal(raw["precision"], ev.eval["precision"])
    np.testing.assert_allclose(raw["iou_thresholds"], np.linspace(0.5, 0.95, 10))
    assert len(raw["rec_thresholds"]) == 101


def test_to_coco_dict_keeps_every_image_and_crowd(tmp_path):
    d = to_coco_dict(make_set(HANDMADE_GT, tmp_path))
    assert [i["id"] for i in d["images"]] == [1, 2, 3, 4]
    assert [a["id"] for a in d["annotations"]] == list(range(1, 8))
    assert [a["iscrowd"] for a in d["annotations"]] == [0, 0, 0, 0, 1, 0, 0]
    assert [c["id"] for c in d["categories"]] == [1, 2, 3]


def test_per_class_ap_from_precision(tmp_path):
    metrics, _ = evaluate_coco(make_set(HANDMADE_GT, tmp_path), HANDMADE_DETS)
    precision = reference(HANDMADE_GT, HANDMADE_DETS).eval["precision"]
    for k, name in enumerate(["cat", "dog"]):
        p = precision[:, :, k, 0, -1]
        assert metrics[f"bbox/AP/{name}"] == pytest.approx(float(np.mean(p[p > -1])), abs=1e-12)
        p50 = precision[0, :, k, 0, -1]
        assert metrics[f"bbox/AP50/{name}"] == pytest.approx(float(np.mean(p50[p50 > -1])), abs=1e-12)
    assert 0 < metrics["bbox/AP/cat"] < 1 and metrics["bbox/AP50/dog"] == pytest.approx(1.0)
    # bird has detections but no ground truth: pycocotools leaves its precision at -1, we report NaN
    assert (precision[:, :, 2, 0, -1] == -1).all()
    assert math.isnan(metrics["bbox/AP/bird"]) and math.isnan(metrics["bbox/AP50/bird"])


def test_annotation_id_zero_is_matched(tmp_path):
    gt = {"images": [{"id": 7, "width": 64, "height": 64}], "categories": [{"id": 1, "name": "thing"}],
          "annotations": [gt_ann(0, 7, 1, [8, 8, 40, 40])]}
    dets = [det(7, 1, [8, 8, 40, 40], 0.9)]
    metrics, _ = evaluate_coco(make_set(gt, tmp_path), dets)
    assert metrics["bbox/AP"] == pytest.approx(1.0, abs=1e-12) and metrics["bbox/AR100"] == 1.0
    assert metrics["bbox/AP/thing"] == pytest.approx(1.0, abs=1e-12)
    # pycocotools on the dict as it stands uses the id 0 as its "matched" marker, so the match never counts:
    # the perfect detection is a false positive and the annotation is missed
    raw = reference(gt, dets)
    assert raw.stats[0] == 0.0 and raw.stats[8] == 0.0


def test_category_ids_zero_and_gaps(tmp_path):
    gt = {"images": [{"id": 0, "width": 100, "height": 100}, {"id": 3, "width": 100, "height": 100}],
          "categories": [{"id": 0, "name": "zero"}, {"id": 5, "name": "five"}, {"id": 17, "name": "seventeen"}],
          "annotations": [gt_ann(1, 0, 0, [10, 10, 30, 30]), gt_ann(2, 3, 5, [40, 40, 50, 50]),
                          gt_ann(3, 3, 0, [0, 0, 20, 20])]}
    dets = [det(0, 0, [10, 10, 30, 30], 0.9), det(3, 0, [0, 0, 20, 20], 0.8),
            det(3, 5, [0, 0, 30, 30], 0.7), det(3, 17, [40, 40, 50, 50], 0.6)]
    metrics, raw = evaluate_coco(make_set(gt, tmp_path), dets)
    assert_stats_equal(metrics, reference(gt, dets))
    assert raw["category_ids"] == [0, 5, 17]
    assert metrics["bbox/AP/zero"] == 1.0 and metrics["bbox/AP/five"] == 0.0
    assert math.isnan(metrics["bbox/AP/seventeen"])
    assert metrics["bbox/AP"] == pytest.approx(0.5)
    named, _ = evaluate_coco(make_set(gt, tmp_path), dets, category_names={5: "Five"})
    assert named["bbox/AP/Five"] == 0.0 and named["bbox/AP/zero"] == 1.0 and "bbox/AP/five" not in named


def _disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _rle(mask):
    return mask_utils.encode(np.asfortranarray(mask))


def test_segm_polygons_and_rle_match_pycocotools(tmp_path):
    sq = lambda x, y, s: [[x, y, x + s, y, x + s, y + s, x, y + s]]  # noqa: E731
    gt = {"images": [{"id": 1, "width": 80, "height": 60}, {"id": 2, "width": 120, "height": 100}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0,
               "segmentation": sq(10, 10, 20), "area": 400.0},
              {"id": 2, "image_id": 1, "category_id": 2, "bbox": [40, 20, 30, 30], "iscrowd": 0,
               "segmentation": [[40, 20, 70, 20, 55, 50]], "area": 450.0},
              {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 60, 60], "iscrowd": 0,
               "segmentation": sq(5, 5, 60) + sq(80, 80, 10), "area": 3700.0},
              {"id": 4, "image_id": 2, "category_id": 2, "bbox": [70, 0, 50, 40], "iscrowd": 1,
               "segmentation": mask_utils.frPyObjects(sq(70, 0, 40), 100, 120)[0], "area": 1600.0},
          ]}
    m1 = np.zeros((60, 80), np.uint8)
    m1[10:30, 11:31] = 1
    m2 = np.zeros((100, 120), np.uint8)
    m2[5:65, 5:60] = 1
    m3 = np.zeros((100, 120), np.uint8)
    m3[2:38, 75:110] = 1  # inside the crowd region
    dets = [{"image_id": 1, "category_id": 1, "segmentation": _rle(m1), "score": 0.9},
            {"image_id": 1, "category_id": 2, "segmentation": _rle(_disk(60, 80, 35, 55, 10)), "score": 0.8},
            {"image_id": 2, "category_id": 1, "segmentation": _rle(m2), "score": 0.7},
            {"image_id": 2, "category_id": 2, "segmentation": _rle(m3), "score": 0.6},
            {"image_id": 2, "category_id": 1, "segmentation": _rle(_disk(100, 120, 80, 30, 12)), "score": 0.95}]
    aset = make_set(gt, tmp_path)
    metrics, _ = evaluate_coco(aset, dets, iou_type="segm")
    ev = reference(gt, dets, "segm")
    assert_stats_equal(metrics, ev, "segm")
    assert 0 < metrics["segm/AP"] < 1 and set(metrics) >= {"segm/AP/a", "segm/AP/b", "segm/AP50/a"}

    # without `area`, the ground-truth area is the mask area (pycocotools), which is what the dict above says
    for inst in aset.instances:
        inst.area = None
    assert [a["area"] for a in to_coco_dict(aset)["annotations"]] == [400.0, 450.0, 3700.0, 1600.0]
    assert evaluate_coco(aset, dets, iou_type="segm")[0] == metrics

    # the same masks as predicted Instances (box and RLE, as a model gives them) and as polygons without a box
    preds = [Instance(i, d["image_id"], d["category_id"], tuple(mask_utils.toBbox(d["segmentation"]).tolist()),
                      segmentation=d["segmentation"], score=d["score"]) for i, d in enumerate(dets)]
    from_instances = results_from_instances(preds)
    assert all(set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"} for r in from_instances)
    assert_stats_equal(evaluate_coco(aset, from_instances, iou_type="segm")[0],
                       reference(gt, from_instances, "segm"), "segm")
    poly = [{"image_id": 1, "category_id": 1, "segmentation": sq(11, 10, 20), "score": 0.9}]
    poly_rle = [{"image_id": 1, "category_id": 1, "score": 0.9,
                 "segmentation": mask_utils.merge(mask_utils.frPyObjects(sq(11, 10, 20), 60, 80))}]
    assert evaluate_coco(aset, poly, iou_type="segm")[0] == evaluate_coco(aset, poly_rle, iou_type="segm")[0]


def test_empty_results(tmp_path):
    aset = make_set(HANDMADE_GT, tmp_path)
    metrics, raw = evaluate_coco(aset, [])
    # what pycocotools gives for a results list with no detection of any evaluated category
    ev = reference(HANDMADE_GT, [det(1, 99, [0, 0, 5, 5], 0.5)])
    assert_stats_equal(metrics, ev)
    assert [metrics[f"bbox/{n}"] for n in METRIC_NAMES] == [0.0] * 12  # every area range has ground truth here
    assert metrics["bbox/AP/cat"] == 0.0 and metrics["bbox/AP/dog"] == 0.0 and math.isnan(metrics["bbox/AP/bird"])
    assert raw["precision"].shape == (10, 101, 3, 4, 3)
    # an area range without ground truth is -1, as pycocotools reports it
    only_large = {**HANDMADE_GT, "annotations": [gt_ann(1, 2, 1, [0, 0, 150, 150])]}
    small, _ = evaluate_coco(make_set(only_large, tmp_path), [])
    assert small["bbox/AP"] == 0.0 and small["bbox/APs"] == -1.0 and small["bbox/ARm"] == -1.0
    assert_stats_equal(small, reference(only_large, [det(1, 99, [0, 0, 5, 5], 0.5)]))


def test_more_than_100_detections_on_one_image(tmp_path):
    boxes = [[25 * c, 25 * r, 20, 20] for r in range(10) for c in range(12)]  # 120 objects
    gt = {"images": [{"id": 1, "width": 300, "height": 250}], "categories": [{"id": 1, "name": "dot"}],
          "annotations": [gt_ann(i + 1, 1, 1, b) for i, b in enumerate(boxes)]}
    fps = [det(1, 1, [25 * c + 10, 25 * r + 10, 12, 12], 0.99 - 0.001 * (r * 12 + c))
           for r in range(3) for c in range(10)]
    tps = [det(1, 1, b, 0.9 - 0.001 * i) for i, b in enumerate(boxes)]
    dets = fps + tps  # 150: the 30 false positives score highest, so only 70 hits make the top 100
    metrics, _ = evaluate_coco(make_set(gt, tmp_path), dets)
    assert_stats_equal(metrics, reference(gt, dets))
    assert metrics["bbox/AR100"] == pytest.approx(70 / 120, abs=1e-12)
    assert metrics["bbox/AR10"] == 0.0 and metrics["bbox/AR1"] == 0.0


def test_results_for_unknown_images_are_an_error(tmp_path):
    with pytest.raises(DataError, match="image_id 42"):
        evaluate_coco(make_set(HANDMADE_GT, tmp_path), [det(42, 1, [0, 0, 5, 5], 0.5)])
    with pytest.raises(DataError, match="no score"):
        results_from_instances([Instance(1, 1, 1, (0, 0, 5, 5))])
