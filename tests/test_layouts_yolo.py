"""YOLO layouts as exporters write them (docs/data.md, "Layouts as datasets come"): each is checked, converted to
COCO and trained for 2 steps with data.format and data.root only."""

from __future__ import annotations

from pathlib import Path

import pytest
from layout_kit import check_convert_train, write_jpeg

from visiontl.data.formats.registry import read_split
from visiontl.data.formats.yolo import read_yolo
from visiontl.errors import DataError

# Two objects per image (cat, dog), as normalised `class cx cy w h` lines of a 64x48 image.
LABEL = "0 0.250000 0.333333 0.250000 0.333333\n1 0.656250 0.583333 0.312500 0.416667\n"


def _pair(image: Path, label: Path, seed: int) -> None:
    write_jpeg(image, seed=seed)
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text(LABEL)


def _cvat_yolo_1_1(root: Path, images: bool = True) -> Path:
    """CVAT's "YOLO 1.1" export of a task with subsets train and valid (Datumaro's yolo converter): obj.data
    naming darknet's `data/` paths, obj.names, a list per subset, obj_<subset>_data/ with a .txt beside each
    image (the images only when exported with them)."""
    (root / "obj.data").parent.mkdir(parents=True)
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nvalid = data/valid.txt\n"
                                   "names = data/obj.names\nbackup = backup/\n")
    (root / "obj.names").write_text("cat\ndog\n")
    for subset, frames in (("train", range(3)), ("valid", range(3, 5))):
        lines = []
        for n in frames:
            image = root / f"obj_{subset}_data" / f"frame_{n:06d}.jpg"
            _pair(image, image.with_suffix(".txt"), n)
            if not images:
                image.unlink()
            lines.append(f"data/obj_{subset}_data/{image.name}\n")
        (root / f"{subset}.txt").write_text("".join(lines))
    return root


