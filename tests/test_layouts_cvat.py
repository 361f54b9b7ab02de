"""CVAT and labelme datasets as the tools write them (CVAT for images 1.1 task and project exports unpacked,
labelme's JSON beside each image or in a folder of their own with Windows `imagePath`s), each checked,
converted and trained; and what conversions report: losses summarised per kind, CVAT shapes that are not
held dropped and counted whatever their label, records left out counted as records."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from conftest import run_main
from layout_kit import check_convert_train, write_jpeg
from visiontl.data.formats.registry import read_dataset, read_split
from visiontl.errors import DataError


# --- CVAT ---------------------------------------------------------------------------------------------------

LABELS = ("RBC", "WBC", "Platelets")
COLORS = ("#fa3253", "#3d3df5", "#33ddff")


def _labels_xml(indent: str) -> str:
    out = [f"{indent}<labels>"]
    for name, color in zip(LABELS, COLORS):
        out += [f"{indent}  <label>", f"{indent}    <name>{name}</name>", f"{indent}    <color>{color}</color>",
                f"{indent}    <type>any</type>", f"{indent}    <attributes>", f"{indent}    </attributes>",
                f"{indent}  </label>"]
    out.append(f"{indent}</labels>")
    return "\n".join(out)


def _task_meta(task_id: int, name: str, size: int, subset: str, indent: str) -> str:
    """A <task> of <meta> as CVAT writes it (a task export's, or one of a project's <tasks>)."""
    return f"""{indent}<task>
{indent}  <id>{task_id}</id>
{indent}  <name>{name}</name>
{indent}  <size>{size}</size>
{indent}  <mode>annotation</mode>
{indent}  <overlap>0</overlap>
{indent}  <bugtracker></bugtracker>
{indent}  <created>2024-03-01 10:00:00.000000+00:00</created>
{indent}  <updated>2024-03-02 09:30:00.000000+00:00</updated>
{indent}  <subset>{subset}</subset>
{indent}  <start_frame>0</start_frame>
{indent}  <stop_frame>{size - 1}</stop_frame>
{indent}  <frame_filter></frame_filter>
{indent}  <segments>
{indent}    <segment>
{indent}      <id>{task_id + 100}</id>
{indent}      <start>0</start>
{indent}      <stop>{size - 1}</stop>
{indent}      <url>https://app.cvat.ai/api/jobs/{task_id + 100}</url>
{indent}    </segment>
{indent}  </segments>
{indent}  <owner>
{indent}    <username>alice</username>
{indent}    <email>alice@example.com</email>
{indent}  </owner>
{indent}  <assignee></assignee>
"""


def _image_xml(frame: int, name: str, boxes: list[tuple[str, float, float, float, float]], extra: str = "") -> str:
    lines = [f'  <image id="{frame}" name="{name}"{extra} width="64" height="48">']
    for label, x1, y1, x2, y2 in boxes:
        lines.append(f'    <box label="{label}" source="manual" occluded="0" xtl="{x1:.2f}" ytl="{y1:.2f}" '
                     f'xbr="{x2:.2f}" ybr="{y2:.2f}" z_order="0">\n    </box>')
    lines.append("  </image>")
    return "\n".join(lines)


def _boxes(k: int) -> list[tuple[str, float, float, float, float]]:
    return [(LABELS[k % 3], 4.0 + k, 5.0, 30.0 + k, 28.0), (LABELS[(k + 1) % 3], 34.0, 20.0 + k, 60.0, 44.0)]


def _xml(body: str) -> str:
    return f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n{body}\n</annotations>\n'


def _cvat_task_export(folder: Path, task_id: int, names: list[str], seed: int = 0) -> Path:
    """An unpacked "CVAT for images 1.1" task export with images: `annotations.xml` and `images/`."""
    for k, name in enumerate(names):
        write_jpeg(folder / "images" / name, seed=seed + k)
    meta = (f"  <meta>\n{_task_meta(task_id, f'task {task_id}', len(names), '', '    ')}{_labels_xml('      ')}\n"
            "    </task>\n    <dumped>2024-03-02 09:31:00.000000+00:00</dumped>\n  </meta>")
    images = "\n".join(_image_xml(k, name, _boxes(seed + k)) for k, name in enumerate(names))
    path = folder / "annotations.xml"
    path.write_text(_xml(meta + "\n" + images), encoding="utf-8")
    return path


def _cvat_project_export(root: Path, tasks: list[tuple[int, str, list[str]]]) -> Path:
    """An unpacked "CVAT for images 1.1" project export with images: `annotations.xml` whose images carry their
    `subset` and `task_id` (frame ids start at 0 in every task), the images in `images/<subset>/`."""
    metas, images, seed = [], [], 0
    for task_id, subset, names in tasks:
        metas.append(_task_meta(task_id, f"{subset.lower()} part", len(names), subset, "        ") + "        </task>")
        for k, name in enumerate(names):
            write_jpeg(root / "images" / subset / name, seed=seed)
            images.append(_image_xml(k, name, _boxes(seed), f' subset="{subset}" task_id="{task_id}"'))
            seed += 1
    meta = (f"  <meta>\n    <project>\n      <id>3</id>\n      <name>blood cells</name>\n"
            f"      <created>2024-03-01 09:00:00.000000+00:00</created>\n"
            f"      <updated>2024-03-02 09:30:00.000000+00:00</updated>\n{_labels_xml('      ')}\n"
            "      <tasks>\n" + "\n".join(metas) + "\n      </tasks>\n    </project>\n"
            "    <dumped>2024-03-02 09:31:00.000000+00:00</dumped>\n  </meta>")
    path = root / "annotations.xml"
    path.write_text(_xml(meta + "\n" + "\n".join(images)), encoding="utf-8")
    return path


def test_cvat_task_exports_one_per_split(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Two task exports unpacked side by side (`train/` and `val/`, each `annotations.xml` + `images/`):
    data.train and data.val name the folders."""
    root = tmp_path / "cells"
    train = _cvat_task_export(root / "train", 11, ["BloodImage_00001.jpg", "BloodImage_00002.jpg",
                                                   "BloodImage_00003.jpg"])
    _cvat_task_export(root / "val", 12, ["BloodImage_00101.jpg"], seed=5)
    check_convert_train(capsys, tmp_path, "cvat", train, {"root": str(root), "train": "train", "val": "val"},
                        images=3, boxes=6)


