"""Label Studio JSON (full export and JSON-MIN) <-> `AnnotationSet`: real exports, brush RLE, round trips, errors."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.formats.labelstudio import (brush_decode, brush_encode, brush_to_mask, labelstudio_config,
                                               mask_to_brush, read_labelstudio, write_labelstudio)
from visiontl.data.formats.rotation import corners, envelope
from visiontl.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "datasets" / "format_samples" / "label_studio"


def _samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"real Label Studio exports {SAMPLES} are absent (the shared datasets sit beside the repository)")
    return SAMPLES


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _png(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def _rect(rid: str, x, y, w, h, label="cat", ow=200, oh=100, rotation=0, **extra) -> dict:
    return {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": ow,
            "original_height": oh, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
            **extra}


def _mask(rle: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


# --- real exports (label-studio-converter test data) ------------------------------------------------------


def test_real_rectangles_latest_annotation_and_config_order() -> None:
    root = _samples() / "test_export_yolo"
    aset = read_labelstudio(root / "data.json", label_config=root / "label_config.xml")
    assert [(c.id, c.name) for c in aset.categories] == [(1, "parasites"), (2, "white")]
    assert [(i.file_name, i.width, i.height) for i in aset.images] == [("image1", 2800, 2800), ("image2", 2800, 2800)]
    assert aset.images[0].attributes == {"url": "/image1", "task_id": 1, "annotation_id": 2}
    # Task 1 has two annotations: the later one (id 2, created 13:37) is read, the earlier one is counted.
    assert [i.attributes["result_id"] for i in aset.instances] == \
        ["ipBS_GBGZp", "QtdGMXo-M0", "1o3pxwJAxl", "-GoXZ7Oj8k"]
    first = aset.instances[0]
    assert first.category_id == 1 and first.image_id == 1
    assert first.bbox == pytest.approx((37.88706739526412 * 28, 71.76684881602914 * 28,
                                        3.8251366120218573 * 28, 4.553734061930784 * 28), rel=1e-12)
    assert first.bbox[0] == pytest.approx(1060.8378870673953)
    assert len(aset.report.dropped) == 1 and "1 earlier annotation(s) of a task not read" in aset.report.dropped[0]
    assert "task 1" in aset.report.dropped[0]


def test_real_oriented_boxes_give_the_rotated_box_and_its_envelope() -> None:
    root = _samples() / "test_export_yolo"
    aset = read_labelstudio(root / "data_obb.json", label_config=root / "label_config_obb.xml")
    # The config says "butterfly"; two tasks say "Butterfly" (labels are case-sensitive): appended after.
    assert [(c.id, c.name) for c in aset.categories] == [(1, "butterfly"), (2, "Butterfly")]
    assert [(i.width, i.height) for i in aset.images] == [(597, 768), (433, 768), (716, 768)]
    assert len(aset.instances) == 25 and aset.category_counts() == {1: 1, 2: 24}
    assert not aset.report.dropped
    inst = aset.instances[0]
    x, y, w, h = (10.537066764905694 * 5.97, 79.55767690059092 * 7.68, 19.045470024656687 * 5.97,
                  8.132522043893882 * 7.68)
    # Corners as label-studio-converter's YOLO-OBB export computes them (rotation about the top-left corner).
    t = math.radians(328.33240366032834)
    cx = [x, x + w * math.cos(t), x + w * math.cos(t) - h * math.sin(t), x - h * math.sin(t)]
    cy = [y, y + w * math.sin(t), y + w * math.sin(t) + h * math.cos(t), y + h * math.cos(t)]
    rb = inst.attributes["rotated_box"]
    assert set(inst.attributes) == {"result_id", "rotated_box"}
    assert rb[2:] == pytest.approx([w, h, 328.33240366032834 - 360], rel=1e-12)  # angle in (-180, 180]
    assert rb[:2] == pytest.approx([sum(cx) / 4, sum(cy) / 4], rel=1e-12)  # the centre
    assert corners(tuple(rb)) == [pytest.approx(p, rel=1e-12) for p in zip(cx, cy)]
    assert inst.bbox == pytest.approx((min(cx), min(cy), max(cx) - min(cx), max(cy) - min(cy)), rel=1e-12)
    assert inst.bbox == envelope(tuple(rb))
    assert inst.bbox[1] < y  # rotated counter-clockwise on screen: the far corner rises above the pivot


def test_real_polygons() -> None:
    root = _samples() / "test_export_yolo"
    aset = read_labelstudio(root / "data_polygons.json", label_config=root / "label_config_polygons.xml")
    assert [(c.id, c.name) for c in aset.categories] == [(1, "Airplane"), (2, "Car")]
    assert [(i.file_name, i.width, i.height) for i in aset.images] == [("image2", 640, 426)]
    (inst,) = aset.instances
    poly = inst.segmentation[0]
    assert len(poly) == 37 * 2
    assert poly[:2] == pytest.approx([60 * 6.4, 19.55922865013774 * 4.26], rel=1e-12)
    assert inst.bbox == pytest.approx((384.0, 14.876037504577349 * 4.26, (90.45871559633028 - 60) * 6.4,
                                       (83.7465564738292 - 14.876037504577349) * 4.26), rel=1e-9)


def test_real_upload_url_and_polygon() -> None:
    root = _samples() / "test_export_json_min"
    aset = read_labelstudio(root / "data.json", label_config=root / "label_config.xml")
    (img,) = aset.images
    assert (img.file_name, img.width, img.height) == ("example.png", 128, 128)
    assert img.attributes["url"] == "/data/upload/29/example.png"
    (inst,) = aset.instances
    assert inst.segmentation == [pytest.approx([44.44444444444444 * 1.28, 48.25396825396825 * 1.28,
                                                42.53968253968254 * 1.28, 60.317460317460316 * 1.28,
                                                56.19047619047619 * 1.28, 50.79365079365079 * 1.28], rel=1e-12)]


def test_real_repeater_task_with_a_taxonomy() -> None:
    root = _samples() / "test_export_json_min"
    aset = read_labelstudio(root / "data_repeater.json", label_config=root / "label_config_repeater.json")
    assert [c.name for c in aset.categories] == ["Document Title", "Document Date"]
    (img,) = aset.images  # only page 0 has results
    assert (img.file_name, img.width, img.height) == ("example1.jpeg", 1280, 720)
    assert img.attributes["url"] == "https://example.org/example1.jpeg"
    (inst,) = aset.instances
    assert inst.bbox == pytest.approx((19.466292134831463 * 12.8, 53.70786516853933 * 7.2,
                                       20.35112359550562 * 12.8, 20.224719101123597 * 7.2), rel=1e-12)
    assert len(aset.report.dropped) == 1 and "1 taxonomy result(s) not held" in aset.report.dropped[0]
    assert read_labelstudio(root / "data_repeater.json").categories == [Category(1, "Document Title")]


def test_real_brush_mask_from_test_png(tmp_path: Path) -> None:
    """test.png is label-studio-converter's brush fixture: `image2annotation` thresholds its grey values at
    128 into a mask and imports it as a brush prediction (RGBA repeated, 255). The same task reads back as
    that mask, pixel for pixel."""
    with Image.open(_samples() / "test_brush" / "test.png") as im:
        expected = np.asarray(im.convert("L")) > 128
    h, w = expected.shape
    result = {"id": "b1", "type": "brushlabels", "from_name": "tag", "to_name": "image", "origin": "manual",
              "image_rotation": 0, "original_width": w, "original_height": h,
              "value": {"rle": mask_to_brush(expected), "format": "rle", "brushlabels": ["Airplane"]}}
    task = {"data": {"image": "https://labelstud.io/images/test.jpg"},
            "predictions": [{"result": [result], "model_version": "v1", "score": 0.5}]}
    aset = read_labelstudio(_json(tmp_path / "task.json", [task]))
    (inst,) = aset.instances
    assert inst.segmentation["size"] == [h, w] and isinstance(inst.segmentation["counts"], str)
    decoded = _mask(inst.segmentation)
    assert decoded.shape == expected.shape and (decoded == expected).all()
    assert inst.score == 0.5 and aset.images[0].attributes["model_version"] == "v1"
    assert inst.bbox == tuple(float(v) for v in mask_utils.toBbox(inst.segmentation))
    assert "read from their latest prediction" in aset.report.dropped[0]


def test_real_obb_round_trip(tmp_path: Path) -> None:
    root = _samples() / "test_export_yolo"
    first = read_labelstudio(root / "data_obb.json", label_config=root / "label_config_obb.xml")
    report = write_labelstudio(first, tmp_path / "out.json", image_prefix="/")
    assert report.boxes == 25 and not report.lost
    again = read_labelstudio(tmp_path / "out.json", label_config=root / "label_config_obb.xml")
    for a, b in zip(first.instances, again.instances, strict=True):
        assert b.bbox == pytest.approx(a.bbox, rel=1e-9)
        assert b.attributes["result_id"] == a.attributes["result_id"]
        assert b.attributes["rotated_box"] == pytest.approx(a.attributes["rotated_box"], rel=1e-9, abs=1e-9)
        assert b.category_id == a.category_id


# --- the brush RLE ----------------------------------------------------------------------------------------


def test_brush_codec_matches_the_converter_test_vector() -> None:
    values = [1, 1, 1, 1, 2, 3, 5, 6, 7, 8, 4, 4, 4, 4, 4, 4, 4, 4]
    packed = [0, 0, 0, 18, 57, 27, 252, 96, 32, 1, 0, 6, 0, 40, 0, 192, 3, 128, 17, 56, 32]  # encode_rle's test
    assert brush_encode(values) == packed
    assert brush_decode(packed).tolist() == values


def test_brush_decode_literal_runs_word_size_and_field_sizes() -> None:
    """A stream built by hand from the format: 6 values, word size 4, run-length fields 2/3/1/5 bits; a literal
    run of three values, then a repeat run of three (what the editor's rle-pack writes, unlike the converter)."""
    bits = (f"{6:032b}" + f"{4 - 1:05b}" + "0001" + "0010" + "0000" + "0100"
            + "0" + "00" + "10" + "0001" + "0010" + "0011"  # literal, field 0 (2 bits): length 3, values 1 2 3
            + "1" + "01" + "010" + "1001")  # repeat, field 1 (3 bits): length 3, value 9
    bits += "0" * (-len(bits) % 8)
    stream = list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    assert brush_decode(stream).tolist() == [1, 2, 3, 9, 9, 9]
    with pytest.raises(ValueError, match="ends after"):
        brush_decode(stream[:-2])
    with pytest.raises(ValueError, match="not width x height x 4"):
        brush_decode(stream, expected=8)


def test_brush_mask_is_the_alpha_channel_and_round_trips() -> None:
    rgba = [255, 0, 0, 0, 0, 0, 0, 128]  # red but transparent, then black but opaque
    assert brush_to_mask(brush_encode(rgba), 1, 2).tolist() == [[False, True]]
    rng = np.random.default_rng(0)
    for mask in (rng.random((37, 53)) > 0.5, np.ones((300, 300), bool), np.zeros((5, 7), bool)):
        assert (brush_to_mask(mask_to_brush(mask), *mask.shape) == mask).all()  # runs > 65536 values included


# --- generated round trips --------------------------------------------------------------------------------


def _generated() -> AnnotationSet:
    rng = np.random.default_rng(1)
    mask = np.zeros((60, 90), bool)
    mask[10:30, 20:50] = True
    mask[35:50, 5:12] = rng.random((15, 7)) > 0.3
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle = {"size": [60, 90], "counts": rle["counts"].decode()}
    box = tuple(float(v) for v in mask_utils.toBbox(rle))
    rot = (42.8125, 25.875, 25.125, 10.75, 33.5)  # cx, cy, w, h, angle
    poly = [3.3, 4.4, 40.1, 5.5, 38.0, 30.7, 6.25, 28.0]
    images = [ImageRecord(1, "a.jpg", 90, 60, {"subset": "train"}), ImageRecord(2, "sub/b.png", 123, 77),
              ImageRecord(3, "empty.png", 16, 12)]
    instances = [
        Instance(1, 1, 2, (1.5, 2.25, 30.125, 17.0)),
        Instance(2, 1, 1, envelope(rot), attributes={"rotated_box": list(rot)}),
        Instance(3, 1, 3, (3.3, 4.4, 36.8, 26.3), segmentation=[poly]),
        Instance(4, 1, 3, box, segmentation=rle),
        Instance(5, 2, 2, (0.0, 0.0, 123.0, 77.0)),
    ]
    cats = [Category(1, "cat"), Category(2, "dog"), Category(3, "car")]
    return AnnotationSet(cats, images, instances, Path("."))


def test_round_trip_boxes_rotated_boxes_polygons_masks(tmp_path: Path) -> None:
    aset = _generated()
    _png(tmp_path / "img" / "empty.png", (16, 12))
    controls = {"rectanglelabels": "label", "polygonlabels": "poly", "brushlabels": "mask"}
    report = write_labelstudio(aset, tmp_path / "tasks.json", from_name=controls)
    assert (report.images, report.boxes, report.polygons, report.masks, report.lost) == (3, 3, 1, 1, [])
    config = tmp_path / "config.xml"
    config.write_text(labelstudio_config(aset, from_name=controls))
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert tasks[0]["data"] == {"image": "/data/local-files/?d=a.jpg", "subset": "train"}
    assert tasks[2]["annotations"] == [{"result": []}]
    results = [r for t in tasks for r in t["annotations"][0]["result"]]
    assert len({r["id"] for r in results}) == len(results) == 5
    assert all(r["image_rotation"] == 0 and r["to_name"] == "image" for r in results)
    assert [r["from_name"] for r in results] == ["label", "label", "poly", "mask", "label"]
    r = results[0]
    assert (r["type"], r["original_width"], r["original_height"]) == ("rectanglelabels", 90, 60)
    assert [r["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx(
        [1.5 / 90 * 100, 2.25 / 60 * 100, 30.125 / 90 * 100, 17 / 60 * 100], rel=1e-6)
    # Label Studio's form: the pivot (top-left) corner of the unrotated rectangle, then the rotation about it.
    assert results[1]["value"]["rotation"] == 33.5
    pivot = corners((42.8125, 25.875, 25.125, 10.75, 33.5))[0]
    assert [results[1]["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx(
        [pivot[0] / 90 * 100, pivot[1] / 60 * 100, 25.125 / 90 * 100, 10.75 / 60 * 100], rel=1e-12)
    assert results[2]["value"]["points"][1] == pytest.approx([40.1 / 90 * 100, 5.5 / 60 * 100], rel=1e-6)
    assert results[3]["type"] == "brushlabels" and results[3]["value"]["format"] == "rle"

    back = read_labelstudio(tmp_path / "tasks.json", image_root=tmp_path / "img", label_config=config)
    assert not back.report.dropped and back.report.clipped == 0
    assert back.categories == aset.categories
    assert [(i.id, i.file_name, i.width, i.height) for i in back.images] == \
        [(i.id, i.file_name, i.width, i.height) for i in aset.images]
    assert back.images[0].attributes == {"url": "/data/local-files/?d=a.jpg", "subset": "train"}
    assert len(back.instances) == len(aset.instances)
    for a, b in zip(aset.instances, back.instances):
        assert (b.id, b.image_id, b.category_id) == (a.id, a.image_id, a.category_id)
        assert b.bbox == pytest.approx(a.bbox, rel=1e-6, abs=1e-9)
        assert b.attributes.keys() - {"result_id"} == a.attributes.keys()
        for key, value in a.attributes.items():
            assert b.attributes[key] == pytest.approx(value, rel=1e-6)
    assert back.instances[2].segmentation[0] == pytest.approx(aset.instances[2].segmentation[0], rel=1e-6)
    assert (_mask(back.instances[3].segmentation) == _mask(aset.instances[3].segmentation)).all()


def test_predictions_output(tmp_path: Path) -> None:
    aset = _generated()
    for inst, score in zip(aset.instances, (0.9, 0.8, 0.7, 0.6, 0.5)):
        inst.score = score
    report = write_labelstudio(aset, tmp_path / "pred.json", as_predictions=True, model_version="resnet-v2",
                               image_prefix="/data/upload/7/")
    assert not report.lost
    tasks = json.loads((tmp_path / "pred.json").read_text())
    assert all("annotations" not in t for t in tasks)
    first, second, empty = (t["predictions"] for t in tasks)
    assert first[0]["model_version"] == "resnet-v2" and first[0]["score"] == pytest.approx(0.75)
    assert [r["score"] for r in first[0]["result"]] == [0.9, 0.8, 0.7, 0.6]
    assert second[0]["score"] == pytest.approx(0.5) and empty[0]["result"] == [] and "score" not in empty[0]
    assert tasks[1]["data"]["image"] == "/data/upload/7/sub/b.png"
    _png(tmp_path / "empty.png", (16, 12))
    back = read_labelstudio(tmp_path / "pred.json")
    assert [i.score for i in back.instances] == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert back.images[1].file_name == "b.png"  # an upload URL: the base name (no sub/b.png under the root)


def test_writer_names_what_label_studio_cannot_hold(tmp_path: Path) -> None:
    aset = AnnotationSet(
        [Category(0, "cat"), Category(5, "dog")],
        [ImageRecord(1, "a.jpg", 50, 40)],
        [Instance(1, 1, 0, (1, 1, 5, 5), iscrowd=True, score=0.3, attributes={"difficult": 1}),
         Instance(2, 1, 0, (1, 1, 30, 20), segmentation=[[1, 1, 10, 1, 10, 10], [20, 20, 30, 20, 30, 30]]),
         Instance(3, 1, 0, (1, 1, 5, 5), attributes={"rotated_box": [0.5, 0.5, 1, 1, 10]}),
         Instance(4, 1, 0, (1, 1, 5, 5), attributes={"rotation": 10, "unrotated_box": [1, 1, 5, 5]})],
        Path("."))
    report = write_labelstudio(aset, tmp_path / "t.json")
    lost = "\n".join(report.lost)
    assert "category ids" in lost and "dog" not in lost  # the empty category is in the config beside
    assert '<Label value="dog"/>' in (tmp_path / "label_config.xml").read_text()
    assert "a.jpg: annotation 1: score 0.3" in lost and "a.jpg: annotation 1: iscrowd" in lost
    assert "a.jpg: annotation 1: attributes difficult" in lost
    assert "a.jpg: annotation 2: 2 polygons written as 2 separate regions" in lost
    # A rotated box that no longer has the box as its envelope: the box, unrotated, and a lost line.
    assert ("a.jpg: annotation 3: rotated_box [0.5, 0.5, 1, 1, 10]: its envelope [-0.08, -0.08, 1.16, 1.16] is not the "
            "box [1.0, 1.0, 5.0, 5.0]; the box is written unrotated") in report.lost
    # The old attribute names are plain attributes now.
    assert "a.jpg: annotation 4: attributes rotation, unrotated_box" in report.lost
    results = json.loads((tmp_path / "t.json").read_text())[0]["annotations"][0]["result"]
    assert [r["id"] for r in results] == ["vtl1", "vtl2", "vtl2_2", "vtl3", "vtl4"]
    report = write_labelstudio(aset, tmp_path / "t2.json", label_config=None)
    assert "category 5 'dog': has no annotations, so no result names it (and no label config is written)" in report.lost
    assert results[3]["value"]["rotation"] == 0 and results[3]["value"]["x"] == 2.0


# --- reading rules ----------------------------------------------------------------------------------------


def test_annotation_choice_cancelled_and_unlabelled_tasks(tmp_path: Path) -> None:
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/1/a.jpg"}, "annotations": [
            {"id": 10, "created_at": "2024-01-02T00:00:00Z", "result": [_rect("r1", 10, 10, 10, 10, "new")]},
            {"id": 11, "created_at": "2024-01-01T00:00:00Z", "result": [_rect("r2", 10, 10, 10, 10, "old")]},
            {"id": 12, "created_at": "2024-01-03T00:00:00Z", "was_cancelled": True, "result": []}]},
        {"id": 2, "data": {"image": "/data/upload/1/b.jpg"}, "annotations": [{"was_cancelled": True, "result": []}]},
        {"id": 3, "data": {"image": "/data/upload/1/c.jpg"}},
    ]
    aset = read_labelstudio(_json(tmp_path / "t.json", tasks))
    assert [c.name for c in aset.categories] == ["new"]
    assert [i.file_name for i in aset.images] == ["a.jpg"] and aset.images[0].attributes["annotation_id"] == 10
    dropped = "\n".join(aset.report.dropped)
    assert "1 earlier annotation(s) of a task not read" in dropped
    assert "1 task(s) not read (cancelled) (task 2)" in dropped
    assert "1 task(s) not read (no annotation nor prediction) (task 3)" in dropped


