"""labelme JSON <-> AnnotationSet: shape types, groups, masks, embedded images, labels.txt, errors; and labelme's
own examples compared with the VOC and COCO files labelme itself generated from them."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from defusedxml import ElementTree as SafeET
from PIL import Image
from pycocotools import mask as mask_utils

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.formats.coco import read_coco
from visiontl.data.formats.voc import read_voc
from visiontl.data.formats.labelme import circle_polygon, circle_vertices, read_labelme, write_labelme
from visiontl.errors import DataError

# pycocotools' own numpy-2 copy-keyword DeprecationWarning (the module under test silences it itself)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "datasets" / "format_samples" / "labelme" / "examples"
W, H = 64, 48


def _example(name: str) -> Path:
    path = EXAMPLES / name
    if not path.is_dir():
        pytest.skip(f"labelme examples {path} are absent (the shared datasets sit beside the repository)")
    return path


def _png(path: Path, size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 30, 200)).save(path)
    return path


def _b64_png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _shape(label: str, points: list, shape_type: str = "polygon", group_id: int | None = None, **extra) -> dict:
    return {"label": label, "points": points, "group_id": group_id, "description": "", "shape_type": shape_type,
            "flags": {}, "mask": None, **extra}


def _labelme(path: Path, shapes: list, image: str | None = None, width: int = W, height: int = H, **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image or f"{path.stem}.png",
           "imageData": None, "imageHeight": height, "imageWidth": width, **top}
    path.write_text(json.dumps(doc))
    return path


def _decode(seg: dict) -> np.ndarray:
    return mask_utils.decode(seg).astype(bool)


def _snapshot(aset: AnnotationSet) -> list:
    """Everything the model holds, with images by resolved path and categories by name (ids may differ)."""
    names = {c.id: c.name for c in aset.categories}
    images = {i.id: i for i in aset.images}
    out = [sorted(c.name for c in aset.categories)]
    for img in aset.images:
        out.append((str(aset.image_path(img).resolve()), img.width, img.height, img.attributes))
    for inst in aset.instances:
        img = images[inst.image_id]
        out.append((str(aset.image_path(img).resolve()), names[inst.category_id], inst.bbox, inst.segmentation,
                    inst.iscrowd, inst.score, inst.attributes))
    return out


# --- labelme's own examples ---------------------------------------------------------------------------


def test_real_bbox_detection_matches_labelme2voc():
    root = _example("bbox_detection")
    aset = read_labelme(root / "data_annotated")
    assert [i.file_name for i in aset.images] == ["2011_000003.jpg", "2011_000006.jpg", "2011_000025.jpg"]
    assert [(i.width, i.height) for i in aset.images] == [(500, 338), (500, 375), (500, 375)]
    assert len(aset.instances) == 9 and aset.report.dropped == [] and aset.report.clipped == 0
    # labels.txt beside data_annotated: __ignore__ and _background_ skipped, so ids are labelme2coco's
    names = {c.id: c.name for c in aset.categories}
    assert len(names) == 20 and names[1] == "aeroplane" and names[15] == "person" and names[20] == "tv/monitor"
    first = aset.instances[0]
    assert (first.image_id, names[first.category_id], first.segmentation) == (1, "person", None)
    assert first.bbox == (191.0, 107.36900369003689, 313.0 - 191.0, 329.36900369003695 - 107.36900369003689)
    assert [names[i.category_id] for i in aset.instances if i.image_id == 3] == ["bus", "bus", "car"]

    voc_root = root / "data_dataset_voc"
    classes = (voc_root / "class_names.txt").read_text().split("\n")
    voc = read_voc(voc_root, classes=[c for c in classes if c and c != "_background_"])
    voc_names = {c.id: c.name for c in voc.categories}
    for img in aset.images:
        ours = [(names[i.category_id], i.bbox) for i in aset.instances if i.image_id == img.id]
        vimg = next(v for v in voc.images if v.file_name == img.file_name)
        theirs = [(voc_names[i.category_id], i.bbox) for i in voc.instances if i.image_id == vimg.id]
        assert ours == theirs  # exact: the XML holds the very floats of the JSON
        # and straight from the XML, without read_voc
        tree = SafeET.parse(voc_root / "Annotations" / f"{Path(img.file_name).stem}.xml").getroot()
        xml_boxes = [tuple(float(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
                     for o in tree.findall("object")]
        np.testing.assert_allclose([(x, y, x + w, y + h) for _, (x, y, w, h) in ours], xml_boxes, rtol=0, atol=1e-9)


def test_real_instance_segmentation_matches_labelme2coco():
    root = _example("instance_segmentation")
    aset = read_labelme(root / "data_annotated")
    coco = read_coco(root / "data_dataset_coco" / "annotations.json", sanitize=False)
    ours_names = {c.id: c.name for c in aset.categories}
    coco_names = {c.id: c.name for c in coco.categories}
    assert {n: i for i, n in ours_names.items()} == {n: i for i, n in coco_names.items() if n != "_background_"}
    assert sorted(Path(i.file_name).name for i in aset.images) == sorted(Path(i.file_name).name for i in coco.images)
    assert len(aset.instances) == len(coco.instances) == 12
    # the two __ignore__ polygons are dropped, as labelme2coco drops them, and said so
    assert [d.split(":")[0] for d in aset.report.dropped] == ["2011_000003.json", "2011_000006.json"]
    assert all("'__ignore__'" in d for d in aset.report.dropped)
    for img in aset.images:
        cimg = next(c for c in coco.images if Path(c.file_name).name == img.file_name)
        ours = sorted((ours_names[i.category_id], i.segmentation, i.bbox) for i in aset.instances
                      if i.image_id == img.id)
        theirs = sorted((coco_names[i.category_id], i.segmentation, i.bbox) for i in coco.instances
                        if i.image_id == cimg.id)
        assert [o[:2] for o in ours] == [t[:2] for t in theirs]  # the very same points, group unions included
        for (_, _, ob), (_, _, tb) in zip(ours, theirs):
            # labelme2coco's box is the rasterised mask's (whole pixels); ours the points' extremes (clipped)
            assert ob == pytest.approx(tb, abs=1.0 + 1e-9)
    sofa = next(i for i in aset.instances if ours_names[i.category_id] == "sofa")
    assert [len(p) for p in sofa.segmentation] == [18, 6, 18, 8] and sofa.attributes == {"group_id": 0}
    assert sofa.segmentation[0][:4] == [183.936170212766, 140.56382978723406, 125.93617021276599, 140.56382978723406]


def test_real_semantic_and_classification_examples():
    sem = read_labelme(_example("semantic_segmentation") / "data_annotated")
    assert (len(sem.images), len(sem.instances), len(sem.report.dropped)) == (3, 16, 2)
    assert all(isinstance(i.segmentation, list) and len(i.segmentation) == 1 for i in sem.instances)
    cls = read_labelme(_example("classification") / "data_annotated")
    assert (len(cls.images), len(cls.instances), cls.categories) == (2, 0, [])
    assert cls.images[0].attributes == {"flags": {"__ignore__": False, "cat": True, "dog": False}}


def test_real_round_trip_is_lossless(tmp_path):
    aset = read_labelme(_example("instance_segmentation") / "data_annotated")
    report = write_labelme(aset, tmp_path / "out")
    assert report.lost == [] and (report.images, report.boxes, report.polygons, report.masks) == (3, 0, 12, 0)
    again = read_labelme(tmp_path / "out")
    assert _snapshot(again) == _snapshot(aset)
    assert [c.name for c in again.categories] == [c.name for c in aset.categories]  # same ids via labels.txt
    doc = json.loads((tmp_path / "out" / "2011_000003.json").read_text())
    assert doc["imageData"] is None and (tmp_path / "out" / doc["imagePath"]).resolve() == (
        aset.image_root / "2011_000003.jpg").resolve()


# --- generated files: every shape type ----------------------------------------------------------------


def _patch() -> np.ndarray:
    patch = np.zeros((8, 10), dtype=np.uint8)
    patch[np.arange(8), np.arange(8)] = 1  # a diagonal: any offset error shows
    patch[2:6, 6:10] = 1
    return patch


def _all_shapes(folder: Path) -> Path:
    _png(folder / "img.png")
    shapes = [
        _shape("car", [[30.5, 20.0], [10.0, 4.25]], "rectangle", flags={"occluded": True}, description="far"),
        _shape("person", [[1, 1], [9, 1], [9, 12], [1, 12]]),
        _shape("ball", [[40.0, 30.0], [40.0, 35.0]], "circle"),
        _shape("blob", [[20, 5], [29, 12]], "mask", mask=_b64_png(_patch())),
        _shape("person", [[40, 2], [50, 2], [45, 8]], group_id=3),
        _shape("car", [[0, 40], [5, 40], [5, 45]], group_id=3),  # same group id, other label: its own instance
        _shape("person", [[52, 2], [60, 2], [56, 9]], group_id=3, difficult=True),
        _shape("sign", [[2, 30], [8, 28], [10, 34], [4, 36]], "oriented_rectangle", score=0.75),
    ]
    return _labelme(folder / "img.json", shapes, flags={"night": True}, reviewer="ann")


def test_every_held_shape_type(tmp_path):
    aset = read_labelme(_all_shapes(tmp_path / "data"))
    names = {c.id: c.name for c in aset.categories}
    assert list(names.values()) == ["car", "person", "ball", "blob", "sign"]  # first appearance
    assert aset.images[0].attributes == {"flags": {"night": True}, "reviewer": "ann"}
    car, person, ball, blob, group, car2, sign = aset.instances
    assert car.bbox == (10.0, 4.25, 20.5, 15.75) and car.segmentation is None
    assert car.attributes == {"flags": {"occluded": True}, "description": "far"}
    assert person.segmentation == [[1.0, 1.0, 9.0, 1.0, 9.0, 12.0, 1.0, 12.0]] and person.bbox == (1, 1, 8, 11)
    assert ball.bbox == (35.0, 25.0, 10.0, 10.0) and ball.attributes == {"circle": [[40.0, 30.0], [40.0, 35.0]]}
    assert len(ball.segmentation[0]) == 2 * circle_vertices(5.0)
    expected = np.zeros((H, W), dtype=bool)
    expected[5:13, 20:30] = _patch().astype(bool)
    assert blob.segmentation["size"] == [H, W] and np.array_equal(_decode(blob.segmentation), expected)
    assert blob.bbox == (20.0, 5.0, 10.0, 8.0)
    assert names[group.category_id] == "person" and group.segmentation == [
        [40.0, 2.0, 50.0, 2.0, 45.0, 8.0], [52.0, 2.0, 60.0, 2.0, 56.0, 9.0]]
    assert group.bbox == (40.0, 2.0, 20.0, 7.0)
    # the second shape differs (an extra key): each shape's own details are kept
    assert group.attributes["group_id"] == 3 and [p["extra"] for p in group.attributes["labelme_parts"]] == [
        {}, {"difficult": True}]
    assert names[car2.category_id] == "car" and car2.attributes == {"group_id": 3}
    assert sign.score == 0.75 and sign.attributes == {"shape_type": "oriented_rectangle"}
    assert sign.bbox == (2.0, 28.0, 8.0, 8.0)


def test_generated_round_trip_zero_loss(tmp_path):
    aset = read_labelme(_all_shapes(tmp_path / "data"))
    report = write_labelme(aset, tmp_path / "data")  # over the originals, beside the image
    assert report.lost == []
    assert (report.images, report.boxes, report.polygons, report.masks) == (1, 1, 5, 1)
    again = read_labelme(tmp_path / "data")
    assert _snapshot(again) == _snapshot(aset)
    assert [i.file_name for i in again.images] == ["img.png"]
    doc = json.loads((tmp_path / "data" / "img.json").read_text())
    assert [s["shape_type"] for s in doc["shapes"]] == [
        "rectangle", "polygon", "circle", "mask", "polygon", "polygon", "polygon", "oriented_rectangle"]
    assert doc["shapes"][0]["points"] == [[10.0, 4.25], [30.5, 20.0]]  # corners normalised, same box
    assert doc["shapes"][2]["points"] == [[40.0, 30.0], [40.0, 35.0]]  # the circle as it was drawn
    assert doc["shapes"][3]["points"] == [[20.0, 5.0], [29.0, 12.0]]  # the mask's box, last pixel inclusive
    assert doc["shapes"][5]["difficult"] is True and "difficult" not in doc["shapes"][4]
    assert doc["reviewer"] == "ann" and doc["imagePath"] == "img.png" and doc["imageData"] is None
    assert (tmp_path / "data" / "labels.txt").read_text().split("\n")[:3] == ["__ignore__", "_background_", "car"]


def test_group_with_a_mask_is_one_union_mask(tmp_path):
    _png(tmp_path / "img.png")
    patch = np.ones((4, 4), dtype=np.uint8)
    _labelme(tmp_path / "img.json", [
        _shape("cell", [[2, 2], [5, 5]], "mask", group_id=1, mask=_b64_png(patch)),
        _shape("cell", [[20, 20], [30, 20], [30, 30], [20, 30]], group_id=1),
        _shape("cell", [[40.0, 10.0], [44.0, 10.0]], "circle", group_id=1),
    ])
    (inst,) = read_labelme(tmp_path).instances
    union = _decode(inst.segmentation)
    parts = [mask_utils.decode(mask_utils.frPyObjects([p], H, W))[:, :, 0].astype(bool) for p in (
        [20, 20, 30, 20, 30, 30, 20, 30], circle_polygon(40.0, 10.0, 4.0))]
    expected = parts[0] | parts[1]
    expected[2:6, 2:6] = True
    assert np.array_equal(union, expected) and union[10, 40] and union[25, 25]
    # the box of the rasterised union (pycocotools' pixels), as labelme2coco computes it
    assert inst.bbox == (2.0, 2.0, 42.0, 28.0) and inst.attributes == {"group_id": 1}


def test_groups_of_rectangles_and_circles_write_back_as_drawn(tmp_path):
    src = tmp_path / "src"
    _png(src / "img.png")
    shapes = [
        _shape("door", [[10, 10], [2, 2]], "rectangle", group_id=7, flags={"open": False}),
        _shape("door", [[20.0, 20.0], [23.0, 24.0]], "circle", group_id=7, flags={"open": True}),
        _shape("door", [[30, 30], [40, 30], [35, 40]], group_id=7, flags={"open": False}),
    ]
    _labelme(src / "img.json", shapes)
    (inst,) = read_labelme(src).instances
    assert [p["shape_type"] for p in inst.attributes["labelme_parts"]] == ["rectangle", "circle", "polygon"]
    assert inst.bbox == (2.0, 2.0, 38.0, 38.0)
    report = write_labelme(read_labelme(src), tmp_path / "out")
    assert report.lost == []
    written = json.loads((tmp_path / "out" / "img.json").read_text())["shapes"]
    assert [(s["shape_type"], s["points"], s["group_id"], s["flags"]) for s in written] == [
        ("rectangle", [[2.0, 2.0], [10.0, 10.0]], 7, {"open": False}),
        ("circle", [[20.0, 20.0], [23.0, 24.0]], 7, {"open": True}),
        ("polygon", [[30.0, 30.0], [40.0, 30.0], [35.0, 40.0]], 7, {"open": False}),
    ]
    assert _snapshot(read_labelme(tmp_path / "out")) == _snapshot(read_labelme(src))


def test_mask_patch_crossing_the_border_is_cut_and_counted(tmp_path):
    _png(tmp_path / "img.png")
    _labelme(tmp_path / "img.json", [_shape("x", [[60, 44], [69, 51]], "mask", mask=_b64_png(_patch()))])
    aset = read_labelme(tmp_path)
    expected = np.zeros((H, W), dtype=bool)
    expected[44:, 60:] = _patch().astype(bool)[:4, :4]
    assert np.array_equal(_decode(aset.instances[0].segmentation), expected) and aset.report.clipped == 1


def test_sanitize_false_keeps_boxes_as_the_shapes_give_them(tmp_path):
    _png(tmp_path / "img.png")
    _labelme(tmp_path / "img.json", [_shape("a", [[-5, 2], [10, 60]], "rectangle"),
                                     _shape("b", [[3, 3], [3, 9]], "rectangle")])
    kept = read_labelme(tmp_path, sanitize=False)
    assert [i.bbox for i in kept.instances] == [(-5.0, 2.0, 15.0, 58.0), (3.0, 3.0, 0.0, 6.0)]
    assert (kept.report.clipped, kept.report.dropped) == (0, [])
    clean = read_labelme(tmp_path)
    assert [i.bbox for i in clean.instances] == [(0.0, 2.0, 10.0, 46.0)]
    assert clean.report.clipped == 1 and clean.report.dropped[0].startswith("img.png: annotation 2 box")


def test_writing_a_set_from_another_format(tmp_path):
    """COCO-style ids, RLE, multi-polygon instances without group ids, VOC-style attributes, scores."""
    _png(tmp_path / "images" / "sub" / "a.png")
    full = np.zeros((H, W), dtype=np.uint8)
    full[10:20, 30:45] = 1
    full[12, 50] = 1
    rle = mask_utils.encode(np.asfortranarray(full))
    rle = {"size": rle["size"], "counts": rle["counts"].decode()}
    aset = AnnotationSet(
        [Category(3, "cat"), Category(7, "dog")],
        [ImageRecord(10, "sub/a.png", W, H, {"subset": "train"})],
        [
            Instance(0, 10, 3, (1, 1, 10, 10), attributes={"difficult": 1, "truncated": 0}),
            Instance(1, 10, 7, (2, 2, 20, 20), segmentation=[[2, 2, 10, 2, 10, 10], [15, 15, 22, 15, 22, 22]],
                     score=0.5),
            Instance(2, 10, 7, (30, 10, 21, 10), segmentation=rle, iscrowd=True),
        ],
        tmp_path / "images",
    )
    report = write_labelme(aset, tmp_path / "labels")
    assert report.lost == ["category ids [3, 7] become 1..2 in id order (labelme keeps class names, not ids)"]
    assert (report.boxes, report.polygons, report.masks) == (1, 1, 1)
    doc = json.loads((tmp_path / "labels" / "sub" / "a.json").read_text())
    assert doc["imagePath"] == "../../images/sub/a.png" and doc["subset"] == "train"
    assert [s["group_id"] for s in doc["shapes"]] == [None, 0, 0, None]  # two polygons: one group
    back = read_labelme(tmp_path / "labels")
    assert [c.name for c in back.categories] == ["cat", "dog"]
    assert back.image_root.resolve() == (tmp_path / "images" / "sub").resolve()
    box, poly, mask = back.instances
    assert box.bbox == (1, 1, 10, 10) and box.attributes == {"difficult": 1, "truncated": 0}
    assert poly.segmentation == [[2, 2, 10, 2, 10, 10], [15, 15, 22, 15, 22, 22]] and poly.score == 0.5
    assert poly.attributes == {"group_id": 0}
    assert mask.iscrowd and np.array_equal(_decode(mask.segmentation), full.astype(bool))
    assert mask.segmentation == rle and mask.bbox == (30.0, 10.0, 21.0, 10.0)


def test_writer_reports_what_labelme_cannot_hold(tmp_path):
    _png(tmp_path / "a.png")
    aset = AnnotationSet(
        [Category(1, "x")],
        [ImageRecord(1, "a.png", W, H)],
        [Instance(1, 1, 1, (1, 1, 5, 5), segmentation=[[1, 1, 6, 6]], attributes={"label": "y", "obj": object()}),
         Instance(2, 1, 1, (1, 1, 5, 5), segmentation=[[1, 1, 6, 1, 6, 6]], attributes={"group_id": 4}),
         Instance(3, 1, 1, (1, 1, 5, 5), segmentation=[[1, 1, 6, 1, 6, 6]], attributes={"group_id": 4}),
         Instance(4, 1, 1, (1, 1, 5, 5), area=25.4),
         Instance(5, 1, 1, (1, 1, 5, 5), area=99.0),
         Instance(6, 1, 1, (0, 0, 30, 30), segmentation=[[1, 1, 6, 1, 6, 6]])],
        tmp_path,
    )
    report = write_labelme(aset, tmp_path / "out")
    assert report.lost == [
        "a.png: annotation 1: attribute 'label' clashes with a labelme shape key",
        "a.png: annotation 1: attribute 'obj' is not JSON",
        "a.png: annotation 1: polygon 1 is not 3 or more finite points",
        "a.png: annotation 1: no usable polygon; written as its box",
        "a.png: annotation 3: group_id 4 is already used by another 'x'; written as a new group",
        "a.png: annotation 5: area 99 (labelme has no area; it reads back as 25)",
        "a.png: annotation 6: box [0, 0, 30, 30] is not its shape's bounding box [1, 1, 5, 5] "
        "(labelme keeps the shape only)",
    ]
    shapes = json.loads((tmp_path / "out" / "a.json").read_text())["shapes"]
    assert [(s["shape_type"], s["group_id"]) for s in shapes] == [
        ("rectangle", None), ("polygon", 4), ("polygon", 5), ("rectangle", None), ("rectangle", None),
        ("polygon", None)]
    assert len(read_labelme(tmp_path / "out").instances) == 6


def test_writer_refuses_two_images_with_one_json(tmp_path):
    aset = AnnotationSet([Category(1, "x")], [ImageRecord(1, "a.jpg", W, H), ImageRecord(2, "a.png", W, H)], [],
                         tmp_path)
    with pytest.raises(DataError, match=r"images a\.jpg and a\.png would both be written to .*a\.json"):
        write_labelme(aset, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


# --- shapes that are not held ---------------------------------------------------------------------------


def test_lines_and_points_are_dropped_and_counted(tmp_path):
    _png(tmp_path / "img.png")
    _labelme(tmp_path / "img.json", [
        _shape("edge", [[1, 1], [5, 5]], "line"),
        _shape("edge", [[1, 1], [5, 5], [9, 1]], "linestrip"),
        _shape("tip", [[3, 3]], "point"),
        _shape("tip", [[3, 3], [4, 4]], "points"),
        _shape("__ignore__", [[1, 1], [9, 1], [9, 9]]),
        _shape("box", [[1, 1], [9, 9]], "rectangle"),
    ])
    aset = read_labelme(tmp_path)
    assert [c.name for c in aset.categories] == ["box"] and len(aset.instances) == 1
    assert aset.report.dropped == [
        "img.json: shape 1 ('edge', line): no area, not held",
        "img.json: shape 2 ('edge', linestrip): no area, not held",
        "img.json: shape 3 ('tip', point): no area, not held",
        "img.json: shape 4 ('tip', points): no area, not held",
        "img.json: shape 5 ('__ignore__', polygon): an ignore region, not held",
    ]
    assert aset.report.lines()[0].startswith("5 ")


# --- images -------------------------------------------------------------------------------------------------


def test_embedded_image_without_the_file(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    _labelme(tmp_path / "data" / "a.json", [_shape("x", [[1, 1], [9, 9]], "rectangle")], image="gone/a.png",
             width=40, height=30, imageData=data)
    aset = read_labelme(tmp_path / "data")
    img = aset.images[0]
    assert (img.file_name, img.width, img.height) == ("gone/a.png", 40, 30)
    assert img.attributes == {"embedded_image": True, "image_data": data}
    # the image exists only embedded: written back even without embed_images
    report = write_labelme(aset, tmp_path / "out")
    assert report.lost == []
    doc = json.loads((tmp_path / "out" / "gone" / "a.json").read_text())
    assert doc["imageData"] == data and doc["imagePath"] == "../../data/gone/a.png"
    again = read_labelme(tmp_path / "out")
    assert (again.images[0].width, again.images[0].height) == (40, 30)
    assert again.instances[0].bbox == (1, 1, 8, 8)

    # missing: no imagePath -> named after the JSON with the embedded format's extension
    _labelme(tmp_path / "solo" / "b.json", [], image="", width=40, height=30, imageData=data)
    assert read_labelme(tmp_path / "solo").images[0].file_name == "b.png"


def test_embed_images_writes_the_file_and_refuses_a_missing_one(tmp_path):
    _png(tmp_path / "a.png")
    aset = read_labelme(_labelme(tmp_path / "a.json", []))
    assert aset.images[0].attributes == {}
    write_labelme(aset, tmp_path / "out", embed_images=True)
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    assert base64.b64decode(doc["imageData"]) == (tmp_path / "a.png").read_bytes()
    assert read_labelme(tmp_path / "out").images[0].attributes == {"embedded_image": True}
    (tmp_path / "a.png").unlink()
    with pytest.raises(DataError, match=r"a\.png: image file not found, cannot embed it \(image 1, a\.png\)"):
        write_labelme(aset, tmp_path / "out2", embed_images=True)


def test_image_paths_windows_separators_and_foreign_absolute_paths(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "ann" / "b.png")
    _labelme(tmp_path / "ann" / "a.json", [], image="..\\img\\a.png")
    _labelme(tmp_path / "ann" / "b.json", [], image="C:\\Users\\me\\photos\\b.png")
    aset = read_labelme(tmp_path / "ann")
    assert aset.image_root.resolve() == tmp_path.resolve()
    assert [i.file_name for i in aset.images] == ["img/a.png", "ann/b.png"]
    # an image root given: images are looked for there, by the JSON's sub-folder and name
    _png(tmp_path / "elsewhere" / "a.png")
    _png(tmp_path / "elsewhere" / "b.png")
    given = read_labelme(tmp_path / "ann", image_root=tmp_path / "elsewhere")
    assert [i.file_name for i in given.images] == ["a.png", "b.png"]
    # two label files for one image: refused (the image would count twice)
    _labelme(tmp_path / "ann" / "c.json", [], image="b.png")
    with pytest.raises(DataError, match=r"c\.json: annotates the image .*ann/b\.png, as .*b\.json does$"):
        read_labelme(tmp_path / "ann")


# --- categories ---------------------------------------------------------------------------------------------


def test_labels_txt_sets_the_ids_and_rejects_unknown_labels(tmp_path):
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nzebra\nant\n\n")
    _png(tmp_path / "data" / "a.png")
    _labelme(tmp_path / "data" / "a.json", [_shape("ant", [[1, 1], [9, 9]], "rectangle")])
    aset = read_labelme(tmp_path / "data")
    assert [(c.id, c.name) for c in aset.categories] == [(1, "zebra"), (2, "ant")]
    assert aset.instances[0].category_id == 2
    assert [(c.id, c.name) for c in read_labelme(tmp_path / "data", classes=["ant"]).categories] == [(1, "ant")]
    _png(tmp_path / "data" / "b.png")
    _labelme(tmp_path / "data" / "b.json", [_shape("ant", [[1, 1], [2, 2]], "rectangle"),
                                            _shape("moth", [[1, 1], [9, 9]], "rectangle")])
    with pytest.raises(DataError) as err:
        read_labelme(tmp_path / "data")
    assert str(err.value) == (f"{tmp_path / 'data' / 'b.json'}: shape 2 ('moth'): label 'moth' is not in "
                              f"{tmp_path / 'labels.txt'}")


# --- errors ---------------------------------------------------------------------------------------------------


def _broken(tmp_path: Path, case: str) -> Path:
    _png(tmp_path / "a.png")
    path = tmp_path / "a.json"
    if case == "json":
        path.write_text('{"shapes": [}')
    elif case == "not labelme":
        path.write_text('{"images": [], "annotations": []}')
    elif case == "two-point polygon":
        _labelme(path, [_shape("ok", [[1, 1], [5, 1], [5, 5]]), _shape("cup", [[1, 1], [5, 5]])], image="a.png")
    elif case == "unknown type":
        _labelme(path, [_shape("cup", [[1, 1], [5, 5]], "ellipse")], image="a.png")
    elif case == "three-point rectangle":
        _labelme(path, [_shape("cup", [[1, 1], [5, 5], [6, 6]], "rectangle")], image="a.png")
    elif case == "bad point":
        _labelme(path, [_shape("cup", [[1, 1], [5, "x"], [6, 6]])], image="a.png")
    elif case == "bad mask":
        _labelme(path, [_shape("cup", [[1, 1], [5, 5]], "mask", mask="not base64 png")], image="a.png")
    elif case == "size":
        _labelme(path, [], image="a.png", width=640, height=480)
    elif case == "embedded size":
        (tmp_path / "a.png").unlink()
        buf = io.BytesIO()
        Image.new("RGB", (40, 30)).save(buf, format="PNG")
        _labelme(path, [], image="a.png", width=41, height=30, imageData=base64.b64encode(buf.getvalue()).decode())
    elif case == "missing image":
        (tmp_path / "a.png").unlink()
        _labelme(path, [], image="a.png", width=None, height=None)
    return path


@pytest.mark.parametrize("case, message", [
    ("json", r"a\.json: not valid JSON \(Expecting value at line 1 column 13\)$"),
    ("not labelme", r"a\.json: not a labelme file \(no 'shapes' list\)$"),
    ("two-point polygon", r"a\.json: shape 2 \('cup'\): a polygon needs at least 3 points, got 2$"),
    ("unknown type", r"a\.json: shape 1 \('cup'\): unknown shape_type 'ellipse' \(labelme's: rectangle, polygon, "),
    ("three-point rectangle", r"a\.json: shape 1 \('cup'\): a rectangle needs 2 points, got 3$"),
    ("bad point", r"a\.json: shape 1 \('cup'\), polygon: point 2 \[5, 'x'\] is not \[x, y\] with finite numbers$"),
    ("bad mask", r"a\.json: shape 1 \('cup'\): 'mask' is not a base64 image \("),
    ("size", r"a\.json: imageWidth x imageHeight 640x480 differs from the image .*a\.png \(64x48\)$"),
    ("embedded size", r"a\.json: imageWidth x imageHeight 41x30 differs from its imageData \(40x30\)$"),
    ("missing image", r"a\.json: image 'a\.png' not found \(.*a\.png\), no imageData, and no imageWidth/imageHeight$"),
])
def test_errors_are_one_line_naming_file_and_shape(tmp_path, case, message):
    path = _broken(tmp_path, case)
    with pytest.raises(DataError) as err:
        read_labelme(tmp_path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)), text
    assert re.search(message, text), text


def test_missing_path():
    with pytest.raises(DataError, match="no such labelme file or folder"):
        read_labelme(Path("/nonexistent/labelme"))


# --- circles ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r, n", [(0.5, 16), (5.0, 16), (100.0, 24), (1000.0, 72)])
def test_circle_vertices_keep_chords_within_a_pixel(r, n):
    assert circle_vertices(r) == n and n % 4 == 0
    assert r * (1 - math.cos(math.pi / n)) <= 1.0 or r <= 1
    poly = circle_polygon(10.0, 20.0, r)
    xs, ys = poly[0::2], poly[1::2]
    assert len(xs) == n and all(math.hypot(x - 10, y - 20) == pytest.approx(r) for x, y in zip(xs, ys))
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((10 - r, 10 + r, 20 - r, 20 + r))
