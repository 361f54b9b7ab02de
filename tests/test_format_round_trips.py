"""Every format pair: A -> model -> B -> model, counting what is lost. Boxes and labels survive every pair;
polygons survive every pair whose two formats both hold polygons, pixel masks every pair whose two formats
both hold masks; what a format cannot hold is named in its writer's report, never dropped silently."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from visiontl.data.annotations import AnnotationSet
from visiontl.data.formats.registry import FORMAT_NAMES, read_dataset, write_dataset
from visiontl.data.masks import instance_mask
from visiontl.data.synthetic import make_detection_coco

# What each format reads back. Polygons: VOC holds masks, not polygon vertices (its SegmentationObject PNGs
# come back as RLE); YOLO detection keeps boxes only, so YOLO is written in its segmentation layout when there
# are polygons. Pixel masks: YOLO traces an RLE mask as polygons, so it does not give them back pixel for pixel.
HOLDS_POLYGONS = {"coco", "cvat", "labelstudio", "labelme", "yolo"}
HOLDS_MASKS = {"coco", "cvat", "labelstudio", "labelme", "voc"}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "format_samples"


def _source_of(folder: Path, fmt: str) -> Path:
    return {"coco": folder / "train.json", "cvat": folder / "annotations.xml",
            "labelstudio": folder / "tasks.json"}.get(fmt, folder)


def _through(aset: AnnotationSet, fmt: str, folder: Path, images: Path) -> tuple[AnnotationSet, list[str]]:
    report = write_dataset(aset, fmt, folder, "train", copy_images=True,
                           yolo_task="segment" if any(isinstance(i.segmentation, list) for i in aset.instances) else "detect")
    # voc and yolo find their copied images in their own layout (an `images` folder would be where they are)
    image_root = None if fmt in ("voc", "yolo") else images
    return read_dataset(fmt, _source_of(folder, fmt), images=image_root, split="train"), report.lost


def _objects(aset: AnnotationSet, polygons: bool) -> list[tuple]:
    names = {c.id: c.name for c in aset.categories}
    files = {im.id: Path(im.file_name).stem for im in aset.images}
    out = []
    for inst in aset.instances:
        row = (files[inst.image_id], names[inst.category_id], *(round(v, 2) for v in inst.bbox))
        if polygons:
            seg = inst.segmentation
            row += (tuple(round(v, 2) for v in seg[0]) if isinstance(seg, list) else None,)
        out.append(row)
    return sorted(out, key=repr)


def _polygon_rows(aset: AnnotationSet) -> list[tuple]:
    """Polygons as point sets (formats may start a ring at another corner)."""
    names = {c.id: c.name for c in aset.categories}
    files = {im.id: Path(im.file_name).stem for im in aset.images}
    rows = []
    for inst in aset.instances:
        seg = inst.segmentation
        if isinstance(seg, list):
            pts = frozenset((round(seg[0][k], 2), round(seg[0][k + 1], 2)) for k in range(0, len(seg[0]), 2))
            rows.append((files[inst.image_id], names[inst.category_id], tuple(sorted(pts))))
    return sorted(rows)


def _mask_rows(aset: AnnotationSet) -> list[tuple[tuple, np.ndarray | None]]:
    """(file, label, box) and the instance's pixel mask (None without a segmentation), in key order."""
    names = {c.id: c.name for c in aset.categories}
    images = {im.id: im for im in aset.images}
    rows = []
    for inst in aset.instances:
        img = images[inst.image_id]
        key = (Path(img.file_name).stem, names[inst.category_id], *(round(v, 2) for v in inst.bbox))
        rows.append((key, None if inst.segmentation is None else instance_mask(inst, img.height, img.width, "test")))
    return sorted(rows, key=lambda r: repr(r[0]))


