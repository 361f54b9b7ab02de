"""Property-based tests of the format readers and writers (hypothesis, derandomized: the same examples on
every run, so CI is deterministic).

1. Round trips: an arbitrary AnnotationSet written in a format and read back gives the same images, category
   names and boxes, within the format's precision (COCO, VOC exactly; YOLO 1e-6 px through normalisation;
   CVAT its 2 decimals; Label Studio through percents), and polygons where the format holds them.
2. Hostile input: readers fed arbitrary JSON, or the corpus's good files with parts replaced by arbitrary
   values, deleted or duplicated, raise nothing but visiontl's own one-line errors; what they do read passes
   through `data check` without any other exception.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.check import check_annotations
from visiontl.data.formats.registry import read_dataset, write_dataset
from visiontl.errors import VisiontlError

CORPUS = Path(__file__).resolve().parent / "corpus"
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Names any format can hold: no surrounding spaces (VOC strips them), no newline, no labelme reserved name.
NAME = st.text(alphabet="abcxyzéü漢_-0123456789", min_size=1, max_size=6)


# --- 1. round trips ---------------------------------------------------------------------------------------


@st.composite
def annotation_sets(draw: st.DrawFn, polygons: bool = False) -> AnnotationSet:
    """1-3 images (sub-folders, non-ASCII names) of 8-300 px, 1-3 categories with ids 1..K (the formats that
    number categories themselves number them so), 0-4 instances per image, boxes strictly inside the image
    (writers clip the rest, with a lost line) and, with `polygons`, a polygon whose bounding box is the box."""
    names = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
    categories = [Category(i + 1, n) for i, n in enumerate(names)]
    images, instances = [], []
    for i in range(draw(st.integers(1, 3))):
        w, h = draw(st.integers(8, 300)), draw(st.integers(8, 300))
        folder = draw(st.sampled_from(["", "sub/", "dossier é/"]))
        images.append(ImageRecord(i + 1, f"{folder}{draw(NAME)}_{i}.png", w, h))
        for _ in range(draw(st.integers(0 if not polygons else 1, 4))):
            x = draw(st.floats(0, w - 2, allow_nan=False, allow_infinity=False))
            y = draw(st.floats(0, h - 2, allow_nan=False, allow_infinity=False))
            bw = draw(st.floats(1, w - x, allow_nan=False, allow_infinity=False))
            bh = draw(st.floats(1, h - y, allow_nan=False, allow_infinity=False))
            seg = None
            if polygons:  # a triangle-plus-corner polygon spanning exactly the box
                cx = draw(st.floats(x, x + bw, allow_nan=False))
                seg = [[x, y, cx, y, x + bw, y + bh / 2, x + bw, y + bh, x, y + bh]]
            cat = draw(st.sampled_from(categories)).id
            instances.append(Instance(len(instances) + 1, i + 1, cat, (x, y, bw, bh), segmentation=seg))
    return AnnotationSet(categories, images, instances, Path("."))


def _images(aset: AnnotationSet, root: Path) -> None:
    """The image files the set names, of their sizes (YOLO lists images and reads their size)."""
    for img in aset.images:
        path = root / img.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (img.width, img.height), (90, 30, 200)).save(path)


def _rows(aset: AnnotationSet) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """File name -> sorted (category name, box) of its instances."""
    names = {c.id: c.name for c in aset.categories}
    by_image = aset.by_image()
    return {img.file_name: sorted((names[i.category_id], tuple(i.bbox)) for i in by_image[img.id])
            for img in aset.images}


def _same(a: AnnotationSet, b: AnnotationSet, tol: float) -> None:
    assert sorted((i.file_name, i.width, i.height) for i in a.images) == \
        sorted((i.file_name, i.width, i.height) for i in b.images)
    used = {i.category_id for i in a.instances}  # Label Studio holds only the labels its results use
    assert {c.name for c in a.categories if c.id in used} <= {c.name for c in b.categories}
    ra, rb = _rows(a), _rows(b)
    for file_name, rows in ra.items():
        got = list(rb[file_name])
        assert sorted(n for n, _ in rows) == sorted(n for n, _ in got), file_name
        for name, box in rows:  # each written box against the nearest box read back under its name
            nearest = min((r for r in got if r[0] == name), key=lambda r: max(abs(u - v) for u, v in zip(r[1], box)))
            got.remove(nearest)
            assert nearest[1] == pytest.approx(box, abs=tol), (file_name, box, nearest[1])


# What each format gives back, and within which precision (px).
ROUND_TRIPS = {
    "coco": 0.0,  # floats written as they are
    "voc": 1e-9,  # xmax = x + w written exactly; w comes back as (x + w) - x
    "yolo": 1e-6,  # normalised with 7 more decimals than the size has digits
    "cvat": 0.011,  # 2 decimals: 0.005 per coordinate, 0.01 on a width or height
    "labelstudio": 1e-6,  # percents of the size, as floats
    "labelme": 1e-9,  # points in pixels
}


def _source(folder: Path, fmt: str) -> Path:
    return {"coco": folder / "train.json", "cvat": folder / "annotations.xml",
            "labelstudio": folder / "tasks.json"}.get(fmt, folder)


def _round_trip(aset: AnnotationSet, fmt: str, polygons: bool = False) -> AnnotationSet:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        aset.image_root = tmp / "images"
        _images(aset, aset.image_root)
        write_dataset(aset, fmt, tmp / "out", "train", copy_images=True,
                      yolo_task="segment" if polygons else "detect")
        # YOLO finds its images in its own layout (an `images` folder would be where they are instead).
        images = tmp / "out" if fmt == "voc" else None if fmt == "yolo" else aset.image_root
        return read_dataset(fmt, _source(tmp / "out", fmt), images=images, split="train")


@pytest.mark.parametrize("fmt", sorted(ROUND_TRIPS))
@SETTINGS
@given(aset=annotation_sets())
def test_boxes_round_trip(fmt: str, aset: AnnotationSet) -> None:
    back = _round_trip(aset, fmt)
    _same(aset, back, ROUND_TRIPS[fmt])
    if fmt in ("coco", "cvat", "voc", "labelme", "yolo"):  # these keep category ids 1..K, used or not
        assert {(c.id, c.name) for c in aset.categories} <= {(c.id, c.name) for c in back.categories}


@pytest.mark.parametrize("fmt", ["coco", "cvat", "labelstudio", "labelme", "yolo"])
@settings(SETTINGS, max_examples=15)
@given(aset=annotation_sets(polygons=True))
def test_polygons_round_trip(fmt: str, aset: AnnotationSet) -> None:
    back = _round_trip(aset, fmt, polygons=True)
    _same(aset, back, ROUND_TRIPS[fmt])
    tol = ROUND_TRIPS[fmt] or 1e-12
    read = [tuple(i.segmentation[0]) for i in back.instances]
    assert len(read) == len(aset.instances)
    for inst in aset.instances:  # each written polygon against the nearest one read back
        p = inst.segmentation[0]
        q = min((q for q in read if len(q) == len(p)), key=lambda q: max(abs(u - v) for u, v in zip(q, p)))
        read.remove(q)
        assert q == pytest.approx(p, abs=tol)


# --- 2. hostile input -------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
# Values a reader meets in real files, more often than arbitrary ones find them.
NEAR_MISSES = st.sampled_from([None, 0, -1, 1.5, float("nan"), float("inf"), "", "1", "../x.png", "/etc/passwd",
                               "C:\\x.png", [], {}, [1, 2], [[1, 2]], {"size": [24, 32], "counts": "05"},
                               {"size": [24, 32], "counts": [768]}, 2**70, True])


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with 1-3 of its parts replaced (by an arbitrary or a near-miss value), deleted or duplicated."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = copy.deepcopy(draw(JSON_VALUES | NEAR_MISSES))  # sampled values are shared: never mutate them
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "duplicate"]))
        if op == "replace":
            parent[key] = copy.deepcopy(draw(JSON_VALUES | NEAR_MISSES))
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        else:
            parent[f"{key}_"] = copy.deepcopy(parent[key])
    return doc


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus's good files' images where the readers look for them."""
    root = tmp_path_factory.mktemp("hostile")
    for folder in ("images", "labelme"):
        (root / folder).mkdir()
        for image in ("good.png", "gray.png"):
            shutil.copyfile(CORPUS / "images" / image, root / folder / image)
    return root


