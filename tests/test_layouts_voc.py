"""Pascal VOC layouts as sets come (docs/data.md, "Pascal VOC"): each is generated in its exporter's exact shape,
checked, converted to COCO and trained for 2 steps with data.format, data.root and the splits only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_main
from layout_kit import check_convert_train, tiny_detection, write_jpeg
from visiontl.data.formats.registry import read_split
from visiontl.data.formats.voc import read_voc
from visiontl.errors import DataError

BOXES = [("cat", 4, 6, 30, 40), ("dog", 34, 8, 60, 44)]  # name, xmin, ymin, xmax, ymax (two per image)


def _objects(boxes=BOXES, occluded: bool = False) -> str:
    extra = "\t\t<occluded>0</occluded>\n" if occluded else ""
    return "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n{extra}\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
        f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, x1, y1, x2, y2 in boxes)


def devkit_xml(file_name: str) -> str:
    """As the VOC2007 devkit writes it."""
    return (f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{file_name}</filename>\n\t<source>\n"
            "\t\t<database>The VOC2007 Database</database>\n\t\t<annotation>PASCAL VOC2007</annotation>\n"
            "\t\t<image>flickr</image>\n\t</source>\n\t<size>\n\t\t<width>64</width>\n\t\t<height>48</height>\n"
            f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{_objects()}</annotation>\n")


def labelimg_xml(folder: str, file_name: str, path: str) -> str:
    """As labelImg saves it: the folder's name, the file name and the absolute path on the annotator's machine."""
    return (f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{file_name}</filename>\n\t<path>{path}</path>\n"
            "\t<source>\n\t\t<database>Unknown</database>\n\t</source>\n\t<size>\n\t\t<width>64</width>\n"
            f"\t\t<height>48</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{_objects()}"
            "</annotation>\n")


def roboflow_xml(file_name: str) -> str:
    """As Roboflow's "Pascal VOC" export writes it (empty folder, path = file name, occluded flags)."""
    return (f"<annotation>\n\t<folder></folder>\n\t<filename>{file_name}</filename>\n\t<path>{file_name}</path>\n"
            "\t<source>\n\t\t<database>roboflow.com</database>\n\t</source>\n\t<size>\n\t\t<width>64</width>\n"
            "\t\t<height>48</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
            f"{_objects(occluded=True)}</annotation>\n")


def _annotated(root: Path, xml_dir: str, image_dir: str, stems: list[str], xml=devkit_xml, ext: str = ".jpg") -> Path:
    for k, stem in enumerate(stems):
        write_jpeg(root / image_dir / f"{stem}{ext}", seed=k)
        (root / xml_dir).mkdir(parents=True, exist_ok=True)
        (root / xml_dir / f"{stem}.xml").write_text(xml(f"{stem}{ext}"))
    return root


def roboflow_export(root: Path) -> Path:
    """train/, valid/, test/ each with its JPEGs and XMLs side by side (Roboflow renames files
    `<name>_jpg.rf.<hash>.jpg`), and the two READMEs; no ImageSets."""
    for split, count in (("train", 4), ("valid", 2), ("test", 1)):
        for k in range(count):
            name = f"img{k}_jpg.rf.{split}{k:02d}9f3c1e.jpg"
            write_jpeg(root / split / name, seed=k)
            (root / split / name).with_suffix(".xml").write_text(roboflow_xml(name))
    (root / "README.roboflow.txt").write_text("This dataset was exported via roboflow.com\n")
    (root / "README.dataset.txt").write_text("# cells > raw\n")
    return root


