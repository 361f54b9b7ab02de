"""Annotation readers (COCO, Pascal VOC, YOLO) into `AnnotationSet`: ids, boxes, quirks, errors, real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, LabelMap
from visiontl.data.formats.coco import read_coco, write_coco
from visiontl.data.formats.registry import read_split
from visiontl.data.formats.voc import read_voc
from visiontl.data.formats.yolo import read_yolo
from visiontl.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def _image(path: Path, size: tuple[int, int] = (32, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 30, 200)).save(path)
    return path


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real dataset {path} is absent (the shared datasets sit beside the repository)")
    return path


# --- COCO ---------------------------------------------------------------------------------------------


def _coco() -> dict:
    """Ids start at 0 and have gaps; one image has no objects; one file is in a sub-folder."""
    return {
        "images": [
            {"id": 0, "file_name": "a.jpg", "width": 32, "height": 24},
            {"id": 7, "file_name": "sub/b.jpg", "width": 32, "height": 24},
            {"id": 9, "file_name": "empty.jpg", "width": 32, "height": 24},
        ],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 0, "bbox": [1, 2, 10, 5], "iscrowd": 0, "area": 40.5,
             "segmentation": [[1, 2, 11, 2, 11, 7]]},
            {"id": 5, "image_id": 7, "category_id": 17, "bbox": [4.5, 3, 6, 8]},  # no iscrowd, area, segmentation
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [0, 0, 32, 24], "iscrowd": 1, "area": 600,
             "segmentation": {"size": [24, 32], "counts": "0Ph0"}},
        ],
        "categories": [
            {"id": 0, "name": "cat", "supercategory": "animal"},
            {"id": 5, "name": "dog", "supercategory": "animal"},
            {"id": 17, "name": "car"},
        ],
    }


def _write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_keeps_ids_attributes_and_empty_images(tmp_path: Path) -> None:
    aset = read_coco(_write_json(tmp_path / "ann.json", _coco()), image_root=tmp_path / "imgs")
    assert aset.image_root == tmp_path / "imgs"
    assert aset.report.source == str(tmp_path / "ann.json")
    assert aset.categories == [Category(0, "cat", "animal"), Category(5, "dog", "animal"), Category(17, "car", "")]
    assert aset.images == [ImageRecord(0, "a.jpg", 32, 24), ImageRecord(7, "sub/b.jpg", 32, 24), ImageRecord(9, "empty.jpg", 32, 24)]
    assert aset.instances == [
        Instance(0, 0, 0, (1.0, 2.0, 10.0, 5.0), False, [[1, 2, 11, 2, 11, 7]], 40.5),
        Instance(5, 7, 17, (4.5, 3.0, 6.0, 8.0), False, None, None),
        Instance(3, 7, 5, (0.0, 0.0, 32.0, 24.0), True, {"size": [24, 32], "counts": "0Ph0"}, 600.0),
    ]
    assert aset.by_image()[9] == []
    assert aset.report.clipped == 0 and aset.report.dropped == []


def test_coco_roboflow_supercategory_only_category_is_kept_but_not_a_label(tmp_path: Path) -> None:
    data = _coco()
    data["categories"] = [
        {"id": 0, "name": "cells", "supercategory": "none"},
        {"id": 1, "name": "RBC", "supercategory": "cells"},
        {"id": 2, "name": "WBC", "supercategory": "cells"},
    ]
    for ann, cid in zip(data["annotations"], (1, 2, 1)):
        ann["category_id"] = cid
    aset = read_coco(_write_json(tmp_path / "ann.json", data), image_root=tmp_path)
    assert [c.id for c in aset.categories] == [0, 1, 2]
    labels = LabelMap.from_set(aset)
    assert labels.category_ids == (1, 2) and labels.names == ("RBC", "WBC")


@pytest.mark.parametrize(
    ("bbox", "shown"),
    [(["12", 2, 10, 5], "['12', 2, 10, 5]"), ([float("nan"), 2, 10, 5], "[nan, 2, 10, 5]"), ([1, 2, 3], "[1, 2, 3]"), (None, "None")],
)
def test_coco_bad_bbox_names_annotation_and_file(tmp_path: Path, bbox: object, shown: str) -> None:
    data = _coco()
    data["annotations"][1]["bbox"] = bbox  # json writes NaN, and Python's json reads it back as a float
    path = _write_json(tmp_path / "ann.json", data)
    with pytest.raises(DataError) as err:
        read_coco(path, image_root=tmp_path)
    assert str(err.value) == f"{path}: annotation 5 (sub/b.jpg): bbox {shown} is not 4 finite numbers"


def test_coco_unknown_image_or_category(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"][2]["image_id"] = 4
    path = _write_json(tmp_path / "ann.json", data)
    with pytest.raises(DataError, match=r"annotation 3: image_id 4 is not in 'images'$") as err:
        read_coco(path, image_root=tmp_path)
    assert str(err.value).startswith(str(path))
    data = _coco()
    data["annotations"][2]["category_id"] = 6
    _write_json(path, data)
    with pytest.raises(DataError) as err:
        read_coco(path, image_root=tmp_path)
    assert str(err.value) == f"{path}: annotation 3 (sub/b.jpg): category_id 6 is not in 'categories'"


def test_coco_duplicate_ids_and_bad_records(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"][2]["id"] = 5
    path = _write_json(tmp_path / "ann.json", data)
    with pytest.raises(DataError) as err:
        read_coco(path, image_root=tmp_path)
    assert str(err.value) == f"{path}: annotation id 5 is used twice"
    data = _coco()
    data["images"][1]["id"] = "7"
    _write_json(path, data)
    with pytest.raises(DataError) as err:
        read_coco(path, image_root=tmp_path)
    assert str(err.value) == f"{path}: image #2: 'id' '7' is not an integer"
    del data["categories"]
    _write_json(path, data)
    with pytest.raises(DataError, match="not a COCO file \\(no 'categories' list\\)"):
        read_coco(path)


def test_coco_malformed_or_missing_json(tmp_path: Path) -> None:
    path = tmp_path / "ann.json"
    path.write_text('{"images": [,]}')
    with pytest.raises(DataError) as err:
        read_coco(path)
    assert str(err.value) == f"{path}: not valid JSON (Expecting value at line 1 column 13)"
    with pytest.raises(DataError) as err:
        read_coco(tmp_path / "nope.json")
    assert str(err.value) == f"{tmp_path / 'nope.json'}: annotation file not found"


def test_coco_clips_and_drops_boxes(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"][0]["bbox"] = [-2, 20, 10, 10]  # crosses the left and bottom borders
    data["annotations"][1]["bbox"] = [5, 5, 0, 4]  # zero width
    aset = read_coco(_write_json(tmp_path / "ann.json", data), image_root=tmp_path)
    assert [i.id for i in aset.instances] == [0, 3]
    assert aset.instances[0].bbox == (0.0, 20.0, 8.0, 4.0)
    assert aset.report.clipped == 1
    assert aset.report.dropped == ["sub/b.jpg: annotation 5 box [5.0, 5.0, 0.0, 4.0] has zero area"]


@pytest.mark.parametrize("where", [".", "images", "../images", "images/train2017"])
def test_coco_finds_its_image_folder(tmp_path: Path, where: str) -> None:
    json_path = _write_json(tmp_path / "ds" / "annotations.json", _coco())
    folder = (tmp_path / "ds" / where).resolve()
    _image(folder / "a.jpg")
    assert read_coco(json_path).image_root.resolve() == folder


def test_coco_without_its_images_is_one_line_and_size_comes_from_header(tmp_path: Path) -> None:
    data = _coco()
    json_path = _write_json(tmp_path / "annotations.json", data)
    with pytest.raises(DataError) as err:
        read_coco(json_path)
    here = tmp_path.name
    assert str(err.value) == (
        f"{json_path}: its images ('a.jpg', 'sub/b.jpg', 'empty.jpg') are in none of the folders tried in "
        f"{tmp_path.parent}: {here}/, {here}/images/, images/; name their folder with data.images (per split: "
        "data.train_images, data.val_images; data commands: --images)")
    del data["images"][1]["width"]
    data["images"][1]["height"] = 0
    del data["annotations"][2]["segmentation"]  # a 24x32 RLE: the image is read as 40x30 below
    _write_json(json_path, data)
    _image(tmp_path / "images" / "sub" / "b.jpg", (40, 30))
    with pytest.raises(DataError, match=r"sub/b\.jpg: image file not found$"):
        read_coco(json_path, image_root=tmp_path)  # a folder named is used as it is
    aset = read_coco(json_path)  # found by the second image: a missing first one does not hide the folder
    assert aset.image_root == tmp_path / "images"
    assert aset.images[1] == ImageRecord(7, "sub/b.jpg", 40, 30)


def test_coco_write_then_read_is_identity(tmp_path: Path) -> None:
    data = _coco()
    data["annotations"][1]["area"] = 48.0  # a missing area is written as the box's, so give it one here
    original = read_coco(_write_json(tmp_path / "in.json", data), image_root=tmp_path)
    out = tmp_path / "out" / "copy.json"
    write_coco(original, out)
    again = read_coco(out, image_root=tmp_path)
    again.report = original.report
    assert again == original
    assert sorted(c["id"] for c in json.loads(out.read_text())["categories"]) == [0, 5, 17]
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left nothing behind


def test_coco_writer_fills_box_area_and_empty_segmentation(tmp_path: Path) -> None:
    aset = AnnotationSet(
        [Category(3, "x")], [ImageRecord(1, "i.jpg", 32, 24)], [Instance(0, 1, 3, (1, 2, 4, 5), score=0.25)], tmp_path
    )
    write_coco(aset, tmp_path / "p.json")
    ann = json.loads((tmp_path / "p.json").read_text())["annotations"][0]
    assert ann == {"id": 0, "image_id": 1, "category_id": 3, "bbox": [1, 2, 4, 5], "area": 20, "iscrowd": 0,
                   "segmentation": [], "score": 0.25}


def test_coco_reads_coco128_seg() -> None:
    root = _shared("coco128-seg")
    aset = read_coco(root / "annotations.json")
    assert aset.image_root == root / "images" / "train2017"
    assert (len(aset.images), len(aset.instances), len(aset.categories)) == (128, 929, 80)
    assert all(aset.image_path(img).is_file() for img in aset.images)
    empty = sorted(img.file_name for img in aset.images if not aset.by_image()[img.id])
    assert empty == ["000000000250.jpg", "000000000508.jpg"]
    assert len(LabelMap.from_set(aset).category_ids) == 80
    first = aset.instances[0]
    assert (first.id, first.image_id, first.category_id, first.bbox) == (1, 1, 51, (1.08, 187.69, 611.59, 285.84))
    assert isinstance(first.segmentation, list) and len(first.segmentation[0]) == 24


# --- Pascal VOC ---------------------------------------------------------------------------------------


def _voc_xml(filename: str | None, objects: list[dict], size: tuple[int, int] | None = (32, 24)) -> str:
    parts = ["<annotation>", "<folder>JPEGImages</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for obj in objects:
        box = "".join(f"<{k}>{obj[k]}</{k}>" for k in ("xmin", "ymin", "xmax", "ymax") if k in obj)
        extra = "".join(f"<{k}>{obj[k]}</{k}>" for k in ("difficult", "truncated") if k in obj)
        parts.append(f"<object><name>{obj['name']}</name>{extra}<bndbox>{box}</bndbox></object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def _voc(root: Path) -> Path:
    """Three images; the split list has the per-class "id  1" form and a blank line."""
    ann = root / "Annotations"
    ann.mkdir(parents=True)
    for name in ("img1.jpg", "img2.jpg", "img3.jpg"):
        _image(root / "JPEGImages" / name)
    (ann / "img1.xml").write_text(_voc_xml("img1.jpg", [
        {"name": "dog", "xmin": "2", "ymin": "3", "xmax": "12.0", "ymax": "10", "difficult": 1},
        {"name": "cat", "xmin": 20, "ymin": 4, "xmax": 30.5, "ymax": 20, "truncated": 1},
    ]))
    (ann / "img2.xml").write_text(_voc_xml("img2.jpg", []))
    (ann / "img3.xml").write_text(_voc_xml("img3.jpg", [{"name": "cat", "xmin": 0, "ymin": 0, "xmax": 5, "ymax": 5}]))
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("img3  1\n\nimg1 -1\nimg2\n")
    return root


def test_voc_reads_split_in_list_order(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc")
    aset = read_voc(root, "train")
    assert aset.image_root == root / "JPEGImages"
    assert aset.report.source == str(root / "Annotations")
    assert aset.images == [ImageRecord(1, "img3.jpg", 32, 24), ImageRecord(2, "img1.jpg", 32, 24), ImageRecord(3, "img2.jpg", 32, 24)]
    assert aset.categories == [Category(1, "cat"), Category(2, "dog")]
    zero = {"difficult": 0, "truncated": 0}
    assert aset.instances == [
        Instance(1, 1, 1, (0.0, 0.0, 5.0, 5.0), attributes=zero),
        Instance(2, 2, 2, (2.0, 3.0, 10.0, 7.0), attributes={"difficult": 1, "truncated": 0}),
        Instance(3, 2, 1, (20.0, 4.0, 10.5, 16.0), attributes={"difficult": 0, "truncated": 1}),
    ]
    assert aset.by_image()[3] == []


def test_voc_without_split_reads_every_xml_sorted(tmp_path: Path) -> None:
    aset = read_voc(_voc(tmp_path / "voc"))
    assert [i.file_name for i in aset.images] == ["img1.jpg", "img2.jpg", "img3.jpg"]
    assert [c.name for c in aset.categories] == ["dog", "cat"]  # order of first appearance
    assert [i.category_id for i in aset.instances] == [1, 2, 2]


def test_voc_class_list_fixes_ids_and_rejects_others(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc")
    aset = read_voc(root, "train", classes=["bird", "dog", "cat"])
    assert aset.categories == [Category(1, "bird"), Category(2, "dog"), Category(3, "cat")]
    assert [i.category_id for i in aset.instances] == [3, 2, 3]
    with pytest.raises(DataError) as err:
        read_voc(root, "train", classes=["dog"])
    assert str(err.value) == f"{root / 'Annotations' / 'img3.xml'}: object 1: class 'cat' is not in the class list ['dog']"


def test_voc_file_name_fallbacks_and_size_from_image(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc")
    ann = root / "Annotations"
    _image(root / "JPEGImages" / "img4.png", (40, 30))
    (ann / "img4.xml").write_text(_voc_xml("renamed.jpg", [], size=(0, 0)))  # stale name, size 0
    (ann / "img5.xml").write_text(_voc_xml(None, [], size=None))  # no <filename>, no <size>
    _image(root / "JPEGImages" / "img5.jpg", (16, 8))
    (root / "ImageSets" / "Main" / "extra.txt").write_text("img4\nimg5\n")
    aset = read_voc(root, "extra")
    assert aset.images == [ImageRecord(1, "img4.png", 40, 30), ImageRecord(2, "img5.jpg", 16, 8)]


def test_voc_bad_coordinate_names_file_and_object(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc")
    xml = root / "Annotations" / "img1.xml"
    xml.write_text(_voc_xml("img1.jpg", [{"name": "a", "xmin": 1, "ymin": 1, "xmax": 3, "ymax": 3},
                                         {"name": "a", "xmin": 1, "ymin": 1, "xmax": "abc", "ymax": 3}]))
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value) == f"{xml}: object 2: xmax 'abc' is not a number"
    xml.write_text(_voc_xml("img1.jpg", [{"name": "a", "xmin": 1, "ymin": 1, "ymax": 3}]))
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value) == f"{xml}: object 1: no <bndbox>/<xmax>"


def test_voc_malformed_xml_and_missing_files(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc")
    xml = root / "Annotations" / "img2.xml"
    xml.write_text("<annotation><filename>x</annotation>")
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value) == f"{xml}: not valid XML (mismatched tag: line 1, column 25)"
    with pytest.raises(DataError) as err:
        read_voc(root, "val")
    assert str(err.value) == f"{root / 'ImageSets' / 'Main' / 'val.txt'}: split list not found (lists there: train)"
    (root / "ImageSets" / "Main" / "more.txt").write_text("img9\n")
    with pytest.raises(DataError) as err:
        read_voc(root, "more")
    assert str(err.value) == f"{root / 'Annotations' / 'img9.xml'}: annotation file not found"
    with pytest.raises(DataError, match="no Annotations folder"):
        read_voc(tmp_path)


def test_voc_clips_and_drops_boxes(tmp_path: Path) -> None:
    root = _voc(tmp_path / "voc")
    (root / "Annotations" / "img2.xml").write_text(_voc_xml("img2.jpg", [
        {"name": "cat", "xmin": 25, "ymin": 10, "xmax": 40, "ymax": 30},  # crosses the right and bottom
        {"name": "cat", "xmin": 7, "ymin": 7, "xmax": 7, "ymax": 9},  # zero width
    ]))
    aset = read_voc(root, "train")
    assert aset.report.clipped == 1
    assert aset.report.dropped == ["img2.jpg: annotation 5 box [7.0, 7.0, 0.0, 2.0] has zero area"]
    assert aset.instances[-1].bbox == (25.0, 10.0, 7.0, 14.0)


def test_voc_reads_shipped_bccd_sample() -> None:
    aset = read_voc(REPO / "data" / "samples" / "bccd", "train")
    assert len(aset.images) == 60
    assert {c.name for c in aset.categories} == {"RBC", "WBC", "Platelets"}
    assert all(aset.image_path(img).is_file() for img in aset.images)


def test_voc_reads_real_bccd() -> None:
    root = _shared("bccd")
    assert len(read_voc(root, "trainval").images) == 292
    aset = read_voc(root)
    assert (len(aset.images), len(aset.instances)) == (364, 4888 - 2)
    assert {(img.width, img.height) for img in aset.images} == {(640, 480)}
    assert aset.category_counts() == {1: 372, 2: 4153, 3: 361}  # WBC, RBC, Platelets; both dropped boxes are RBC
    # No BCCD box crosses the border (545 touch it, which needs no clipping).
    assert aset.report.clipped == 0
    assert aset.report.dropped == [
        "BloodImage_00338.jpg: annotation 3951 box [504.0, 337.0, 0.0, 0.0] has zero area",
        "BloodImage_00343.jpg: annotation 4005 box [181.0, 329.0, 0.0, 0.0] has zero area",
    ]


# --- YOLO ---------------------------------------------------------------------------------------------


def _yolo(root: Path, split: str = "train") -> Path:
    """images/<split>/a.jpg with a box and a polygon; images/<split>/sub/b.png without a label file."""
    _image(root / "images" / split / "a.jpg")
    _image(root / "images" / split / "sub" / "b.png", (16, 8))
    labels = root / "labels" / split
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n\n0 0.25 0.25 0.75 0.25 0.5 0.75\n")
    return root


def test_yolo_folder_layout_with_classes_txt(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "ds")
    (root / "classes.txt").write_text("cat\ndog\n\n")
    aset = read_yolo(root, "train")
    assert aset.image_root == root / "images" / "train"
    assert aset.report.source == str(root / "labels" / "train")
    assert aset.categories == [Category(0, "cat"), Category(1, "dog")]
    assert aset.images == [ImageRecord(1, "a.jpg", 32, 24), ImageRecord(2, "sub/b.png", 16, 8)]
    assert aset.instances == [
        Instance(1, 1, 1, (12.0, 6.0, 8.0, 12.0)),
        Instance(2, 1, 0, (8.0, 6.0, 16.0, 12.0), segmentation=[[8.0, 6.0, 24.0, 6.0, 16.0, 18.0]]),
    ]
    assert aset.by_image()[2] == []


def test_yolo_classes_txt_under_labels_and_border_clip(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "ds")
    (root / "labels" / "classes.txt").write_text("cat\ndog\n")
    (root / "labels" / "train" / "sub").mkdir()
    (root / "labels" / "train" / "sub" / "b.txt").write_text("0 1.0 0.5 0.5 0.5\n0 0.5 0.5 0 0.5\n")
    aset = read_yolo(root, "train")
    assert [i.bbox for i in aset.instances if i.image_id == 2] == [(12.0, 2.0, 4.0, 4.0)]
    assert aset.report.clipped == 1
    assert aset.report.dropped == ["sub/b.png: annotation 4 box [8.0, 2.0, 0.0, 4.0] has zero area"]


def test_yolo_data_yaml_with_dict_names_and_list_file(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "ds" / "data", "train")
    _image(root / "images" / "val" / "c.jpg")
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "c.txt").write_text("2 0.5 0.5 0.5 0.5\n")
    (root / "val.txt").write_text("./images/val/c.jpg\n")
    spec = {"path": "data", "train": "images/train", "val": "val.txt", "names": {0: "cat", 1: "dog", 2: "cow"}}
    (tmp_path / "ds" / "data.yaml").write_text(yaml.safe_dump(spec))
    train = read_yolo(tmp_path / "ds", "train")
    assert train.report.source == str(tmp_path / "ds" / "data.yaml")
    assert [i.file_name for i in train.images] == ["a.jpg", "sub/b.png"]
    assert [c.name for c in train.categories] == ["cat", "dog", "cow"]
    val = read_split("yolo", tmp_path / "ds", "val")
    assert val.image_root == (root / "images" / "val").absolute()
    assert val.images == [ImageRecord(1, "c.jpg", 32, 24)]
    assert val.instances == [Instance(1, 1, 2, (8.0, 6.0, 16.0, 12.0))]
    with pytest.raises(DataError) as err:
        read_yolo(tmp_path / "ds", "test")
    assert str(err.value) == f"{tmp_path / 'ds' / 'data.yaml'}: no 'test' entry (it has: train, val)"


def test_yolo_roboflow_parent_paths(tmp_path: Path) -> None:
    _image(tmp_path / "ds" / "train" / "images" / "a.jpg")
    (tmp_path / "ds" / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: ['x']\n")
    aset = read_yolo(tmp_path / "ds", "train")
    assert aset.image_root == tmp_path / "ds" / "train" / "images" and len(aset.images) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1 0.5 0.5 0.2", "4 fields; expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"),
        ("1 0.5 0.5 0.2 0.2 0.3", "6 fields; expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"),
        ("1 0.5 abc 0.2 0.2", "'abc' is not a number"),
        ("1 0.5 nan 0.2 0.2", "'1 0.5 nan 0.2 0.2' has a value that is not a finite number"),
        ("2 0.5 0.5 0.2 0.2", "class 2 is not in names (classes 0..1)"),
        ("0.5 0.5 0.5 0.2 0.2", "class 0.5 is not in names (classes 0..1)"),
        ("0 16 12 8 8", "coordinates must be normalised to [0, 1] by the image size (32x24)"),
    ],
)
def test_yolo_bad_label_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    root = _yolo(tmp_path / "ds")
    (root / "classes.txt").write_text("cat\ndog\n")
    label = root / "labels" / "train" / "a.txt"
    label.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == f"{label}: line 2: {message}"


def test_yolo_bad_yaml_and_missing_pieces(tmp_path: Path) -> None:
    root = _yolo(tmp_path / "ds")
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == f"{root}: no data.yaml and no classes.txt or obj.names (the class names are needed)"
    with pytest.raises(DataError, match="no data.yaml, no obj.data and no images/val folder"):
        read_yolo(root, "val")
    (root / "data.yaml").write_text("train: [images/train\nnames: [a]\n")
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value).startswith(f"{root / 'data.yaml'}: not valid YAML (while parsing a flow sequence")
    (root / "data.yaml").write_text("train: images/nope\nnames: [a]\n")
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == f"{root / 'data.yaml'}: 'train' entry 'images/nope' ({root / 'images' / 'nope'}) does not exist"
    (root / "data.yaml").write_text("train: images/train\n")
    with pytest.raises(DataError, match="'names' is missing"):
        read_yolo(root)


def test_yolo_reads_coco128_seg_labels(tmp_path: Path) -> None:
    """The YOLO-seg labels coco128-seg's JSON was made from give the same objects as the JSON."""
    shared = _shared("coco128-seg")
    coco = read_coco(shared / "annotations.json")
    # Folder layout (b) through links; class k is the k-th COCO category in id order.
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "train2017").symlink_to(shared / "images" / "train2017")
    (tmp_path / "labels" / "train2017").symlink_to(shared / "labels" / "train2017")
    (tmp_path / "classes.txt").write_text("\n".join(c.name for c in coco.categories) + "\n")
    aset = read_yolo(tmp_path, "train2017")
    assert (len(aset.images), len(aset.instances)) == (128, 929)
    assert aset.report.clipped == 0 and aset.report.dropped == []
    coco_id = [c.id for c in coco.categories]

    def objects(s: AnnotationSet, to_coco: list[int] | None) -> list[tuple]:
        files = {i.id: i.file_name for i in s.images}
        return sorted((files[a.image_id], to_coco[a.category_id] if to_coco else a.category_id, a.bbox) for a in s.instances)

    ours, theirs = objects(aset, coco_id), objects(coco, None)
    assert [o[:2] for o in ours] == [t[:2] for t in theirs]
    # The labels hold 6 decimals of the image size, so pixel boxes agree to about 1e-3.
    assert max(abs(a - b) for o, t in zip(ours, theirs) for a, b in zip(o[2], t[2])) < 0.002
    assert all(isinstance(a.segmentation, list) and len(a.segmentation[0]) >= 6 for a in aset.instances)


# --- dispatch -----------------------------------------------------------------------------------------


def test_read_split_dispatch(tmp_path: Path) -> None:
    _write_json(tmp_path / "coco" / "ann" / "train.json", _coco())
    aset = read_split("coco", tmp_path / "coco", "ann/train.json", images=tmp_path / "coco" / "pics")
    assert aset.image_root == tmp_path / "coco" / "pics" and len(aset.instances) == 3
    _image(tmp_path / "coco" / "ann" / "a.jpg")  # found beside the JSON (a folder holding none is an error)
    assert read_split("coco", tmp_path, str(tmp_path / "coco" / "ann" / "train.json")).images[0].id == 0
    assert len(read_split("voc", _voc(tmp_path / "voc"), "train").images) == 3
    with pytest.raises(DataError) as err:
        read_split("pascal", tmp_path, "train")
    assert str(err.value) == ("unknown annotation format 'pascal' (expected one of: coco, voc, yolo, cvat, labelstudio, "
                              "labelme, csv)")
