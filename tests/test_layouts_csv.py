"""Box CSV (`data.format: csv`, detection) as datasets ship it: the TensorFlow Object Detection API's columns,
Roboflow's "Tensorflow CSV" export (split folders with `_annotations.csv`), keras-retinanet's headerless rows
with `classes.csv`; header variants; write -> read round trips; malformed rows named by file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_main
from layout_kit import check_convert_train, write_jpeg
from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.formats.registry import read_dataset, read_split, write_dataset
from visiontl.errors import DataError

TF_HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def _jpegs(folder: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        write_jpeg(folder / name, seed=k)


# --- the layouts, each checked, converted and trained ------------------------------------------------------


def test_tensorflow_object_detection_api_csv(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """The TF Object Detection API tutorials: `xml_to_csv.py` writes `train_labels.csv` / `test_labels.csv`
    beside `images/`, file names bare."""
    root = tmp_path / "raccoon"
    _jpegs(root / "images", ["raccoon-1.jpg", "raccoon-2.jpg", "raccoon-3.jpg", "raccoon-4.jpg"])
    (root / "train_labels.csv").write_text(
        TF_HEADER + "raccoon-1.jpg,64,48,raccoon,4,5,40,30\nraccoon-1.jpg,64,48,raccoon,30,20,60,44\n"
        "raccoon-2.jpg,64,48,raccoon,10,8,50,40\nraccoon-3.jpg,64,48,raccoon,0,0,64,48\n")
    (root / "test_labels.csv").write_text(TF_HEADER + "raccoon-4.jpg,64,48,raccoon,12,10,44,38\n")
    check_convert_train(capsys, tmp_path, "csv", root / "train_labels.csv",
                        {"root": str(root), "train": "train", "val": "test"}, images=3, boxes=4)


def test_roboflow_tensorflow_csv_export(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Roboflow's "Tensorflow CSV": `train/`, `valid/`, `test/`, each with its images and `_annotations.csv`,
    and two READMEs at the top. The val split names its classes in another order (matched by name)."""
    root = tmp_path / "export"
    train = ["BloodImage_00000_jpg.rf.3c1f5a.jpg", "BloodImage_00001_jpg.rf.9e02bb.jpg",
             "BloodImage_00002_jpg.rf.71d4c0.jpg"]
    _jpegs(root / "train", train)
    _jpegs(root / "valid", ["BloodImage_00010_jpg.rf.5a6b7c.jpg"])
    _jpegs(root / "test", ["BloodImage_00020_jpg.rf.0d1e2f.jpg"])
    (root / "README.roboflow.txt").write_text("Exported via roboflow.com\n")
    (root / "README.dataset.txt").write_text("# cells > raw\n")
    (root / "train" / "_annotations.csv").write_text(
        TF_HEADER + f"{train[0]},64,48,RBC,3,4,20,18\n{train[0]},64,48,WBC,25,10,60,40\n"
        f"{train[1]},64,48,Platelets,40,30,50,40\n{train[1]},64,48,RBC,5,5,30,25\n{train[2]},64,48,WBC,8,6,36,30\n")
    (root / "valid" / "_annotations.csv").write_text(
        TF_HEADER + "BloodImage_00010_jpg.rf.5a6b7c.jpg,64,48,WBC,8,6,36,30\n"
        "BloodImage_00010_jpg.rf.5a6b7c.jpg,64,48,RBC,40,20,60,44\n")
    (root / "test" / "_annotations.csv").write_text(TF_HEADER + "BloodImage_00020_jpg.rf.0d1e2f.jpg,64,48,RBC,1,2,30,30\n")
    check_convert_train(capsys, tmp_path, "csv", root / "train",
                        {"root": str(root), "train": "train", "val": "valid"}, images=3, boxes=5)
    val = read_split("csv", root, "valid")
    assert [c.name for c in val.categories] == ["WBC", "RBC"]  # before alignment: its own first appearance


def test_keras_retinanet_headerless_csv_with_class_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """keras-retinanet: `path,x1,y1,x2,y2,class_name` without a header, `path,,,,,` for an image without
    boxes, and `classes.csv` (`class_name,id`) beside; paths relative to the CSV's folder."""
    root = tmp_path / "retinanet"
    _jpegs(root / "images", ["img_001.jpg", "img_002.jpg", "img_003.jpg", "img_004.jpg", "img_005.jpg"])
    (root / "classes.csv").write_text("cat,0\ndog,1\nbird,2\n")
    (root / "train.csv").write_text("images/img_001.jpg,3,4,30,40,cat\nimages/img_001.jpg,30,10,60,44,dog\n"
                                    "images/img_002.jpg,,,,,\nimages/img_003.jpg,5,6,50,40,dog\n")
    (root / "val.csv").write_text("images/img_004.jpg,10,10,40,40,cat\nimages/img_005.jpg,,,,,\n")
    check_convert_train(capsys, tmp_path, "csv", root / "train.csv",
                        {"root": str(root), "train": "train", "val": "val"}, images=3, boxes=3)
    aset = read_dataset("csv", root / "train.csv")
    assert [(c.id, c.name) for c in aset.categories] == [(0, "cat"), (1, "dog"), (2, "bird")]
    assert [im.file_name for im in aset.images] == ["images/img_001.jpg", "images/img_002.jpg", "images/img_003.jpg"]
    assert [im.width for im in aset.images] == [64, 64, 64]  # no size columns: read from the image headers
    assert [(i.image_id, i.category_id, i.bbox) for i in aset.instances] == \
        [(1, 0, (3.0, 4.0, 27.0, 36.0)), (1, 1, (30.0, 10.0, 30.0, 34.0)), (3, 1, (5.0, 6.0, 45.0, 34.0))]