def test_results_not_held_are_counted(tmp_path: Path) -> None:
    kp = {"id": "k", "type": "keypointlabels", "to_name": "image", "original_width": 200, "original_height": 100,
          "value": {"x": 1, "y": 2, "keypointlabels": ["nose"]}}
    choice = {"id": "c", "type": "choices", "to_name": "image", "value": {"choices": ["day"]}}
    rel = {"type": "relation", "from_id": "r1", "to_id": "k", "direction": "right"}
    labels = [_rect("r1", 10, 10, 20, 20, "a"), _rect("r2", 1, 1, 2, 2, "b")]
    labels[1]["value"]["rectanglelabels"] = ["b", "c"]
    tasks = [{"id": 4, "data": {"image": "x.jpg"}, "annotations": [{"result": labels + [kp, kp, choice, rel]}]},
             {"id": 5, "data": {"image": "y.jpg"}, "annotations": [{"result": [kp]}]}]  # no image file needed
    aset = read_labelstudio(_json(tmp_path / "t.json", tasks))
    assert [c.name for c in aset.categories] == ["a", "b"] and len(aset.instances) == 2
    assert [(i.file_name, i.width, i.height) for i in aset.images] == [("x.jpg", 200, 100), ("y.jpg", 200, 100)]
    dropped = "\n".join(aset.report.dropped)
    assert "3 keypointlabels result(s) not held (dropped) (task 4, result 'k'; task 4, result 'k'; task 5, " \
           "result 'k')" in dropped
    assert "1 choices result(s) not held" in dropped and "1 relation result(s) not held" in dropped
    assert "1 result(s) with several labels: only the first is kept (task 4, result 'r2')" in dropped