def _read_and_check(fmt: str, path: Path, images: Path | None) -> None:
    """Read as `data check` reads (collecting), then as training reads (sanitized); nothing but a
    VisiontlError may come out, and every error is one line."""
    try:
        problems: list[str] = []
        aset = read_dataset(fmt, path, images, None, problems)
        check_annotations(aset, decode=False)
        assert all("\n" not in p for p in problems)
    except VisiontlError as exc:
        assert "\n" not in str(exc)
    if fmt == "coco":
        from visiontl.data.formats.coco import read_coco

        try:
            read_coco(path, images, sanitize=True)
        except VisiontlError as exc:
            assert "\n" not in str(exc)


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


GOOD = {fmt: json.loads((CORPUS / fmt / "good.json").read_text()) for fmt in ("coco", "labelstudio", "labelme")}
TARGET = {"coco": "annotations.json", "labelstudio": "tasks.json", "labelme": "labelme/good.json"}


@pytest.mark.parametrize("fmt", sorted(GOOD))
@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_mutated_files_raise_only_visiontl_errors(fmt: str, layout: Path, data: st.DataObject) -> None:
    doc = data.draw(mutated(GOOD[fmt]))
    path = _write(layout / TARGET[fmt], doc)
    _read_and_check(fmt, path if fmt != "labelme" else path.parent, layout / "images" if fmt != "labelme" else None)