# --- header variants and the configuration -----------------------------------------------------------------


def test_header_in_any_order_with_aliases_and_no_size(tmp_path: Path) -> None:
    _jpegs(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "boxes.csv").write_text("Label, X_Min,Y_MIN,x_max,Y_Max,Image_Path,Difficult\n"
                                        "dog,1.5,2,10,12,a.jpg,1\ncat,0,0,5,5,b.jpg,\n")
    aset = read_dataset("csv", tmp_path)  # the folder's only CSV
    assert [(im.file_name, im.width, im.height) for im in aset.images] == [("a.jpg", 64, 48), ("b.jpg", 64, 48)]
    assert [(c.id, c.name) for c in aset.categories] == [(1, "dog"), (2, "cat")]
    assert [i.bbox for i in aset.instances] == [(1.5, 2.0, 8.5, 10.0), (0.0, 0.0, 5.0, 5.0)]
    assert [i.attributes for i in aset.instances] == [{"difficult": "1"}, {}]


def test_hand_written_rows_with_spaces_after_the_commas(tmp_path: Path) -> None:
    _jpegs(tmp_path / "images", ["a.jpg"])
    (tmp_path / "classes.csv").write_text("class,id\n dog, 4\n")
    (tmp_path / "boxes.csv").write_text("images/a.jpg, 1, 2, 10, 12, dog\n")
    aset = read_dataset("csv", tmp_path / "boxes.csv")
    assert [(c.id, c.name) for c in aset.categories] == [(4, "dog")]
    assert [(im.file_name, i.bbox) for im, i in zip(aset.images, aset.instances)] == [("images/a.jpg", (1.0, 2.0, 9.0, 10.0))]


def test_detection_csv_validates_and_classification_csv_is_unchanged() -> None:
    from visiontl.config import TASK_FORMATS, DataConfig, build_config

    assert TASK_FORMATS["classification"] == ("imagefolder", "csv")
    assert "csv" in TASK_FORMATS["detection"] and "csv" not in TASK_FORMATS["segmentation"]
    assert build_config({"task": "detection", "data": {"format": "csv"}}).data.format == "csv"
    assert build_config({"task": "classification", "data": {"format": "csv"}}).data.format == "csv"
    with pytest.raises(Exception, match="does not fit task 'segmentation'"):
        build_config({"task": "segmentation", "data": {"format": "csv"}})
    assert "csv" in DataConfig.model_fields["format"].description


# --- write -> read ----------------------------------------------------------------------------------------


def _tricky_set(root: Path) -> AnnotationSet:
    categories = [Category(3, 'big, "red" bus'), Category(7, "person"), Category(9, "unused")]
    images = [ImageRecord(1, "sub/a, b.jpg", 64, 48), ImageRecord(2, "empty.jpg", 64, 48), ImageRecord(3, "c.jpg", 64, 48)]
    instances = [Instance(1, 1, 3, (0.1, 0.2, 10.3, 20.7)), Instance(2, 1, 7, (1 / 3, 2 / 3, 5.0, 6.0)),
                 Instance(3, 3, 7, (4.0, 5.0, 6.0, 7.0))]
    for img in images:
        write_jpeg(root / img.file_name)
    return AnnotationSet(categories, images, instances, root)