def test_json_min_records(tmp_path: Path) -> None:
    brush = mask_to_brush(np.pad(np.ones((4, 6), bool), ((1, 5), (2, 2))))
    records = [
        {"image": "/data/local-files/?d=photos/p%201.jpg", "id": 5, "annotator": 1, "annotation_id": 9,
         "created_at": "2024-05-01", "lead_time": 3.2, "weather": "rain",
         "label": [{"x": 50, "y": 25, "width": 10, "height": 20, "rotation": 0, "rectanglelabels": ["car"],
                    "original_width": 10, "original_height": 10},
                   {"points": [[0, 0], [50, 0], [50, 50]], "polygonlabels": ["road"], "original_width": 10,
                    "original_height": 10},
                   {"format": "rle", "rle": brush, "brushlabels": ["car"], "original_width": 10,
                    "original_height": 10},
                   {"x": 5, "y": 5, "keypointlabels": ["nose"], "original_width": 10, "original_height": 10}],
         "daytime": "night"},
        {"image": "/data/local-files/?d=photos/p%201.jpg", "id": 5, "created_at": "2024-04-01",
         "label": [{"x": 1, "y": 1, "width": 1, "height": 1, "rectanglelabels": ["old"], "original_width": 10,
                    "original_height": 10}]},
    ]
    config = tmp_path / "config.xml"
    config.write_text('<View><Image name="img" value="$image"/><Choices name="daytime" toName="img">'
                      '<Choice value="night"/></Choices><RectangleLabels name="label" toName="img">'
                      '<Label value="road"/><Label value="vehicle" alias="car"/></RectangleLabels></View>')
    aset = read_labelstudio(_json(tmp_path / "min.json", records), label_config=config)
    assert [(c.id, c.name) for c in aset.categories] == [(1, "road"), (2, "vehicle")]
    (img,) = aset.images
    assert (img.file_name, img.width, img.height) == ("photos/p 1.jpg", 10, 10)
    assert img.attributes == {"url": "/data/local-files/?d=photos/p%201.jpg", "task_id": 5, "annotation_id": 9,
                              "weather": "rain"}
    assert [i.category_id for i in aset.instances] == [2, 1, 2]
    assert aset.instances[0].bbox == pytest.approx((5.0, 2.5, 1.0, 2.0))
    assert aset.instances[2].bbox == (2.0, 1.0, 6.0, 4.0)
    dropped = "\n".join(aset.report.dropped)
    assert "keypointlabels result(s) not held (dropped) (task 5, label #4)" in dropped
    assert "choices result(s) not held (dropped) (task 5, daytime #1)" in dropped
    assert "earlier annotation(s) of a task not read" in dropped


