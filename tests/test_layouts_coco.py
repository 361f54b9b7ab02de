"""COCO as datasets come (issue 16, item 3): COCO 2017 as downloaded, Datumaro's and Roboflow's COCO exports,
and image folders named per split. Each dataset is written in its exporter's exact shape (folder names, file
names, the JSON's fields) and checked, converted and trained for 2 steps with only the keys docs/data.md names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from layout_kit import check_convert_train, write_jpeg
from visiontl.data.formats.registry import read_split
from visiontl.errors import DataError

W, H = 64, 48
BOXES = ([8, 6, 20, 16], [30, 20, 24, 18])  # x, y, w, h


def _coco_document(images: list[tuple[int, str]], categories: list[dict[str, Any]], first_category: int,
                   image_fields: dict[str, Any] | None = None, annotation_fields: dict[str, Any] | None = None,
                   top: dict[str, Any] | None = None) -> dict[str, Any]:
    """images: (id, file_name); image k has k % 2 + 1 boxes, of the categories from `first_category` on."""
    annotations = []
    for k, (image_id, _) in enumerate(images):
        for j in range(k % 2 + 1):
            x, y, w, h = BOXES[j]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": first_category + j,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "area": float(w * h),
                                "bbox": [x, y, w, h], "iscrowd": 0, **(annotation_fields or {})})
    return {**(top or {}),
            "images": [{"id": i, "file_name": name, "width": W, "height": H, **(image_fields or {})}
                       for i, name in images],
            "annotations": annotations, "categories": categories}


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _boxes(images: int) -> int:
    return sum(k % 2 + 1 for k in range(images))


# --- COCO 2017 as downloaded ----------------------------------------------------------------------------

COCO_CATEGORIES = [{"supercategory": "person", "id": 1, "name": "person"},
                   {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
                   {"supercategory": "vehicle", "id": 3, "name": "car"}]


def coco2017(root: Path, image_folder: str = "{split}") -> Path:
    """annotations/instances_{train,val}2017.json (with info, licenses, coco_url, flickr_url) and the images
    in train2017/, val2017/ beside annotations/ (or where `image_folder` says)."""
    ids = {"train2017": [9, 25, 30], "val2017": [139, 285]}
    for split, image_ids in ids.items():
        names = [(i, f"{i:012d}.jpg") for i in image_ids]
        for k, (_, name) in enumerate(names):
            write_jpeg(root / image_folder.format(split=split) / name, W, H, seed=k)
        _write(root / "annotations" / f"instances_{split}.json", _coco_document(
            names, COCO_CATEGORIES, 1,
            image_fields={"license": 4, "coco_url": f"http://images.cocodataset.org/{split}/x.jpg",
                          "date_captured": "2013-11-14 17:02:52", "flickr_url": "http://farm7.staticflickr.com/x.jpg"},
            top={"info": {"description": "COCO 2017 Dataset", "url": "http://cocodataset.org", "version": "1.0",
                          "year": 2017, "contributor": "COCO Consortium", "date_created": "2017/09/01"},
                 "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 4,
                               "name": "Attribution-NonCommercial-ShareAlike License"}]}))
    return root


@pytest.mark.parametrize("image_folder", ["{split}", "images/{split}"])
def test_coco2017_trains_from_its_two_json_files(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                 image_folder: str) -> None:
    root = coco2017(tmp_path / "coco", image_folder)
    check_convert_train(capsys, tmp_path, "coco", root / "annotations" / "instances_train2017.json",
                        {"root": root, "train": "annotations/instances_train2017.json",
                         "val": "annotations/instances_val2017.json"}, images=3, boxes=_boxes(3))


def test_coco2017_without_its_val_images_is_one_line_naming_the_folders_tried(tmp_path: Path) -> None:
    root = coco2017(tmp_path / "coco")
    for image in (root / "val2017").iterdir():
        image.unlink()
    with pytest.raises(DataError) as err:
        read_split("coco", root, "annotations/instances_val2017.json")
    json_path = root / "annotations" / "instances_val2017.json"
    assert str(err.value) == (
        f"{json_path}: its images ('000000000139.jpg', '000000000285.jpg') are in none of the folders tried in "
        f"{root}: annotations/, annotations/val2017/, annotations/images/val2017/, val2017/, images/val2017/, "
        "annotations/images/, images/; name their folder with data.images (per split: data.train_images, "
        "data.val_images; data commands: --images)")


def test_a_split_name_finds_its_json_in_each_layout(tmp_path: Path) -> None:
    coco = coco2017(tmp_path / "coco")
    datumaro = datumaro_coco(tmp_path / "datumaro")
    roboflow = roboflow_coco(tmp_path / "roboflow")
    found = {(root, split): read_split("coco", root, split).report.source
             for root, split in ((coco, "val2017"), (datumaro, "val"), (roboflow, "val"), (roboflow, "test"))}
    assert found == {(coco, "val2017"): str(coco / "annotations" / "instances_val2017.json"),
                     (datumaro, "val"): str(datumaro / "annotations" / "instances_val.json"),
                     (roboflow, "val"): str(roboflow / "valid" / "_annotations.coco.json"),
                     (roboflow, "test"): str(roboflow / "test" / "_annotations.coco.json")}
    with pytest.raises(DataError) as err:
        read_split("coco", coco, "val")
    assert str(err.value) == (f"{coco}: no COCO file for split 'val': none of val/_annotations.coco.json, "
                              "valid/_annotations.coco.json, annotations/instances_val.json, val.json exists; "
                              "name the JSON file (data.train / data.val, relative to data.root)")


def test_coco2017_trains_segmentation_from_the_same_files(tmp_path: Path) -> None:
    """task: segmentation reads data.format coco through the same reader: the image folders are found."""
    from visiontl.config import build_config
    from visiontl.tasks.segmentation import SegmentationTask

    root = coco2017(tmp_path / "coco")
    cfg = build_config({"task": "segmentation", "data": {
        "format": "coco", "root": str(root), "train": "annotations/instances_train2017.json",
        "val": "annotations/instances_val2017.json"}})
    data = SegmentationTask(cfg).prepare_data(cfg)
    assert (data.train.image_root, data.val.image_root) == (root / "train2017", root / "val2017")
    assert data.classes == ["background", "person", "bicycle", "car"]


def test_an_image_name_the_file_system_cannot_hold_is_looked_for_not_a_traceback(tmp_path: Path) -> None:
    long = "x" * 300 + ".jpg"  # longer than a file name may be (ENAMETOOLONG from stat)
    json_path = _write(tmp_path / "annotations.json", _coco_document([(1, long)], COCO_CATEGORIES, 1))
    with pytest.raises(DataError) as err:
        read_split("coco", tmp_path, "annotations.json")
    assert str(err.value).startswith(f"{json_path}: its images ('{'x' * 60}...') are in none of the folders tried")


# --- Datumaro's COCO export -----------------------------------------------------------------------------


def datumaro_coco(root: Path) -> Path:
    """`datum export -f coco --save-media`: annotations/instances_<subset>.json, images/<subset>/; the same
    file names in both subsets (frame numbers), so only the subset names the folder."""
    for subset, count in (("train", 3), ("val", 2)):
        names = [(k + 1, f"frame_{k:06d}.jpg") for k in range(count)]
        for k, (_, name) in enumerate(names):
            write_jpeg(root / "images" / subset / name, W, H, seed=k + (10 if subset == "val" else 0))
        _write(root / "annotations" / f"instances_{subset}.json", _coco_document(
            names, [{"id": 1, "name": "car", "supercategory": ""}, {"id": 2, "name": "person", "supercategory": ""}],
            1, image_fields={"license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0},
            annotation_fields={"attributes": {"occluded": False}},
            top={"licenses": [{"name": "", "id": 0, "url": ""}],
                 "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "",
                          "year": ""}}))
    return root


def test_datumaro_coco_export_trains_with_the_default_split_names(capsys: pytest.CaptureFixture,
                                                                   tmp_path: Path) -> None:
    root = datumaro_coco(tmp_path / "export")
    check_convert_train(capsys, tmp_path, "coco", root / "annotations" / "instances_train.json",
                        {"root": root}, images=3, boxes=_boxes(3))  # data.train / data.val: train, val


def test_the_split_in_the_json_name_picks_its_folder_among_folders_holding_the_same_names(tmp_path: Path) -> None:
    root = datumaro_coco(tmp_path / "export")
    val = read_split("coco", root, "annotations/instances_val.json")
    assert val.image_root == root / "images" / "val"  # images/train/ holds frame_000000.jpg too, and sorts first


# --- Roboflow's COCO export -----------------------------------------------------------------------------


def roboflow_coco(root: Path) -> Path:
    """Roboflow's "COCO JSON" download: train/, valid/, test/, each with _annotations.coco.json beside its
    images; category 0 is the dataset's supercategory-only entry, file names carry Roboflow's `.rf.<hash>`."""
    (root / "README.roboflow.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "README.roboflow.txt").write_text("\nCells - v1 2024-01-01\n==============================\n")
    (root / "README.dataset.txt").write_text("# Cells > 2024-01-01\n")
    categories = [{"id": 0, "name": "cells", "supercategory": "none"},
                  {"id": 1, "name": "Platelets", "supercategory": "cells"},
                  {"id": 2, "name": "RBC", "supercategory": "cells"}]
    for split, count in (("train", 3), ("valid", 2), ("test", 1)):
        names = []
        for k in range(count):
            name = f"BloodImage_{split}_{k:05d}_jpg.rf.{k:032x}.jpg"
            write_jpeg(root / split / name, W, H, seed=k)
            names.append((k, name))
        _write(root / split / "_annotations.coco.json", _coco_document(
            names, categories, 1, image_fields={"license": 1, "date_captured": "2024-01-01T00:00:00+00:00"},
            top={"info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com",
                          "contributor": "", "url": "https://public.roboflow.com/object-detection/cells",
                          "date_created": "2024-01-01T00:00:00+00:00"},
                 "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}]}))
    return root


def test_roboflow_coco_export_trains_with_the_default_split_names(capsys: pytest.CaptureFixture,
                                                                   tmp_path: Path) -> None:
    root = roboflow_coco(tmp_path / "cells.v1i.coco")
    check_convert_train(capsys, tmp_path, "coco", root / "train" / "_annotations.coco.json",
                        {"root": root}, images=3, boxes=_boxes(3))  # val: Roboflow's valid/


# --- image folders named per split ----------------------------------------------------------------------


def test_image_folders_named_per_split_train_together(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Train and val images in folders no layout names: data.train_images and data.val_images name them, and
    a named folder wins over one that would be found (labels/ holds files of the same names, not images)."""
    root = tmp_path / "mine"
    for split, folder, count in (("train", "shots/2023", 3), ("val", "shots/2024", 2)):
        names = [(k, f"img_{k}.jpg") for k in range(count)]
        for k, (_, name) in enumerate(names):
            write_jpeg(root / folder / name, W, H, seed=k)
            (root / "labels" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "labels" / name).write_text("not an image")
        _write(root / "labels" / f"{split}.json", _coco_document(names, COCO_CATEGORIES, 1))
    check_convert_train(capsys, tmp_path, "coco", root / "labels" / "train.json",
                        {"root": root, "train": "labels/train.json", "val": "labels/val.json",
                         "train_images": "shots/2023", "val_images": "shots/2024"},
                        check_args=("--images", str(root / "shots" / "2023")), images=3, boxes=_boxes(3))