@pytest.mark.parametrize("fmt", sorted(GOOD))
@settings(SETTINGS, max_examples=30)
@given(doc=JSON_VALUES)
def test_arbitrary_json_raises_only_visiontl_errors(fmt: str, layout: Path, doc: Any) -> None:
    path = _write(layout / TARGET[fmt], doc)
    _read_and_check(fmt, path if fmt != "labelme" else path.parent, layout / "images" if fmt != "labelme" else None)


XML_VALUES = st.text(max_size=12) | st.sampled_from(["nan", "inf", "-1", "1e400", "", "0", "../x.png", "3,4;5",
                                                     "1, 2, 3"])


@pytest.mark.parametrize("fmt", ["cvat", "voc"])
@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_mutated_xml_attributes_raise_only_visiontl_errors(fmt: str, layout: Path, data: st.DataObject) -> None:
    """The good CVAT / VOC file with 1-3 attribute values or element texts replaced by arbitrary text."""
    import xml.etree.ElementTree as ET

    tree = ET.fromstring((CORPUS / fmt / "good.xml").read_text())
    nodes = list(tree.iter())
    for _ in range(data.draw(st.integers(1, 3))):
        el = data.draw(st.sampled_from(nodes))
        value = data.draw(XML_VALUES).replace("\x00", "")
        keys = sorted(el.attrib)
        if keys and data.draw(st.booleans()):
            el.set(data.draw(st.sampled_from(keys)), value)
        else:
            el.text = value
    text = ET.tostring(tree, encoding="unicode")
    if fmt == "cvat":
        path = layout / "annotations.xml"
        path.write_text(text, encoding="utf-8")
        _read_and_check("cvat", path, layout / "images")
    else:
        root = layout / "voc"
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "JPEGImages").mkdir(exist_ok=True)
        shutil.copyfile(CORPUS / "images" / "good.png", root / "JPEGImages" / "good.png")
        (root / "Annotations" / "a.xml").write_text(text, encoding="utf-8")
        _read_and_check("voc", root, None)


@settings(SETTINGS, max_examples=40)
@given(lines=st.lists(st.text(alphabet="0123456789.-+e naNinf\t", max_size=40), max_size=4))
def test_arbitrary_yolo_label_lines_raise_only_visiontl_errors(layout: Path, lines: list[str]) -> None:
    root = layout / "yolo"
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CORPUS / "images" / "good.png", root / "images" / "train" / "good.png")
    (root / "data.yaml").write_text("train: images/train\nnames: [cell, dog]\n")
    (root / "labels" / "train" / "good.txt").write_text("\n".join(lines))
    _read_and_check("yolo", root, None)