def test_file_names_from_urls(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _png(root / "x.jpg", (8, 6))
    _png(root / "dir" / "y.jpg", (8, 6))
    urls = {
        "/data/upload/3/abcd1234-x.jpg": "x.jpg",  # the upload prefix dropped because x.jpg is there
        "/data/local-files/?d=home/me/dir/y.jpg": "dir/y.jpg",  # the longest tail that exists
        "s3://bucket/dir/y.jpg": "dir/y.jpg",
        "https://host.org/a/b%20c.jpg?sig=1": "b c.jpg",  # not under the root: the base name
        "gs://bucket/deep/z.png": "z.png",
        "C:\\data\\x.jpg": "x.jpg",
    }
    tasks = [{"id": k, "data": {"image": url}, "annotations": [{"result": [_rect(f"r{k}", 1, 1, 5, 5)]}]}
             for k, url in enumerate(urls)]
    aset = read_labelstudio(_json(tmp_path / "t.json", tasks), image_root=root)
    assert [i.file_name for i in aset.images] == list(urls.values())
    assert [i.attributes["url"] for i in aset.images] == list(urls)
    assert aset.image_root == root


def test_size_from_the_image_or_an_error(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (40, 30))
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [{"result": []}]}]
    aset = read_labelstudio(_json(tmp_path / "t.json", tasks))
    assert [(i.width, i.height) for i in aset.images] == [(40, 30)] and not aset.instances
    tasks[0]["data"]["image"] = "/data/upload/1/missing.png"
    with pytest.raises(DataError) as err:
        read_labelstudio(_json(tmp_path / "t.json", tasks))
    assert str(err.value) == (f"{tmp_path / 't.json'}: task 1: no original_width/original_height in its results "
                              f"and the image missing.png is not found under {tmp_path}")