def test_cvat_task_export_with_a_val_fraction(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """One task export unpacked (`annotations.xml` + `images/`), no split: data.val=0.2."""
    root = tmp_path / "task_12_annotations"
    xml = _cvat_task_export(root, 12, [f"frame_{k:06d}.jpg" for k in range(5)])
    check_convert_train(capsys, tmp_path, "cvat", xml, {"root": str(root), "train": "annotations.xml", "val": 0.2},
                        images=5, boxes=10)


def test_cvat_project_export_subsets_are_the_splits(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """A project export: images in `images/Train/` and `images/Validation/` (CVAT's folder per subset), names
    distinct, frame ids from 0 in each task. data.train / data.val name the subsets (`val` for Validation)."""
    root = tmp_path / "project_blood_cells"
    xml = _cvat_project_export(root, [(21, "Train", ["a1.jpg", "a2.jpg", "a3.jpg"]), (22, "Validation", ["b1.jpg"])])
    aset = read_dataset("cvat", xml)
    assert [i.file_name for i in aset.images] == ["Train/a1.jpg", "Train/a2.jpg", "Train/a3.jpg", "Validation/b1.jpg"]
    assert all(aset.image_path(i).is_file() for i in aset.images)
    val = read_split("cvat", root, "val")
    assert [(i.file_name, i.attributes["subset"]) for i in val.images] == [("Validation/b1.jpg", "Validation")]
    assert len(val.instances) == 2 and [c.name for c in val.categories] == list(LABELS)
    check_convert_train(capsys, tmp_path, "cvat", xml, {"root": str(root), "train": "train", "val": "val"},
                        images=4, boxes=8)


def test_cvat_project_export_with_names_shared_across_tasks(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Tasks of one project whose frames share names (each task uploaded `img_0001.jpg`...): CVAT's folder per
    subset keeps them apart; data.train / data.val as CVAT writes the subsets."""
    root = tmp_path / "project"
    names = ["img_0001.jpg", "img_0002.jpg"]
    xml = _cvat_project_export(root, [(5, "Train", names + ["img_0003.jpg"]), (6, "Validation", names)])
    check_convert_train(capsys, tmp_path, "cvat", xml, {"root": str(root), "train": "Train", "val": "Validation"},
                        images=5, boxes=10)


def test_cvat_subset_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "project"
    xml = _cvat_project_export(root, [(5, "Train", ["a.jpg"]), (6, "Validation", ["b.jpg"])])
    with pytest.raises(DataError) as err:
        read_split("cvat", root, "test")
    assert str(err.value) == f"{xml}: no image of subset 'test' (the images' subsets: Train, Validation)"
    with pytest.raises(DataError) as err:
        read_split("cvat", tmp_path, "train")
    assert str(err.value) == (f"{tmp_path / 'train'}: no such CVAT XML file or folder, and no "
                              f"{tmp_path / 'annotations.xml'} to take a subset 'train' from")


# --- labelme ------------------------------------------------------------------------------------------------


def _labelme_doc(image_path: str, shapes: list[dict], image_data: str | None = None) -> dict:
    """A labelme 5.x file, keys in labelme's order."""
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": image_data,
            "imageHeight": 48, "imageWidth": 64}


def _shape(label: str, shape_type: str, points: list[list[float]]) -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": shape_type,
            "flags": {}, "mask": None}


def _labelme_shapes(k: int) -> list[dict]:
    return [_shape("cat", "rectangle", [[4.0 + k, 5.0], [30.0, 28.0 + k]]),
            _shape("dog", "polygon", [[34.0, 20.0], [60.0, 22.0], [58.0, 44.0], [36.0, 40.0]])]


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")


def test_labelme_json_beside_each_image(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """As labelme saves by default: `a.json` beside `a.jpg`, `imagePath` the bare name, `imageData` null; a
    folder per split."""
    root = tmp_path / "pets"
    for split, names in (("train", ["0001.jpg", "0002.jpg", "0003.jpg"]), ("val", ["0100.jpg"])):
        for k, name in enumerate(names):
            write_jpeg(root / split / name, seed=k)
            _write_json(root / split / name.replace(".jpg", ".json"), _labelme_doc(name, _labelme_shapes(k)))
    check_convert_train(capsys, tmp_path, "labelme", root / "train", {"root": str(root), "train": "train", "val": "val"},
                        images=3, boxes=6)


def test_labelme_json_folder_with_windows_image_paths(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """labelme with `--output annotations\\train` on Windows: the JSON files in `annotations/<split>/`, their
    `imagePath` `..\\..\\images\\<split>\\x.jpg`, some with the image embedded (`imageData`), as labelme saves
    with "Save With Image Data" on."""
    root = tmp_path / "pets"
    for split, names in (("train", ["0001.jpg", "0002.jpg", "0003.jpg"]), ("val", ["0100.jpg"])):
        for k, name in enumerate(names):
            image = write_jpeg(root / "images" / split / name, seed=k)
            data = base64.b64encode(image.read_bytes()).decode("ascii") if k % 2 else None
            _write_json(root / "annotations" / split / name.replace(".jpg", ".json"),
                        _labelme_doc(f"..\\..\\images\\{split}\\{name}", _labelme_shapes(k), data))
    aset = read_dataset("labelme", root / "annotations" / "train")
    assert aset.image_root == root / "images" / "train"
    assert [i.file_name for i in aset.images] == ["0001.jpg", "0002.jpg", "0003.jpg"]
    check_convert_train(capsys, tmp_path, "labelme", root / "annotations" / "train",
                        {"root": str(root), "train": "annotations/train", "val": "annotations/val"},
                        images=3, boxes=6)


def test_labelme_one_folder_with_a_val_fraction(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for k in range(5):
        write_jpeg(root / f"{k:04d}.jpg", seed=k)
        _write_json(root / f"{k:04d}.json", _labelme_doc(f"{k:04d}.jpg", _labelme_shapes(k)))
    check_convert_train(capsys, tmp_path, "labelme", root, {"root": str(root), "train": ".", "val": 0.2},
                        images=5, boxes=10)


# --- what conversions report --------------------------------------------------------------------------------


def _roboflow_coco(folder: Path, classes: int = 12) -> Path:
    """Roboflow's COCO export: `_annotations.coco.json` beside the images, a supercategory-only category at
    id 0 and the classes (supercategory: it) after it, `info`, `licenses`, and image fields beyond COCO's."""
    names = [f"class_{k}" for k in range(1, classes + 1)]
    categories = [{"id": 0, "name": "cells", "supercategory": "none"}]
    categories += [{"id": k, "name": name, "supercategory": "cells"} for k, name in enumerate(names, start=1)]
    images, annotations = [], []
    for i in range(3):
        name = f"BloodImage_0000{i}_jpg.rf.{i}a2b3c.jpg"
        write_jpeg(folder / name, seed=i)
        images.append({"id": i, "license": 1, "file_name": name, "height": 48, "width": 64,
                       "date_captured": "2024-03-01T10:00:00+00:00"})
        for k in range(4):
            annotations.append({"id": len(annotations), "image_id": i, "category_id": 1 + (i * 4 + k) % classes,
                                "bbox": [2 + 12 * k, 5, 10, 12], "area": 120, "segmentation": [], "iscrowd": 0})
    doc = {"info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com", "contributor": "",
                    "url": "https://public.roboflow.com", "date_created": "2024-03-01T10:00:00+00:00"},
           "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
           "categories": categories, "images": images, "annotations": annotations}
    path = folder / "_annotations.coco.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["cvat", "labelme", "voc", "yolo"])
def test_roboflow_conversion_says_each_kind_of_loss_once(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                         fmt: str) -> None:
    src = _roboflow_coco(tmp_path / "train")
    code, out, err = run_main(["data", "convert", str(src), "--from", "coco", "--to", fmt,
                               "--out", str(tmp_path / fmt)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    summary = [line for line in lines if "thing(s) the format cannot hold" in line]
    assert len(summary) == 1 and summary[0].startswith(("15 thing(s)", "16 thing(s)", "17 thing(s)"))
    supercategories = [line for line in lines if "supercategor" in line]
    assert len(supercategories) == 1
    assert supercategories[0].startswith("  13 x supercategories")
    assert supercategories[0].endswith("; and 10 more")
    assert "category 0 (cells): supercategory 'none'" in supercategories[0]
    assert len(lines) <= 5  # the written line, the summary, a line for supercategories, "written to"


CVAT_SHAPES_NOT_HELD = _xml("""  <meta><task><labels>
    <label><name>car</name><type>any</type></label>
  </labels></task></meta>
  <image id="0" name="a.jpg" width="64" height="48">
    <box label="car" source="manual" occluded="0" xtl="1.00" ytl="2.00" xbr="30.00" ybr="20.00" z_order="0"/>
    <polyline source="manual" occluded="0" points="1.00,1.00;20.00,20.00" z_order="0"/>
    <polyline label="lane" source="manual" occluded="0" points="1.00,5.00;20.00,25.00" z_order="0"/>
    <points label="car" source="manual" occluded="0" points="4.00,4.00" z_order="0"/>
    <cuboid source="manual" occluded="0" xtl1="1" ytl1="1" xbl1="1" ybl1="9" xtr1="9" ytr1="1" xbr1="9" ybr1="9"
            xtl2="3" ytl2="2" xbl2="3" ybl2="10" xtr2="11" ytr2="2" xbr2="11" ybr2="10" z_order="0"/>
  </image>""")


def test_cvat_shapes_not_held_are_dropped_and_counted_whatever_their_label(capsys: pytest.CaptureFixture,
                                                                           tmp_path: Path) -> None:
    """A polyline without a label, one with a label the file does not list, points and a cuboid without a
    label: left out (the model holds none of them), counted per kind and in shapes, never stopping the file."""
    write_jpeg(tmp_path / "images" / "a.jpg")
    xml = tmp_path / "annotations.xml"
    xml.write_text(CVAT_SHAPES_NOT_HELD, encoding="utf-8")
    aset = read_dataset("cvat", xml)
    assert [(i.category_id, i.bbox) for i in aset.instances] == [(1, (1.0, 2.0, 29.0, 18.0))]
    assert [c.name for c in aset.categories] == ["car"]
    held = "the model holds boxes, polygons and masks only (first on a.jpg)"
    assert aset.report.dropped == [f"{xml}: 2 polyline shape(s) dropped, {held}",
                                   f"{xml}: 1 points shape(s) dropped, {held}",
                                   f"{xml}: 1 cuboid shape(s) dropped, {held}"]
    assert aset.report.left_out == 4
    assert aset.report.lines() == [f"4 record(s) left out ({'; '.join(aset.report.dropped)})"]
    for argv in (["data", "check", str(xml), "--format", "cvat"],
                 ["data", "convert", str(xml), "--from", "cvat", "--to", "coco", "--out", str(tmp_path / "out")]):
        code, out, err = run_main(argv, capsys)
        assert code == 0, out + err
        assert f"read: 4 record(s) left out ({xml}: 2 polyline shape(s) dropped" in out


def test_a_held_shape_without_a_usable_label_still_stops_the_file(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "images" / "a.jpg")
    xml = tmp_path / "annotations.xml"
    xml.write_text(CVAT_SHAPES_NOT_HELD.replace('<box label="car"', "<box"), encoding="utf-8")
    with pytest.raises(DataError, match=r"image 0 \(a.jpg\): shape 1 <box>: no label$"):
        read_dataset("cvat", xml)


def test_records_left_out_are_counted_as_records_not_lines() -> None:
    from visiontl.data.annotations import ReadReport

    report = ReadReport("x")
    report.drop("x: 3 polyline shape(s) dropped", 3)
    report.dropped.append("a.jpg: annotation 4 box [1, 1, 0, 0] has zero area")
    assert report.left_out == 4
    assert report.lines() == ["4 record(s) left out (x: 3 polyline shape(s) dropped; a.jpg: annotation 4 box "
                              "[1, 1, 0, 0] has zero area)"]


def test_cvat_images_found_beside_the_xml_when_images_is_another_folder(tmp_path: Path) -> None:
    """An `images/` beside the XML that does not hold them (names relative to the XML's folder): the first image
    found tells where they are."""
    write_jpeg(tmp_path / "images" / "unrelated.jpg")
    write_jpeg(tmp_path / "frames" / "a.jpg")
    xml = tmp_path / "annotations.xml"
    xml.write_text(_xml(_image_xml(0, "frames/a.jpg", _boxes(0))), encoding="utf-8")
    aset = read_dataset("cvat", xml)
    assert aset.image_root == tmp_path and aset.image_path(aset.images[0]).is_file()