def test_write_then_read_keeps_every_box_class_id_and_image(tmp_path: Path) -> None:
    original = _tricky_set(tmp_path / "src")
    report = write_dataset(original, "csv", tmp_path / "out", "valid", copy_images=True)
    assert report.images == 3 and report.boxes == 3 and not report.lost
    text = (tmp_path / "out" / "valid" / "_annotations.csv").read_text()
    assert text.splitlines()[:3] == ["filename,width,height,class,xmin,ymin,xmax,ymax",
                                     '"sub/a, b.jpg",64,48,"big, ""red"" bus",0.1,0.2,10.4,20.9',
                                     f'"sub/a, b.jpg",64,48,person,{1 / 3!r},{2 / 3!r},{1 / 3 + 5.0!r},{2 / 3 + 6.0!r}']
    assert "empty.jpg,64,48,,,,,\n" in text  # an image without boxes: keras-retinanet's empty row
    back = read_dataset("csv", tmp_path / "out", split="valid")
    assert back.image_root == tmp_path / "out" / "valid"  # the copied images, beside the CSV
    assert [(c.id, c.name) for c in back.categories] == [(c.id, c.name) for c in original.categories]
    assert [(im.file_name, im.width, im.height) for im in back.images] == \
        [(im.file_name, im.width, im.height) for im in original.images]
    for a, b in zip(original.instances, back.instances):
        assert (a.image_id, a.category_id) == (b.image_id, b.category_id)
        x, y, w, h = a.bbox
        assert b.bbox[:2] == (x, y) and b.bbox[2] == pytest.approx(w, abs=1e-12) and b.bbox[3] == pytest.approx(h, abs=1e-12)
        assert (b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]) == (x + w, y + h)  # the corners exactly


def test_write_names_what_a_box_csv_cannot_hold(tmp_path: Path) -> None:
    aset = _tricky_set(tmp_path / "src")
    aset.instances[0].segmentation = [[0.1, 0.2, 10.4, 0.2, 10.4, 20.9]]
    aset.instances[1].iscrowd = True
    aset.instances[2].score = 0.5
    lost = write_dataset(aset, "csv", tmp_path / "out").lost
    assert len(lost) == 3
    assert "polygon written as its box" in lost[0] and "crowd region not written" in lost[1] and "score 0.5" in lost[2]
    back = read_dataset("csv", tmp_path / "out", images=tmp_path / "src")
    assert len(back.instances) == 2


# --- malformed rows: one line naming the file and the line ---------------------------------------------------


@pytest.mark.parametrize("content,message", [
    (TF_HEADER + "a.jpg,64,48,dog,1,2,10,12\na.jpg,64,48,dog,1,2,10\n", "line 3: 7 fields; expected 8"),
    (TF_HEADER + "a.jpg,64,48,dog,1,two,10,12\n", "line 2: ymin 'two' is not a number"),
    (TF_HEADER + "a.jpg,64,48,dog,10,2,1,12\n", "line 2: box corners (10, 2) - (1, 12) are in the wrong order"),
    (TF_HEADER + "/etc/passwd,64,48,dog,1,2,10,12\n", "line 2: image file name '/etc/passwd' is not a path inside"),
    (TF_HEADER + "../a.jpg,64,48,dog,1,2,10,12\n", "line 2: image file name '../a.jpg' is not a path inside"),
    (TF_HEADER + "a.jpg,64,48,,1,2,10,12\n", "line 2: a box without a class"),
    (TF_HEADER + "a.jpg,64,48,dog,1,2,10,12\na.jpg,32,48,dog,1,2,10,12\n", "line 3: size 32x48, but an earlier row"),
    (TF_HEADER + "a.jpg,64.5,48,dog,1,2,10,12\n", "line 2: image width '64.5' is not a positive whole number"),
    ("filename,class,xmin,ymin,width,height\na.jpg,dog,1,2,3,4\n", "line 1: the header names no column for xmax"),
    ("a.jpg,1,2,10,12\n", "line 1: 5 fields; expected 6 (path,x1,y1,x2,y2,class without a header"),
    (TF_HEADER + 'a.jpg,64,48,"dog,1,2,10,12\n', "not valid CSV"),
    (TF_HEADER + "a.jpg,64,48,dog,1,2,10,12\na.jpg,64,48," + "d" * 200_000 + ",1,2,10,12\n",
     "line 3: not valid CSV (field larger than field limit"),
])
def test_a_malformed_row_is_one_line_naming_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    write_jpeg(tmp_path / "a.jpg")
    (tmp_path / "boxes.csv").write_text(content)
    with pytest.raises(DataError) as err:
        read_dataset("csv", tmp_path / "boxes.csv")
    assert str(err.value).startswith(f"{tmp_path / 'boxes.csv'}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_class_missing_from_the_class_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_jpeg(tmp_path / "a.jpg")
    (tmp_path / "classes.csv").write_text("cat,0\n")
    (tmp_path / "train.csv").write_text("a.jpg,1,2,10,12,cat\na.jpg,1,2,10,12,dog\n")
    code, out, err = run_main(["data", "check", str(tmp_path / "train.csv"), "--format", "csv"], capsys)
    assert code != 0 and "Traceback" not in out + err
    assert f"{tmp_path / 'train.csv'}: line 2: class 'dog' is not in {tmp_path / 'classes.csv'} (cat)" in out + err
    (tmp_path / "classes.csv").write_text("cat,0\ndog,zero\n")
    with pytest.raises(DataError, match=r"classes.csv: line 2: id 'zero' is not a whole number"):
        read_dataset("csv", tmp_path / "train.csv")