def test_label_config_written_beside_keeps_category_ids_order_and_empty_ones(tmp_path: Path) -> None:
    """The writer writes label_config.xml beside the tasks (one control per result type, every category in id
    order); the reader finds it there: categories read back with their ids, in their order, empty ones kept."""
    from visiontl.data.formats.labelstudio import parse_label_config

    aset = _generated()  # results name dog (2) first, then cat (1), then car (3)
    aset.categories.append(Category(4, 'bus & <"tram">'))  # no result names it; XML's special characters
    _png(tmp_path / "img" / "empty.png", (16, 12))
    report = write_labelstudio(aset, tmp_path / "tasks.json")
    assert not report.lost
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    results = [r for t in tasks for r in t["annotations"][0]["result"]]
    kinds = {"rectanglelabels": "label", "polygonlabels": "polygon", "brushlabels": "brush"}
    assert {(r["type"], r["from_name"], r["to_name"]) for r in results} == {(k, n, "image") for k, n in kinds.items()}
    # the one parser (the reader's, serve's, predict --label-config's) reads its controls, objects and labels
    parsed = parse_label_config((tmp_path / "label_config.xml").read_text())
    assert parsed.controls == kinds and set(parsed.to_names.values()) == {"image"} and parsed.images == {"image": "image"}
    assert all(labels == ["cat", "dog", "car", 'bus & <"tram">'] for labels in parsed.labels.values())

    back = read_labelstudio(tmp_path / "tasks.json", image_root=tmp_path / "img")
    assert back.categories == aset.categories
    assert [i.category_id for i in back.instances] == [i.category_id for i in aset.instances]
    # Without it: the labels in order of first appearance, the empty one gone.
    (tmp_path / "label_config.xml").rename(tmp_path / "kept.xml")
    bare = read_labelstudio(tmp_path / "tasks.json", image_root=tmp_path / "img")
    assert [(c.id, c.name) for c in bare.categories] == [(1, "dog"), (2, "cat"), (3, "car")]
    # A config beside that does not name every label the tasks use is another export's: not used.
    (tmp_path / "label_config.xml").write_text('<View><Image name="image" value="$image"/><RectangleLabels '
                                               'name="label" toName="image"><Label value="car"/><Label value="x"/>'
                                               '</RectangleLabels></View>')
    assert read_labelstudio(tmp_path / "tasks.json", image_root=tmp_path / "img").categories == bare.categories
    # Given explicitly, it is used whatever it names (labels it lacks follow its own).
    given = read_labelstudio(tmp_path / "tasks.json", tmp_path / "img", label_config=tmp_path / "label_config.xml")
    assert [c.name for c in given.categories] == ["car", "x", "dog", "cat"]