def test_devkit_layout(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    root = _annotated(tmp_path / "VOC2007", "Annotations", "JPEGImages", ["000005", "000007", "000009", "000012"])
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("000005\n000007\n000009\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("000012\n")
    check_convert_train(capsys, tmp_path, "voc", root, {"root": root, "train": "train", "val": "val"}, images=4, boxes=8)


def cvat_xml(file_name: str) -> str:
    """As CVAT's "PASCAL VOC 1.1" export (Datumaro) writes it: empty folder, occluded, <attributes>."""
    objects = "".join(
        f"  <object>\n    <name>{name}</name>\n    <truncated>0</truncated>\n    <occluded>0</occluded>\n"
        f"    <difficult>0</difficult>\n    <bndbox>\n      <xmin>{x1:.1f}</xmin>\n      <ymin>{y1:.1f}</ymin>\n"
        f"      <xmax>{x2:.1f}</xmax>\n      <ymax>{y2:.1f}</ymax>\n    </bndbox>\n    <attributes>\n      <attribute>\n"
        "        <name>rotation</name>\n        <value>0.0</value>\n      </attribute>\n    </attributes>\n  </object>\n"
        for name, x1, y1, x2, y2 in BOXES)
    return (f"<annotation>\n  <folder></folder>\n  <filename>{file_name}</filename>\n  <source>\n"
            "    <database>Unknown</database>\n    <annotation>Unknown</annotation>\n    <image>Unknown</image>\n"
            "  </source>\n  <size>\n    <width>64</width>\n    <height>48</height>\n    <depth></depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{objects}</annotation>\n")


def test_cvat_voc_export(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """CVAT's export: the devkit folders, the subset's list ImageSets/Main/default.txt beside per-class lists
    (`<id> 1` / `<id> -1`), labelmap.txt (not read: the classes are the XMLs')."""
    stems = ["frame_000000", "frame_000001", "frame_000002"]
    root = _annotated(tmp_path / "task_7", "Annotations", "JPEGImages", stems, xml=cvat_xml)
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "default.txt").write_text("".join(f"{s}\n" for s in stems))
    for name in ("cat", "dog"):
        (main / f"{name}_default.txt").write_text("".join(f"{s} 1\n" for s in stems))
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:250,50,83::\n"
                                       "dog:51,221,255::\n")
    check_convert_train(capsys, tmp_path, "voc", root, {"root": root, "train": "default", "val": "default"},
                        images=3, boxes=6)


@pytest.mark.parametrize("folders", [("annotations", "images"), ("annots", "images")])
def test_annotation_and_image_folders_without_split_lists(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                          folders: tuple[str, str]) -> None:
    root = _annotated(tmp_path / "set", *folders, ["a", "b", "c", "d", "e"])
    # No split lists: train is every XML, and data.val=0.2 holds a share of it out.
    check_convert_train(capsys, tmp_path, "voc", root, {"root": root, "train": "train", "val": 0.2},
                        images=5, boxes=10)


def test_labelimg_xml_beside_the_images(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for k, stem in enumerate(["IMG_0001", "IMG_0002", "IMG_0003"]):
        write_jpeg(root / f"{stem}.jpg", seed=k)
        # labelImg writes the absolute path on the annotator's machine: never read
        (root / f"{stem}.xml").write_text(labelimg_xml("photos", f"{stem}.jpg", f"C:\\Users\\ann\\photos\\{stem}.jpg"))
    aset = read_voc(root)
    assert [img.file_name for img in aset.images] == ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"]
    assert aset.image_root == root
    check_convert_train(capsys, tmp_path, "voc", root, {"root": root, "train": "train", "val": 0.2},
                        images=3, boxes=6)


def test_labelimg_xml_beside_the_images_in_images_folder(tmp_path: Path) -> None:
    root = tmp_path / "set"
    for k, stem in enumerate(["a", "b"]):
        write_jpeg(root / "images" / f"{stem}.jpg", seed=k)
        (root / "images" / f"{stem}.xml").write_text(labelimg_xml("images", f"{stem}.jpg", f"/home/ann/set/images/{stem}.jpg"))
    aset = read_split("voc", root, "train")
    assert aset.image_root == root / "images"
    assert [img.file_name for img in aset.images] == ["a.jpg", "b.jpg"]
    assert len(aset.instances) == 4


def test_roboflow_voc_export(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    root = roboflow_export(tmp_path / "cells.voc")
    check_convert_train(capsys, tmp_path, "voc", root, {"root": root, "train": "train", "val": "valid"},
                        images=7, boxes=14)
    # read whole, the split folders share their parent as the image folder
    aset = read_voc(root)
    assert aset.image_root == root
    assert [img.file_name for img in aset.images][:2] == ["train/img0_jpg.rf.train009f3c1e.jpg",
                                                          "train/img1_jpg.rf.train019f3c1e.jpg"]
    assert [img.file_name for img in aset.images][-1] == "test/img0_jpg.rf.test009f3c1e.jpg"
    val = read_split("voc", root, "valid")
    assert val.image_root == root / "valid" and len(val.images) == 2
    code, out, _ = run_main(["data", "check", str(root), "--format", "voc", "--split", "test"], capsys)
    assert code == 0 and "0 error(s)" in out
    with pytest.raises(DataError) as err:
        read_split("voc", root, "val")
    assert str(err.value) == (f"{root}: split 'val': no list ImageSets/Main/val.txt and no folder val/ "
                              "(split folders there: train, valid, test)")


def test_image_folder_named_by_the_user(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """An image folder of no usual name: --images (check, convert) and data.images (training) name it; they
    were ignored for VOC."""
    root = _annotated(tmp_path / "set", "Annotations", "photos", ["a", "b", "c"])
    code, out, _ = run_main(["data", "check", str(root), "--format", "voc"], capsys)
    assert code == 1 and out.count("image file not found") == 3
    check_convert_train(capsys, tmp_path, "voc", root, {"root": root, "train": "train", "val": 0.2,
                                                        "images": "photos"},
                        check_args=("--images", str(root / "photos")), images=3, boxes=6)


def test_annotation_folder_named_by_the_user(tmp_path: Path) -> None:
    root = _annotated(tmp_path / "set", "xml", "images", ["a", "b"])
    with pytest.raises(DataError, match="no Annotations folder and no XML files"):
        read_split("voc", root, "train")
    with pytest.raises(DataError) as err:
        read_split("voc", root, "train", annotations=root / "xmls")
    assert str(err.value) == f"{root / 'xmls'}: no such folder (the XML folder data.annotations names)"
    aset = read_split("voc", root, "train", annotations=root / "xml")
    assert [img.file_name for img in aset.images] == ["a.jpg", "b.jpg"] and aset.image_root == root / "images"


def test_file_name_without_extension_or_stale_falls_back_to_the_xml_id(tmp_path: Path) -> None:
    root = _annotated(tmp_path / "set", "annots", "images", ["a", "b", "c"])
    (root / "annots" / "a.xml").write_text(devkit_xml("a"))  # CVAT: no extension
    (root / "annots" / "b.xml").write_text(devkit_xml("renamed_since.jpg"))  # stale
    (root / "images" / "c.jpg").rename(root / "images" / "c.JPG")
    (root / "annots" / "c.xml").write_text(devkit_xml("c.jpeg"))
    aset = read_voc(root)
    assert [img.file_name for img in aset.images] == ["a.jpg", "b.jpg", "c.JPG"]


def test_split_list_preferred_to_a_split_folder(tmp_path: Path) -> None:
    """data.train=train: the list ImageSets/Main/train.txt when it exists, else the folder train/."""
    root = _annotated(tmp_path / "set", "Annotations", "JPEGImages", ["a", "b", "c"])
    _annotated(root, "train", "train", ["x"])
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    assert [img.file_name for img in read_split("voc", root, "train").images] == ["a.jpg", "b.jpg"]
    (root / "ImageSets" / "Main" / "train.txt").unlink()
    (root / "ImageSets" / "Main" / "val.txt").write_text("c\n")
    assert [img.file_name for img in read_split("voc", root, "train").images] == ["x.jpg"]
    with pytest.raises(DataError) as err:
        read_split("voc", root, "test")
    assert str(err.value) == f"{root / 'ImageSets' / 'Main' / 'test.txt'}: split list not found (lists there: val)"


def test_set_without_splits_trains_on_every_xml(tmp_path: Path) -> None:
    root = _annotated(tmp_path / "set", "annotations", "images", ["c", "a", "b"])
    assert [img.file_name for img in read_split("voc", root, "train").images] == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(DataError) as err:
        read_split("voc", root, "val")
    assert str(err.value) == (f"{root}: split 'val': no list ImageSets/Main/val.txt and no folder val/; the set has "
                              "no splits, so data.train=train reads every XML and data.val=0.2 holds a share of them out")


def test_check_names_the_one_truncated_jpeg(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    root = _annotated(tmp_path / "set", "annots", "images", [f"img{k}" for k in range(6)])
    bad = root / "images" / "img3.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    code, out, err = run_main(["data", "check", str(root), "--format", "voc"], capsys)
    assert code == 1, out + err
    errors = [line for line in out.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "img3.jpg" in errors[0], out
    assert not any(f"img{k}.jpg" in out for k in (0, 1, 2, 4, 5))

    # train on it: data.val=0.2 makes the val split, data.on_bad_image=skip leaves the one image out, naming it
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_detection(root, tmp_path / "run", {"format": "voc", "val": 0.2,
                                                                             "on_bad_image": "skip"})))
    code, out, err = run_main(["train", str(config)], capsys)
    assert code == 0, out + err
    left = [line for line in out.splitlines() if "left out:" in line]
    assert len(left) == 1 and f"{bad}: cannot decode image" in left[0], out
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert len(record["left_out"]) == 1 and len(record["val_from_train"]["images"]) == 1


def test_mask_keeps_the_box_and_gives_the_area(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """A SegmentationObject mask gives the object its segmentation and area; the box stays the XML's."""
    from visiontl.data.formats.voc.codec import palette_png

    root = _annotated(tmp_path / "voc", "Annotations", "JPEGImages", ["a"])
    index = np.zeros((48, 64), dtype=np.uint8)
    index[10:20, 8:28] = 1  # 200 pixels inside the first box (4, 6)-(30, 40)
    index[12:14, 40:43] = 2  # 6 pixels
    (root / "SegmentationObject").mkdir()
    (root / "SegmentationObject" / "a.png").write_bytes(palette_png(index))
    aset = read_voc(root)
    assert [i.bbox for i in aset.instances] == [(4.0, 6.0, 26.0, 34.0), (34.0, 8.0, 26.0, 36.0)]
    assert [i.area for i in aset.instances] == [200.0, 6.0]
    code, out, err = run_main(["data", "convert", str(root), "--from", "voc", "--to", "coco", "--out",
                               str(tmp_path / "coco")], capsys)
    assert code == 0, out + err
    written = json.loads((tmp_path / "coco" / "train.json").read_text())["annotations"]
    assert [(a["bbox"], a["area"]) for a in written] == [([4.0, 6.0, 26.0, 34.0], 200.0), ([34.0, 8.0, 26.0, 36.0], 6.0)]


def test_split_list_id_never_leaves_the_xml_folder(tmp_path: Path) -> None:
    root = _annotated(tmp_path / "set", "Annotations", "JPEGImages", ["a"])
    (tmp_path / "outside.xml").write_text(devkit_xml("a.jpg"))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n../../outside\n")
    with pytest.raises(DataError) as err:
        read_split("voc", root, "train")
    assert str(err.value) == f"{root / 'ImageSets' / 'Main' / 'train.txt'}: line 2: image id '../../outside' is not a file name"