def test_cvat_yolo_1_1(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    root = _cvat_yolo_1_1(tmp_path / "task_1-yolo 1.1")
    check_convert_train(capsys, tmp_path, "yolo", root, {"root": root}, images=3, boxes=6)
    aset = read_yolo(root, "valid")
    assert aset.image_root == root / "obj_valid_data"
    assert [i.file_name for i in aset.images] == ["frame_000003.jpg", "frame_000004.jpg"]
    assert aset.report.source == str(root / "valid.txt")


def test_cvat_yolo_1_1_without_images_reads_them_from_data_images(tmp_path: Path) -> None:
    root = _cvat_yolo_1_1(tmp_path / "export", images=False)
    frames = tmp_path / "frames"
    for n in range(5):
        write_jpeg(frames / f"frame_{n:06d}.jpg", seed=n)
    aset = read_split("yolo", root, "val", images=frames)
    assert aset.image_root == frames
    assert [i.file_name for i in aset.images] == ["frame_000003.jpg", "frame_000004.jpg"]
    assert len(aset.instances) == 4
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == f"{root / 'obj_train_data' / 'frame_000000.jpg'}: image file not found"


def test_darknet_training_folder_with_labels_folder(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """AlexeyAB darknet's own layout: data/obj.data, data/obj.names, data/train.txt and data/test.txt naming
    data/images/*.jpg, whose labels darknet finds in the parallel data/labels/."""
    root = tmp_path / "darknet"
    data = root / "data"
    data.mkdir(parents=True)
    (data / "obj.data").write_text("classes= 2\ntrain  = data/train.txt\nvalid  = data/test.txt\n"
                                   "names = data/obj.names\nbackup = backup/\n")
    (data / "obj.names").write_text("cat\ndog\n")
    for name, seeds in (("train", range(4)), ("test", range(4, 6))):
        for n in seeds:
            _pair(data / "images" / f"img{n}.jpg", data / "labels" / f"img{n}.txt", n)
        (data / f"{name}.txt").write_text("".join(f"data/images/img{n}.jpg\n" for n in seeds))
    check_convert_train(capsys, tmp_path, "yolo", root, {"root": root}, images=4, boxes=8)


def test_roboflow_yolov8(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Roboflow's YOLOv8 export: data.yaml with `../<split>/images` paths (Ultralytics reads them without the
    `../`), `nc`, `names` and a `roboflow` block; <split>/images and <split>/labels; hashed file names."""
    root = tmp_path / "Pets.v1i.yolov8"
    (root / "data.yaml").parent.mkdir(parents=True)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\nnames: ['cat', 'dog']\n\n"
        "roboflow:\n  workspace: demo\n  project: pets\n  version: 1\n  license: CC BY 4.0\n"
        "  url: https://universe.roboflow.com/demo/pets/dataset/1\n")
    (root / "README.roboflow.txt").write_text("Pets - v1\n")
    for split, seeds in (("train", range(3)), ("valid", range(3, 5)), ("test", range(5, 6))):
        for n in seeds:
            stem = f"IMG_{n:04d}_jpg.rf.{n:032x}"
            _pair(root / split / "images" / f"{stem}.jpg", root / split / "labels" / f"{stem}.txt", n)
    check_convert_train(capsys, tmp_path, "yolo", root, {"root": root}, images=3, boxes=6)
    assert read_yolo(root, "test").image_root == root / "test" / "images"


def test_ultralytics_yaml_with_path(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Ultralytics' datasets folder: coco8.yaml beside coco8/, its `path` naming that folder and the splits
    relative to it (images/<split>, labels/<split>)."""
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "coco8.yaml").write_text(
        "# two classes of COCO\npath: coco8 # dataset root dir\ntrain: images/train\nval: images/val\ntest:\n\n"
        "names:\n  0: cat\n  1: dog\n\ndownload: https://example.org/coco8.zip\n")
    for split, seeds in (("train", range(4)), ("val", range(4, 6))):
        for n in seeds:
            stem = f"{n:012d}"
            _pair(root / "coco8" / "images" / split / f"{stem}.jpg", root / "coco8" / "labels" / split / f"{stem}.txt", n)
    check_convert_train(capsys, tmp_path, "yolo", root, {"root": root}, images=4, boxes=8)


def test_plain_images_labels_with_obj_names(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    root.mkdir()
    (root / "obj.names").write_text("cat\ndog\n")
    for split, seeds in (("train", range(3)), ("val", range(3, 5))):
        for n in seeds:
            _pair(root / "images" / split / f"{n}.jpg", root / "labels" / split / f"{n}.txt", n)
    check_convert_train(capsys, tmp_path, "yolo", root, {"root": root}, images=3, boxes=6)


# --- paths the files name stay inside the dataset -------------------------------------------------------


def test_ultralytics_path_outside_the_yaml_folder_means_the_yaml_folder(tmp_path: Path) -> None:
    """Ultralytics' coco8.yaml kept inside the dataset: its `path: ../datasets/coco8` is relative to
    Ultralytics' own datasets folder; here the dataset is the yaml's folder."""
    root = tmp_path / "coco8"
    _pair(root / "images" / "train" / "a.jpg", root / "labels" / "train" / "a.txt", 0)
    (root / "coco8.yaml").write_text("path: ../datasets/coco8\ntrain: images/train\nnames: [cat, dog]\n")
    aset = read_yolo(root)
    assert aset.image_root == root / "images" / "train" and len(aset.instances) == 2


def test_yaml_entry_that_leaves_the_dataset_is_refused(tmp_path: Path) -> None:
    _pair(tmp_path / "elsewhere" / "images" / "a.jpg", tmp_path / "elsewhere" / "labels" / "a.txt", 0)
    root = tmp_path / "ds"
    root.mkdir()
    (root / "data.yaml").write_text("train: ../../elsewhere/images\nnames: [cat, dog]\n")
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == (f"{root / 'data.yaml'}: 'train' entry '../../elsewhere/images' is not a path inside "
                              f"the dataset folder ({root})")
    # `../` once is Roboflow's quirk: read inside the dataset, never the sibling folder of that name.
    (root / "data.yaml").write_text("train: ../elsewhere/images\nnames: [cat, dog]\n")
    with pytest.raises(DataError, match=r"'train' entry '../elsewhere/images' \(.*/ds/elsewhere/images\) does not exist"):
        read_yolo(root)


@pytest.mark.parametrize("line", ["/etc/passwd.jpg", "data/../../x.jpg", "../x.jpg"])
def test_darknet_list_line_that_leaves_the_dataset_is_refused(tmp_path: Path, line: str) -> None:
    root = _cvat_yolo_1_1(tmp_path / "export")
    (root / "train.txt").write_text(f"data/obj_train_data/frame_000000.jpg\n{line}\n")
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == f"{root / 'train.txt'}: line 2: {line!r} is not a path inside the dataset folder ({root})"


def test_darknet_names_and_split_errors_name_the_file(tmp_path: Path) -> None:
    root = _cvat_yolo_1_1(tmp_path / "export")
    data = root / "obj.data"
    with pytest.raises(DataError) as err:
        read_yolo(data, "test")
    assert str(err.value) == f"{data}: no 'test' list and no obj_test_data folder (it has: train, valid)"
    (root / "obj.names").unlink()
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == f"{data}: names file 'data/obj.names' not found (the class names are needed)"
    data.write_text("classes = 2\ntrain data/train.txt\n")
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == f"{data}: line 2: 'train data/train.txt' is not 'key = value'"


def test_cvat_image_names_keep_their_sub_folders(tmp_path: Path) -> None:
    root = _cvat_yolo_1_1(tmp_path / "export")
    _pair(root / "obj_train_data" / "seq1" / "a.jpg", root / "obj_train_data" / "seq1" / "a.txt", 7)
    (root / "train.txt").write_text("data/obj_train_data/seq1/a.jpg\n")
    aset = read_yolo(root)
    assert aset.image_root == root / "obj_train_data"
    assert [i.file_name for i in aset.images] == ["seq1/a.jpg"] and len(aset.instances) == 2


def test_converted_without_copying_images_reads_them_from_data_images(capsys: pytest.CaptureFixture,
                                                                        tmp_path: Path) -> None:
    from conftest import run_main

    root = _cvat_yolo_1_1(tmp_path / "export")
    out = tmp_path / "as_yolo"
    code, _, err = run_main(["data", "convert", str(root), "--from", "yolo", "--to", "yolo", "--out", str(out),
                             "--no-copy-images"], capsys)
    assert code == 0, err
    assert not (out / "images").exists()
    code, text, err = run_main(["data", "check", str(out), "--format", "yolo", "--images",
                                str(root / "obj_train_data")], capsys)
    assert code == 0, text + err
    aset = read_yolo(out, images=root / "obj_train_data")
    assert [i.file_name for i in aset.images] == [f"frame_{n:06d}.jpg" for n in range(3)]
    assert len(aset.instances) == 6


def test_label_studio_yolo_export_is_the_train_split(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Label Studio's YOLO export: classes.txt, notes.json, images/ and labels/ without split folders."""
    from conftest import run_main

    root = tmp_path / "project-1-at-2024-01-01-00-00-0123abcd"
    root.mkdir()
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "notes.json").write_text('{"categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}], '
                                     '"info": {"year": 2024, "version": "1.0", "contributor": "Label Studio"}}')
    for n in range(3):
        _pair(root / "images" / f"{n:08x}-photo{n}.jpg", root / "labels" / f"{n:08x}-photo{n}.txt", n)
    code, text, err = run_main(["data", "check", str(root), "--format", "yolo"], capsys)
    assert code == 0, text + err
    aset = read_yolo(root)
    assert aset.image_root == root / "images" and aset.report.source == str(root / "labels")
    assert len(aset.images) == 3 and len(aset.instances) == 6
    with pytest.raises(DataError, match="no images/val folder"):
        read_yolo(root, "val")