def test_label_config_through_the_registry(tmp_path: Path) -> None:
    """data convert --to labelstudio writes DIR/tasks.json and DIR/label_config.xml; reading DIR/tasks.json
    back (check, convert, training) keeps the categories."""
    from visiontl.data.formats.registry import read_dataset, read_split, write_dataset

    aset = AnnotationSet([Category(1, "b"), Category(2, "a"), Category(3, "never")],
                         [ImageRecord(1, "x.png", 20, 10)], [Instance(1, 1, 2, (1, 1, 5, 5))], tmp_path)
    write_dataset(aset, "labelstudio", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["label_config.xml", "tasks.json"]
    expected = [Category(1, "b"), Category(2, "a"), Category(3, "never")]
    assert read_dataset("labelstudio", tmp_path / "out" / "tasks.json").categories == expected
    assert read_split("labelstudio", tmp_path / "out", "tasks.json").categories == expected


def test_labelstudio_config_with_a_name_xml_cannot_hold(tmp_path: Path) -> None:
    aset = AnnotationSet([Category(1, "a\x01b")], [ImageRecord(1, "x.png", 20, 10)], [], tmp_path)
    report = write_labelstudio(aset, tmp_path / "tasks.json")
    assert not (tmp_path / "label_config.xml").exists()
    assert report.lost == ["label_config.xml: not written (category 1 'a\\x01b': its name holds characters no XML "
                           "file can hold)",
                           "category 1 'a\\x01b': has no annotations, so no result names it (and no label config is "
                           "written)"]


def test_labelstudio_config_needs_one_control_per_shape() -> None:
    aset = _generated()
    with pytest.raises(ValueError, match="one control name per result type"):
        labelstudio_config(aset, from_name="label")
    with pytest.raises(ValueError, match="one control name per result type"):
        write_labelstudio(aset, Path("unwritten.json"), from_name="label")
    xml = labelstudio_config(AnnotationSet([Category(2, 'a "b"')], [], [], Path(".")), to_name="img")
    assert '<Label value=\'a "b"\'/>' in xml and '<Image name="img" value="$image"/>' in xml


# --- errors: one line naming the file and the task / result ------------------------------------------------


@pytest.mark.parametrize("content, message", [
    ("[{", "not valid JSON (Expecting property name enclosed in double quotes at line 1 column 3)"),
    ('{"a": 1}', "not a Label Studio export (the top level is not a list of tasks)"),
    ("[]", "no tasks"),
])
def test_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_labelstudio(path)
    assert str(err.value) == f"{path}: {message}"


def _bad(tmp_path: Path, result: dict) -> str:
    tasks = [{"id": 7, "data": {"image": "a.jpg"}, "annotations": [{"result": [result]}]}]
    with pytest.raises(DataError) as err:
        read_labelstudio(_json(tmp_path / "t.json", tasks))
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{tmp_path / 't.json'}: task 7, result 'r'")
    return text.split(": ", 2)[2]


def test_result_errors(tmp_path: Path) -> None:
    assert _bad(tmp_path, {**_rect("r", 1, 1, 1, 1), "type": "cube"}) == "unknown result type 'cube'"
    assert _bad(tmp_path, _rect("r", "12%", 1, 1, 1)) == "'x' '12%' is not a finite number (percent)"
    assert _bad(tmp_path, _rect("r", 1, None, 1, 1)) == "'y' None is not a finite number (percent)"
    assert _bad(tmp_path, _rect("r", 1, 1, 1, 1, rotation="a")) == "rotation 'a' is not a finite number"
    assert _bad(tmp_path, _rect("r", 1, 1, 1, 1, ow=0)) == "original_width 0 is not a positive integer"
    poly = {"id": "r", "type": "polygonlabels", "to_name": "image", "original_width": 10, "original_height": 10,
            "value": {"points": [[1, 1], [2, "x"], [3, 3]], "polygonlabels": ["a"]}}
    assert _bad(tmp_path, poly) == "point [2, 'x'] is not two finite numbers (percent)"
    brush = {"id": "r", "type": "brushlabels", "to_name": "image", "original_width": 10, "original_height": 10,
             "value": {"rle": mask_to_brush(np.ones((3, 3), bool)), "format": "rle", "brushlabels": ["a"]}}
    assert _bad(tmp_path, brush) == "cannot decode the brush RLE (it holds 36 values, not width x height x 4 = 400)"


def test_label_config_errors(tmp_path: Path) -> None:
    tasks = _json(tmp_path / "t.json", [{"data": {"image": "a.jpg"}, "annotations": [{"result": []}]}])
    config = tmp_path / "c.xml"
    config.write_text("<View><Image></View>")
    with pytest.raises(DataError, match=r"c\.xml: not valid XML \(mismatched tag"):
        read_labelstudio(tasks, label_config=config)
    with pytest.raises(DataError, match=r"missing\.xml: label config not found"):
        read_labelstudio(tasks, label_config=tmp_path / "missing.xml")


# --- the public Label Studio API: one label-config parser, one result conversion --------------------------


def test_one_parser_reads_a_config_as_xml_and_as_json() -> None:
    """The XML config and the parsed JSON config Label Studio's API returns give the same LabelConfig: the
    first control of each result type (name, object, labels) for predictions, every label in order, aliases
    and every control's type for the reader."""
    from visiontl.data.formats.labelstudio import LabelConfig, parse_label_config

    xml = ('<View><Image name="img" value="$photo"/><Image name="thumb" value="static.png"/>'
           '<RectangleLabels name="bbox" toName="img"><Label value="cat" alias="c"/><Label value="dog"/>'
           '</RectangleLabels><RectangleLabels name="second" toName="img"><Label value="bird"/></RectangleLabels>'
           '<PolygonLabels name="poly" toName="img"><Label value="dog"/><Label value="car"/></PolygonLabels>'
           '<Choices name="quality" toName="img"><Choice value="ok"/></Choices></View>')
    config = parse_label_config(xml)
    assert config == LabelConfig(
        controls={"rectanglelabels": "bbox", "polygonlabels": "poly"},
        to_names={"rectanglelabels": "img", "polygonlabels": "img"},
        images={"img": "photo", "thumb": None},
        labels={"rectanglelabels": ["cat", "dog"], "polygonlabels": ["dog", "car"]},
        label_order=["cat", "dog", "bird", "car"], aliases={"c": "cat"},
        control_types={"bbox": "rectanglelabels", "second": "rectanglelabels", "poly": "polygonlabels",
                       "quality": "choices"})
    assert config.image_keys == {"img": "photo"} and config.image_key("polygonlabels") == "photo"
    assert config.from_names() == {"rectanglelabels": "bbox", "polygonlabels": "poly", "brushlabels": "brush"}
    assert config.needed() == LabelConfig(config.controls, config.to_names, {"img": "photo"})

    parsed = {"bbox": {"type": "RectangleLabels", "to_name": ["img"], "inputs": [{"type": "Image", "value": "photo"}],
                       "labels": ["cat", "dog"]},
              "poly": {"type": "PolygonLabels", "to_name": ["img"], "inputs": [{"type": "Image", "value": "photo"}],
                       "labels": ["dog", "car"]}}
    from_json = parse_label_config(json.dumps(parsed))
    assert (from_json.controls, from_json.to_names, from_json.images, from_json.labels, from_json.label_order) == (
        config.controls, config.to_names, {"img": "photo"}, config.labels, ["cat", "dog", "car"])


def test_a_config_to_put_predictions_in_needs_a_shape_control(tmp_path: Path) -> None:
    from visiontl.data.formats.labelstudio import parse_label_config, read_label_config

    text = '<View><Image name="i" value="$image"/><Labels name="l" toName="i"><Label value="a"/></Labels></View>'
    config = parse_label_config(text)  # the reader reads `labels` results with it
    assert config.controls == {} and config.label_order == ["a"] and config.control_types == {"l": "labels"}
    with pytest.raises(DataError) as err:
        parse_label_config(text, "project 3.1: label config", predictions=True)
    assert str(err.value) == ("project 3.1: label config: no RectangleLabels, PolygonLabels or BrushLabels "
                              "control to put predictions in")
    (tmp_path / "c.xml").write_text(text)
    with pytest.raises(DataError, match=r"c\.xml: no RectangleLabels, PolygonLabels or BrushLabels control"):
        read_label_config(tmp_path / "c.xml", predictions=True)
    with pytest.raises(DataError, match=r"^label config: not valid XML \("):
        parse_label_config("<View")


def test_prediction_results_are_the_writers_results_with_scores(tmp_path: Path) -> None:
    """serve's results (prediction_results) are what write_labelstudio(as_predictions=True) writes, task by
    task; asked for rectanglelabels every instance is a box, for polygonlabels box-only instances are left out."""
    from visiontl.data.formats.labelstudio import controls_of, instance_results, prediction_results

    aset = _generated()
    for k, inst in enumerate(aset.instances):
        inst.score = 0.5 + k / 10
    controls = {"rectanglelabels": "box", "polygonlabels": "poly", "brushlabels": "mask"}
    results = prediction_results(aset, controls_of(controls), "img")
    write_labelstudio(aset, tmp_path / "tasks.json", from_name=controls, to_name="img", as_predictions=True)
    written = [t["predictions"][0]["result"] for t in json.loads((tmp_path / "tasks.json").read_text())]
    assert results == written
    assert [[(r["type"], r["from_name"], r["to_name"], r["score"]) for r in rs] for rs in results] == [
        [("rectanglelabels", "box", "img", 0.5), ("rectanglelabels", "box", "img", 0.6),
         ("polygonlabels", "poly", "img", 0.7), ("brushlabels", "mask", "img", 0.8)],
        [("rectanglelabels", "box", "img", 0.9)], []]

    boxes = prediction_results(aset, controls_of(controls), "img", "rectanglelabels")
    assert [[r["type"] for r in rs] for rs in boxes] == [["rectanglelabels"] * 4, ["rectanglelabels"], []]
    x, y, w, h = aset.instances[2].bbox
    assert boxes[0][2]["value"] == {"x": x / 90 * 100, "y": y / 60 * 100, "width": w / 90 * 100,
                                    "height": h / 60 * 100, "rotation": 0, "rectanglelabels": ["car"]}
    polygons = prediction_results(aset, controls_of(controls), "img", "polygonlabels")
    assert [[r["id"] for r in rs] for rs in polygons] == [["vtl3", "vtl4"], [], []]  # the box-only ones left out

    from visiontl.data.annotations import WriteReport

    report, used = WriteReport(target="x"), {"vtl5"}
    one = instance_results(aset.instances[4], aset.images[1], "dog", controls_of(), "image", used, report, "b")
    assert [r["id"] for r in one] == ["vtl5-2"] and used == {"vtl5", "vtl5-2"} and report.boxes == 1