def _assert_masks_kept(original: AnnotationSet, back: AnnotationSet, lost: list[str]) -> None:
    """Every mask comes back pixel for pixel, except the pixels a VOC PNG gives to another object (one
    object per pixel): those lie under another object's mask, and a lost line names the image."""
    want, got = _mask_rows(original), _mask_rows(back)
    assert [k for k, _ in got] == [k for k, _ in want]
    for (key, a), (_, b) in zip(want, got):
        assert a is not None
        if b is not None and np.array_equal(a, b):
            continue
        b = np.zeros_like(a) if b is None else b
        others = np.zeros_like(a)
        for k, m in want:
            if k[0] == key[0] and k != key:
                others |= m
        assert not (b & ~a).any() and not (a & ~b & ~others).any(), key
        assert any(key[0] in line and "under other objects' masks" in line for line in lost), (key, lost)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[AnnotationSet, Path]:
    root = tmp_path_factory.mktemp("gen")
    src = make_detection_coco(root, images=5, split="train", seed=4)
    return read_dataset("coco", src, images=root), root


@pytest.mark.parametrize("first,second", list(itertools.product(FORMAT_NAMES, FORMAT_NAMES)))
def test_every_pair_keeps_boxes_labels_and_polygons(generated, tmp_path: Path, first: str, second: str) -> None:
    original, images = generated
    mid, lost_first = _through(original, first, tmp_path / f"a_{first}", images)
    back, lost_second = _through(mid, second, tmp_path / f"b_{second}", images)
    assert sorted(im.file_name.split("/")[-1] for im in back.images) == sorted(im.file_name.split("/")[-1] for im in original.images)
    assert sorted(c.name for c in back.categories if any(i.category_id == c.id for i in back.instances)) == \
        sorted({c.name for c in original.categories if any(i.category_id == c.id for i in original.instances)})
    assert _objects(back, polygons=False) == _objects(original, polygons=False)  # boxes and labels: every pair
    if first in HOLDS_POLYGONS and second in HOLDS_POLYGONS:
        assert _polygon_rows(back) == _polygon_rows(original)
    else:  # the polygons a format cannot read back were named when written
        assert any("polygon" in line or "mask" in line or "box" in line for line in lost_first + lost_second) or \
            _polygon_rows(back) == _polygon_rows(original)
    if first in HOLDS_MASKS and second in HOLDS_MASKS:
        _assert_masks_kept(original, back, lost_first + lost_second)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets/format_samples is not present")
@pytest.mark.parametrize("target", FORMAT_NAMES)
def test_real_labelme_export_through_every_format(tmp_path: Path, target: str) -> None:
    """labelme's own instance-segmentation example (polygons, multi-part instances by group_id) through every
    format: the same images and labels; every object's box within a pixel (a multi-part polygon becomes a
    pixel mask in CVAT; VOC and YOLO clip to the image); an instance split into parts only with a lost line."""
    src = SHARED / "labelme" / "examples" / "instance_segmentation" / "data_annotated"
    original = read_dataset("labelme", src)
    back, lost = _through(original, target, tmp_path / target, src)
    assert sorted(Path(im.file_name).stem for im in back.images) == sorted(Path(im.file_name).stem for im in original.images)

    def used(s: AnnotationSet) -> list[str]:
        return sorted({c.name for c in s.categories if any(i.category_id == c.id for i in s.instances)})

    assert used(back) == used(original)
    multi_part = sum(isinstance(i.segmentation, list) and len(i.segmentation) > 1 for i in original.instances)
    assert multi_part >= 1  # the example has group_id unions: the interesting case
    if len(back.instances) != len(original.instances):
        assert any("part" in line or "polygon" in line for line in lost), lost  # named, never silent
        return
    sizes = {Path(im.file_name).stem: (im.width, im.height) for im in original.images}
    for a, b in zip(_objects(original, polygons=False), _objects(back, polygons=False)):
        w, h = sizes[a[0]]
        x1, y1, x2, y2 = max(a[2], 0), max(a[3], 0), min(a[2] + a[4], w), min(a[3] + a[5], h)
        assert a[:2] == b[:2]
        assert max(abs(x1 - b[2]), abs(y1 - b[3]), abs(x2 - (b[2] + b[4])), abs(y2 - (b[3] + b[5]))) <= 1.0, (a, b)
