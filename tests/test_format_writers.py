"""Pascal VOC and YOLO writers: write an `AnnotationSet`, read it back with the readers, compare; every thing
the format cannot hold is a `WriteReport.lost` line (checked word for word)."""

from __future__ import annotations

import shutil
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, WriteReport
from visiontl.data.formats.voc import read_voc, write_voc
from visiontl.data.formats.yolo import read_yolo, write_yolo
from visiontl.errors import DataError

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO / "data" / "samples" / "bccd"


def _images(src: Path, images: list[ImageRecord]) -> None:
    for img in images:
        path = src / img.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (img.width, img.height), (90, 30, 200)).save(path)


def _set(src: Path, images: list[ImageRecord], instances: list[Instance], categories: list[Category] | None = None,
         files: bool = True) -> AnnotationSet:
    if files:
        _images(src, images)
    cats = categories or [Category(17, "car"), Category(0, "cat"), Category(5, "dog")]  # 0 and gaps, not in id order
    return AnnotationSet(cats, images, instances, src, ReadReport("memory"))


def _detection(src: Path) -> AnnotationSet:
    """Sizes that are multiples of nothing, boxes touching every border, float boxes, flags, an empty image."""
    images = [ImageRecord(3, "a.jpg", 37, 29), ImageRecord(0, "sub/b.png", 53, 41), ImageRecord(8, "empty.jpg", 23, 19)]
    instances = [
        Instance(0, 3, 5, (0.0, 0.0, 12.0, 7.0), attributes={"difficult": 1}),
        Instance(4, 3, 0, (25.0, 17.0, 12.0, 12.0), attributes={"truncated": 1, "difficult": 0}),
        Instance(9, 3, 17, (3.25, 10.5, 7.125, 4.75)),
        Instance(2, 0, 0, (1.5, 2.25, 51.5, 38.75), attributes={"occluded": True}),
        Instance(6, 0, 5, (0.1, 0.7, 10.3, 20.9)),
    ]
    return _set(src, images, instances)


def _by_file(aset: AnnotationSet) -> dict[str, tuple[ImageRecord, list[Instance]]]:
    groups = aset.by_image()
    return {img.file_name: (img, groups[img.id]) for img in aset.images}


# --- Pascal VOC ---------------------------------------------------------------------------------------


def test_voc_round_trip_boxes_flags_and_category_order(tmp_path: Path) -> None:
    aset = _detection(tmp_path / "src")
    report = write_voc(aset, tmp_path / "voc", "train", copy_images=True)
    assert report == WriteReport(f"{tmp_path / 'voc'} (Pascal VOC, split train)", images=3, boxes=5)
    assert (tmp_path / "voc" / "labels.txt").read_text() == "cat\ndog\ncar\n"  # category id order
    assert (tmp_path / "voc" / "ImageSets" / "Main" / "train.txt").read_text() == "a\nempty\nsub_b\n"
    back = read_voc(tmp_path / "voc", "train")
    # VOC keeps names, not ids: labels.txt gives them back in id order, numbered 1..K.
    assert back.categories == [Category(1, "cat"), Category(2, "dog"), Category(3, "car")]
    new_id = {0: 1, 5: 2, 17: 3}
    assert [(i.file_name, i.width, i.height) for i in back.images] == [("a.jpg", 37, 29), ("empty.jpg", 23, 19),
                                                                       ("sub/b.png", 53, 41)]
    assert all(back.image_path(i).is_file() for i in back.images)
    ours, theirs = _by_file(aset), _by_file(back)
    assert ours.keys() == theirs.keys()
    for name, (img, insts) in ours.items():
        got = theirs[name][1]
        assert [i.category_id for i in got] == [new_id[i.category_id] for i in insts]
        # Exactly what the reader makes of xmin, ymin, xmax = x + w, ymax = y + h.
        assert [i.bbox for i in got] == [(x, y, (x + w) - x, (y + h) - y) for x, y, w, h in (i.bbox for i in insts)]
        assert all(abs(a - b) < 1e-9 for g, i in zip(got, insts) for a, b in zip(g.bbox, i.bbox))
        # difficult and truncated always (0 when absent), occluded when the instance has it.
        flags = [{"difficult": int(i.attributes.get("difficult", 0)), "truncated": int(i.attributes.get("truncated", 0)),
                  **({"occluded": int(i.attributes["occluded"])} if "occluded" in i.attributes else {})} for i in insts]
        assert [g.attributes for g in got] == flags
    assert back.report.clipped == 0 and back.report.dropped == []
    xml = ET.parse(tmp_path / "voc" / "Annotations" / "sub_b.xml").getroot()
    assert xml.findtext("filename") == "sub/b.png" and xml.findtext("segmented") == "0"
    assert [o.findtext("bndbox/xmax") for o in xml.findall("object")] == ["53", repr(0.1 + 10.3)]
    assert [o.findtext("pose") for o in xml.findall("object")] == ["Unspecified"] * 2
    assert len(read_voc(tmp_path / "voc").images) == 3  # every XML, no split


def test_voc_lost_lines_name_image_and_annotation(tmp_path: Path) -> None:
    images = [ImageRecord(1, "a.jpg", 37, 29, attributes={"subset": "train", "task_id": 0})]
    rle = mask_utils.encode(np.asfortranarray(np.ones((29, 37), dtype=np.uint8)))
    instances = [
        Instance(1, 1, 0, (1.0, 1.0, 5.0, 5.0), segmentation=[[1, 1, 6, 1, 6, 6]], score=0.5),
        Instance(2, 1, 5, (0.0, 0.0, 37.0, 29.0), iscrowd=True, segmentation=rle),
        Instance(3, 1, 5, (2.0, 2.0, 3.0, 3.0), attributes={"color": "red", "difficult": "maybe", "flag": 0}),
        Instance(4, 1, 17, (2.0, 2.0, 3.0, 3.0), segmentation={"size": [29, 37], "counts": rle["counts"]}),
        Instance(5, 1, 9, (4.0, 4.0, 3.0, 3.0), segmentation=[[1, 2, 3, 4]]),
    ]
    cats = [Category(0, "cat", "animal"), Category(5, "dog"), Category(17, "car "), Category(9, "dog")]
    aset = _set(tmp_path / "src", images, instances, cats)
    report = write_voc(aset, tmp_path / "voc", masks=False)
    assert (report.images, report.boxes, report.polygons, report.masks) == (1, 4, 0, 0)
    assert report.lost == [
        "category 0 (cat): supercategory 'animal' (VOC has no supercategories)",
        "category 9 (dog): same name as category 5; VOC keys classes by name, so they merge",
        "category 17 ('car '): written as 'car' (VOC strips names)",
        "a.jpg: image attributes subset='train' (VOC has no place for them)",
        "a.jpg: annotation 1 (cat): score 0.5 (VOC has no scores)",
        "a.jpg: annotation 2 (dog): crowd region not written (VOC has no crowd regions)",
        "a.jpg: annotation 3 (dog): attributes color='red' (VOC has no place for them)",
        "a.jpg: annotation 3 (dog): difficult='maybe' is not a 0/1 flag; written as 0",
        "a.jpg: annotation 1 (cat): polygon written as its box (VOC XML holds boxes only; masks=True writes PNGs)",
        "a.jpg: annotation 4 (car): RLE mask written as its box (VOC XML holds boxes only; masks=True writes PNGs)",
        "a.jpg: annotation 5 (dog): no polygon of 3 or more points; written as its box",
    ]
    back = read_voc(tmp_path / "voc", "train")
    assert [c.name for c in back.categories] == ["cat", "dog", "car"]
    assert [(i.category_id, i.attributes["difficult"]) for i in back.instances] == [(1, 0), (2, 0), (3, 0), (2, 0)]
    assert not (tmp_path / "voc" / "SegmentationClass").exists()


def _q_mask() -> np.ndarray:
    q = np.zeros((19, 23), dtype=np.uint8)
    q[3:9, 4:17] = 1
    q[12:15, 0:2] = 1
    return q


def _segmentation(src: Path) -> AnnotationSet:
    """p.jpg: a big cat rectangle holding a small dog rectangle (overlap), a box-only car, a
    3-part polygon; q.png: an RLE dog; r.jpg: boxes only (no PNG); empty.jpg."""
    images = [ImageRecord(1, "p.jpg", 37, 29), ImageRecord(2, "q.png", 23, 19), ImageRecord(3, "r.jpg", 20, 10),
              ImageRecord(4, "empty.jpg", 11, 13)]
    rle = mask_utils.encode(np.asfortranarray(_q_mask()))
    instances = [
        Instance(10, 1, 0, (2.0, 3.0, 20.0, 15.0), segmentation=[[2, 3, 22, 3, 22, 18, 2, 18]]),
        Instance(11, 1, 5, (5.0, 6.0, 4.0, 3.0), segmentation=[[5, 6, 9, 6, 9, 9, 5, 9]]),
        Instance(12, 1, 17, (30.0, 20.0, 7.0, 9.0)),
        Instance(13, 1, 17, (24.0, 1.0, 13.0, 17.0),
                 segmentation=[[24, 1, 28, 1, 28, 5, 24, 5], [30, 10, 37, 10, 37, 18, 30, 18], [0, 0, 1, 1]]),
        Instance(20, 2, 5, (0.0, 3.0, 17.0, 12.0), segmentation=rle),
        Instance(30, 3, 0, (1.0, 1.0, 5.0, 5.0)),
    ]
    return _set(src, images, instances)


def test_voc_segmentation_pngs_equal_the_rasterised_shapes(tmp_path: Path) -> None:
    aset = _segmentation(tmp_path / "src")
    root = tmp_path / "voc"
    report = write_voc(aset, root, "train")
    assert (report.images, report.boxes, report.polygons, report.masks) == (4, 2, 0, 4)
    assert report.lost == [
        "p.jpg: annotation 10 (cat): polygon written as its pixel mask (VOC holds masks, not polygon vertices)",
        "p.jpg: annotation 10 (cat): 12 of its 300 mask pixels lie under other objects' masks "
        "(a VOC PNG holds one object per pixel)",
        "p.jpg: annotation 11 (dog): polygon written as its pixel mask (VOC holds masks, not polygon vertices)",
        "p.jpg: annotation 13 (car): polygon written as its pixel mask (VOC holds masks, not polygon vertices)",
        "p.jpg: annotation 13 (car): 1 polygon part(s) of fewer than 3 points dropped",
    ]
    assert (root / "ImageSets" / "Segmentation" / "train.txt").read_text() == "p\nq\n"
    assert sorted(p.name for p in (root / "SegmentationClass").iterdir()) == ["p.png", "q.png"]
    labels = (root / "labels.txt").read_text().split()
    assert labels == ["cat", "dog", "car"]
    cat, dog, car = 1, 2, 3  # class index = line of labels.txt + 1
    with Image.open(root / "SegmentationClass" / "p.png") as im:
        assert im.mode == "P" and im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        assert im.getpalette()[255 * 3:] == [224, 224, 192]
        classes = np.asarray(im)
    with Image.open(root / "SegmentationObject" / "p.png") as im:
        objects = np.asarray(im)
    want_c = np.zeros((29, 37), dtype=np.uint8)
    want_o = np.zeros((29, 37), dtype=np.uint8)
    want_c[20:29, 30:37] = want_o[20:29, 30:37] = 255  # the box-only car: void
    want_c[3:18, 2:22], want_o[3:18, 2:22] = cat, 1  # the largest first ...
    want_c[1:5, 24:28], want_o[1:5, 24:28] = car, 4
    want_c[10:18, 30:37], want_o[10:18, 30:37] = car, 4
    want_c[6:9, 5:9], want_o[6:9, 5:9] = dog, 2  # ... the smallest last, on top
    assert np.array_equal(classes, want_c) and np.array_equal(objects, want_o)
    q = _q_mask()
    with Image.open(root / "SegmentationClass" / "q.png") as im:
        assert np.array_equal(np.asarray(im), q * dog)
    with Image.open(root / "SegmentationObject" / "q.png") as im:
        assert np.array_equal(np.asarray(im), q)
    xml = {p.stem: ET.parse(p).getroot() for p in (root / "Annotations").glob("*.xml")}
    assert {k: v.findtext("segmented") for k, v in xml.items()} == {"p": "1", "q": "1", "r": "0", "empty": "0"}
    assert [o.findtext("name") for o in xml["p"].findall("object")] == ["cat", "dog", "car", "car"]
    back = read_voc(root, "train")  # the XML keeps every box
    assert sorted(i.bbox for i in back.instances) == sorted(i.bbox for i in aset.instances)
    # ... and the SegmentationObject PNGs the masks: object k <-> pixels == k, as RLE; polygons come back as
    # their rasterised pixels (the cat without the pixels under the dog), box-only objects without a shape.
    got = {(img.file_name, k): inst.segmentation for img, insts in _by_file(back).values()
           for k, inst in enumerate(insts, start=1)}
    assert {key for key, seg in got.items() if seg is None} == {("p.jpg", 3), ("r.jpg", 1)}
    for k in (1, 2, 4):
        assert got["p.jpg", k]["size"] == [29, 37]
        assert np.array_equal(_decode(got["p.jpg", k]), (objects == k).astype(np.uint8))
    assert got["q.png", 1] == {"size": [19, 23], "counts": aset.instances[4].segmentation["counts"].decode()}
    assert all(i.segmentation is None for i in read_voc(root, "train", masks=False).instances)


def _blob(h: int, w: int, seed: int) -> np.ndarray:
    """A random blob with holes and a separate speck: shapes no polygon describes exactly."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), dtype=np.uint8)
    y, x = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
    part = m[y:y + h // 3, x:x + w // 3]
    part[...] = rng.random(part.shape) < 0.8
    m[h - 2, w - 2] = 1
    return m


def _decode(rle: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def test_voc_rle_masks_round_trip_pixel_exact(tmp_path: Path) -> None:
    images = [ImageRecord(5, "a.png", 41, 33), ImageRecord(9, "b.jpg", 17, 29)]
    blobs = {1: _blob(33, 41, 0), 2: _blob(29, 17, 1), 3: np.zeros((29, 17), dtype=np.uint8)}
    blobs[3][0:3, 0:4] = 1  # apart from blob 2
    assert not (blobs[2] & blobs[3]).any()
    instances = []
    for inst_id, image_id, cat in ((1, 5, 0), (2, 9, 5), (3, 9, 17)):
        rle = mask_utils.encode(np.asfortranarray(blobs[inst_id]))
        rows, cols = np.nonzero(blobs[inst_id])
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1 - cols.min()), float(rows.max() + 1 - rows.min()))
        instances.append(Instance(inst_id, image_id, cat, box, segmentation={"size": rle["size"], "counts": rle["counts"]}))
    aset = _set(tmp_path / "src", images, instances)
    report = write_voc(aset, tmp_path / "voc", "train")
    assert (report.masks, report.boxes, report.lost) == (3, 0, [])
    back = read_voc(tmp_path / "voc", "train")  # a.png, then b.jpg: the instances' own order
    assert [(i.bbox, i.segmentation) for i in back.instances] == [
        (i.bbox, {"size": list(i.segmentation["size"]), "counts": i.segmentation["counts"].decode()}) for i in instances]
    for inst, k in zip(back.instances, (1, 2, 3)):
        assert np.array_equal(_decode(inst.segmentation), blobs[k])


def _object_png(root: Path, stem: str, indices: np.ndarray, mode: str = "P") -> Path:
    path = root / "SegmentationObject" / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        h, w = indices.shape
        im = Image.frombytes("P", (w, h), np.ascontiguousarray(indices, dtype=np.uint8).tobytes())
        im.putpalette([v for i in range(256) for v in (i, i, i)])  # not the VOC colours: the indices count
    elif mode == "RGB":
        palette = np.array(_VOC_COLOURS, dtype=np.uint8).reshape(256, 3)
        im = Image.fromarray(palette[indices])
    else:
        im = Image.fromarray(indices.astype(np.uint8)).convert(mode)
    im.save(path)
    return path


def _voc_colours() -> list[int]:
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r, g, b = r | (c & 1) << (7 - j), g | (c >> 1 & 1) << (7 - j), b | (c >> 2 & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


_VOC_COLOURS = _voc_colours()


def test_voc_reader_pairs_object_k_with_pixels_k(tmp_path: Path) -> None:
    """Hand-made PNGs as the VOC devkit writes them: a 255 band around objects, an object without pixels."""
    images = [ImageRecord(1, "a.jpg", 12, 10), ImageRecord(2, "b.jpg", 12, 10)]
    instances = [Instance(1, 1, 0, (1, 1, 4, 4)), Instance(2, 1, 5, (6, 1, 4, 4)), Instance(3, 1, 0, (1, 6, 9, 3)),
                 Instance(4, 2, 5, (2, 2, 3, 3))]
    root = tmp_path / "voc"
    write_voc(_set(tmp_path / "src", images, instances), root)  # boxes only: XML, no PNGs
    index = np.zeros((10, 12), dtype=np.uint8)
    index[0:6, 0:6] = 255
    index[1:5, 1:5] = 1  # object 1 inside a void band
    index[6:9, 1:10] = 3  # object 3; object 2 has no pixels
    want = {1: index == 1, 3: index == 3}
    for mode in ("P", "L", "RGB"):
        _object_png(root, "a", index, mode)
        back = read_voc(root, "train")
        segs = [i.segmentation for i in back.instances]
        assert segs[1] is None and segs[3] is None  # no pixels; b.jpg has no PNG
        for k in (1, 3):
            assert segs[k - 1]["size"] == [10, 12] and isinstance(segs[k - 1]["counts"], str)
            assert np.array_equal(_decode(segs[k - 1]).astype(bool), want[k]), (mode, k)
        assert [i.bbox for i in back.instances] == [i.bbox for i in instances]  # boxes from the XML, as before
    assert all(i.segmentation is None for i in read_voc(root, "train", masks=False).instances)


def test_voc_reader_bad_object_pngs(tmp_path: Path) -> None:
    images = [ImageRecord(1, "a.jpg", 12, 10)]
    root = tmp_path / "voc"
    write_voc(_set(tmp_path / "src", images, [Instance(1, 1, 0, (1, 1, 4, 4)), Instance(2, 1, 5, (6, 1, 4, 4))]), root)
    xml = root / "Annotations" / "a.xml"
    index = np.zeros((10, 12), dtype=np.uint8)
    png = _object_png(root, "a", np.zeros((9, 12), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value) == f"{png}: 12x9 pixels, but {xml} gives the image as 12x10"
    index[2, 2], index[3, 3] = 3, 255
    _object_png(root, "a", index)
    unpaired = read_voc(root, "train")  # more objects in the PNG than in the XML: boxes read, masks left out, said so
    assert all(i.segmentation is None for i in unpaired.instances) and len(unpaired.instances) == 2
    assert unpaired.report.dropped == [f"{png}: object index 3, but a.xml has 2 object(s); the masks of this image "
                                       "are not read (an object's index is its position in the XML)"]
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[4, 7] = (1, 2, 3)
    Image.fromarray(rgb).save(png)
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value) == f"{png}: colour [1, 2, 3] at x=7, y=4 is not a VOC palette colour"
    Image.fromarray(np.zeros((10, 12), dtype=np.uint16)).save(png)
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value).startswith(f"{png}: image mode I;16; a SegmentationObject PNG holds 8-bit")
    png.write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value).startswith(f"{png}: cannot decode (")
    assert len(read_voc(root, "train", masks=False).instances) == 2  # the XML alone still reads


def test_voc_rewrite_without_masks_removes_stale_pngs(tmp_path: Path) -> None:
    """PNGs of an earlier write must not describe the objects of a new XML of the same id."""
    aset = _segmentation(tmp_path / "src")
    root = tmp_path / "voc"
    write_voc(aset, root, "train")
    write_voc(aset, root, "val")
    boxes = _set(tmp_path / "src", [ImageRecord(1, "p.jpg", 37, 29)], [Instance(1, 1, 5, (0.0, 0.0, 3.0, 3.0))],
                 files=False)
    write_voc(boxes, root, "train")
    assert sorted(p.name for p in (root / "SegmentationObject").iterdir()) == ["q.png"]
    assert sorted(p.name for p in (root / "SegmentationClass").iterdir()) == ["q.png"]
    segmentation = root / "ImageSets" / "Segmentation"
    assert [(segmentation / f"{s}.txt").read_text() for s in ("train", "val")] == ["q\n", "q\n"]
    back = read_voc(root, "val")
    assert [(img.file_name, i.segmentation is None) for img, insts in _by_file(back).values() for i in insts] == [
        ("p.jpg", True), ("q.png", False), ("r.jpg", True)]
    write_voc(boxes, root, "train", masks=False)  # nothing left to remove
    assert (segmentation / "train.txt").read_text() == "q\n"


def test_voc_split_lists_and_labels_merge(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    src = tmp_path / "src"
    one = _set(src, [ImageRecord(1, "b.jpg", 9, 9), ImageRecord(2, "a.jpg", 9, 9)],
               [Instance(1, 1, 5, (1, 1, 2, 2))], [Category(5, "dog"), Category(7, "cat")])
    write_voc(one, root, "train")
    val = _set(src, [ImageRecord(1, "c.jpg", 9, 9)], [Instance(1, 1, 2, (1, 1, 2, 2)), Instance(2, 1, 7, (1, 1, 3, 3))],
               [Category(2, "bird"), Category(7, "cat")])
    write_voc(val, root, "val")
    more = _set(src, [ImageRecord(1, "d.jpg", 9, 9), ImageRecord(2, "a.jpg", 9, 9)], [], [Category(5, "dog")])
    write_voc(more, root, "train")
    main = root / "ImageSets" / "Main"
    assert (main / "train.txt").read_text() == "a\nb\nd\n"  # merged, sorted, unique
    assert (main / "val.txt").read_text() == "c\n"
    assert (root / "labels.txt").read_text() == "dog\ncat\nbird\n"  # existing order kept, new names after
    back = read_voc(root, "val")
    assert back.categories == [Category(1, "dog"), Category(2, "cat"), Category(3, "bird")]
    assert [i.category_id for i in back.instances] == [3, 2]
    assert [i.file_name for i in read_voc(root, "train").images] == ["a.jpg", "b.jpg", "d.jpg"]


def test_voc_reader_labels_txt(tmp_path: Path) -> None:
    aset = _detection(tmp_path / "src")
    root = tmp_path / "voc"
    write_voc(aset, root)
    (root / "labels.txt").write_text("car\n\ndog\n")  # cat is not listed: it follows the listed names
    assert [c.name for c in read_voc(root, "train").categories] == ["car", "dog", "cat"]
    assert [c.name for c in read_voc(root, "train", classes=["dog", "cat", "car"]).categories] == ["dog", "cat", "car"]
    (root / "labels.txt").write_text("car\ndog\ncar\n")
    with pytest.raises(DataError) as err:
        read_voc(root, "train")
    assert str(err.value) == f"{root / 'labels.txt'}: line 3: class 'car' is listed twice"


def test_voc_bad_file_names(tmp_path: Path) -> None:
    aset = _set(tmp_path / "src", [ImageRecord(1, "x/a.jpg", 9, 9), ImageRecord(2, "x_a.png", 9, 9)], [])
    with pytest.raises(DataError) as err:
        write_voc(aset, tmp_path / "voc")
    assert str(err.value) == (f"{tmp_path / 'voc' / 'Annotations' / 'x_a'}.xml: images 'x/a.jpg' and 'x_a.png' would "
                              "both be VOC id 'x_a' (the file name without its extension)")
    aset = _set(tmp_path / "src", [ImageRecord(1, "../a.jpg", 9, 9)], [], files=False)
    with pytest.raises(DataError) as err:
        write_voc(aset, tmp_path / "voc")
    assert str(err.value) == "memory: image 1: file name '../a.jpg' is not a path inside the image folder"
    rle = {"size": [9, 8], "counts": "abc"}
    aset = _set(tmp_path / "src", [ImageRecord(1, "a.jpg", 9, 9)], [Instance(7, 1, 0, (1, 1, 2, 2), segmentation=rle)],
                files=False)
    with pytest.raises(DataError) as err:
        write_voc(aset, tmp_path / "new")
    assert str(err.value) == "memory: annotation 7 (a.jpg): RLE size [9, 8] differs from the image size [9, 9]"
    assert not (tmp_path / "new").exists()  # checked before the first file is written
    aset = _set(tmp_path / "src", [ImageRecord(1, "gone.jpg", 9, 9)], [], files=False)
    report = write_voc(aset, tmp_path / "voc", copy_images=True)
    assert report.lost == [f"gone.jpg: image file {tmp_path / 'src' / 'gone.jpg'} not found; not copied"]


def test_voc_bccd_sample_round_trip_is_identical(tmp_path: Path) -> None:
    train = read_voc(BCCD, "train")
    assert not (BCCD / "SegmentationObject").exists() and all(i.segmentation is None for i in train.instances)
    report = write_voc(train, tmp_path / "voc", "train", copy_images=True)
    assert (report.images, report.boxes, report.lost) == (60, len(train.instances), [])
    back = read_voc(tmp_path / "voc", "train")
    assert (back.categories, back.images, back.instances) == (train.categories, train.images, train.instances)
    assert back.report.lines() == train.report.lines()
    for img in train.images[:3]:
        assert (tmp_path / "voc" / "JPEGImages" / img.file_name).read_bytes() == train.image_path(img).read_bytes()
    # The val split into the same folder: train is untouched, val uses train's class numbering.
    val = read_voc(BCCD, "val", classes=[c.name for c in train.categories])
    write_voc(val, tmp_path / "voc", "val")
    again = read_voc(tmp_path / "voc", "train")
    assert (again.categories, again.images, again.instances) == (train.categories, train.images, train.instances)
    val_back = read_voc(tmp_path / "voc", "val")
    assert (val_back.categories, val_back.images) == (val.categories, val.images)

    def objects(s: AnnotationSet) -> list[tuple]:  # instance ids differ: the reader dropped a zero-area box
        return [(i.image_id, i.category_id, i.bbox, i.attributes) for i in s.instances]

    assert objects(val_back) == objects(val) and val.report.dropped and not val_back.report.dropped


# --- YOLO ---------------------------------------------------------------------------------------------


def _close(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float], tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def test_yolo_detect_round_trip_restores_category_ids(tmp_path: Path) -> None:
    aset = _detection(tmp_path / "src")
    root = tmp_path / "yolo"
    report = write_yolo(aset, root, "train", copy_images=True)
    assert (report.images, report.boxes, report.polygons, report.masks) == (3, 5, 0, 0)
    assert report.lost == [
        "a.jpg: annotation 0 (dog): attributes difficult=1 (YOLO has no place for them)",
        "a.jpg: annotation 4 (cat): attributes truncated=1 (YOLO has no place for them)",
        "sub/b.png: annotation 2 (cat): attributes occluded=True (YOLO has no place for them)",
    ]
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data == {"path": str(root.resolve()), "train": "images/train", "names": {0: "cat", 1: "dog", 2: "car"},
                    "visiontl_category_ids": {0: 0, 1: 5, 2: 17}}
    assert (root / "labels" / "train" / "empty.txt").read_text() == ""
    back = read_yolo(root, "train")
    assert back.categories == [Category(0, "cat"), Category(5, "dog"), Category(17, "car")]
    assert [(i.file_name, i.width, i.height) for i in back.images] == [("a.jpg", 37, 29), ("empty.jpg", 23, 19),
                                                                       ("sub/b.png", 53, 41)]
    ours, theirs = _by_file(aset), _by_file(back)
    for name, (img, insts) in ours.items():
        got = theirs[name][1]
        assert [i.category_id for i in got] == [i.category_id for i in insts]
        assert all(_close(g.bbox, i.bbox) for g, i in zip(got, insts)), (name, [g.bbox for g in got])
    assert back.report.clipped == 0 and back.report.dropped == []


@pytest.mark.parametrize(("ids", "key"), [((0, 1, 2), None), ((1, 2, 3), {0: 1, 1: 2, 2: 3})])
def test_yolo_contiguous_ids_are_the_class_indices(tmp_path: Path, ids: tuple[int, ...], key: dict | None) -> None:
    cats = [Category(i, n) for i, n in zip(ids, ("a", "b", "c"))]
    aset = _set(tmp_path / "src", [ImageRecord(1, "a.jpg", 10, 10)], [Instance(1, 1, ids[2], (1, 1, 2, 2))], cats)
    write_yolo(aset, tmp_path / "yolo", copy_images=True)
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "a", 1: "b", 2: "c"} and data.get("visiontl_category_ids") == key
    assert (tmp_path / "yolo" / "labels" / "train" / "a.txt").read_text().split()[0] == "2"
    back = read_yolo(tmp_path / "yolo")
    assert back.categories == cats and back.instances[0].category_id == ids[2]


def test_yolo_segment_round_trip_and_what_it_cannot_hold(tmp_path: Path) -> None:
    aset = _segmentation(tmp_path / "src")
    aset.instances += [
        Instance(40, 3, 5, (2.25, 1.5, 9.5, 7.25), segmentation=[[2.25, 1.5, 11.75, 2.0, 7.125, 8.75]]),
        Instance(41, 3, 5, (0.0, 0.0, 20.0, 10.0), iscrowd=True),
        Instance(42, 3, 0, (15.0, 5.0, 10.0, 3.0), segmentation=[[15, 5, 25, 5, 25, 8, 15, 8]]),  # crosses the right
        Instance(43, 3, 0, (1.0, 1.0, 3.0, 3.0), segmentation=[[1, 1, 4, 1, 4, 4, 1, 4]]),  # box = extent: no line
        Instance(44, 3, 0, (1.0, 1.0, 5.0, 3.0), segmentation=[[1, 1, 4, 1, 4, 4, 1, 4]]),  # box != extent
    ]
    root = tmp_path / "yolo"
    report = write_yolo(aset, root, "val", task="segment", copy_images=True)
    assert (report.images, report.boxes, report.polygons, report.masks) == (4, 3, 7, 0)
    assert report.lost == [
        "p.jpg: annotation 12 (car): no polygon; written as its box's rectangle (a YOLO-seg line is a polygon)",
        "p.jpg: annotation 13 (car): 1 polygon part(s) with fewer than 3 points or no area inside the image not written",
        "p.jpg: annotation 13 (car): its 2 polygon parts are written as 2 separate objects (a YOLO-seg line is one polygon)",
        "q.png: annotation 20 (dog): RLE mask written as its box's rectangle (RLE is not converted to polygons)",
        "r.jpg: annotation 30 (cat): no polygon; written as its box's rectangle (a YOLO-seg line is a polygon)",
        "r.jpg: annotation 41 (dog): crowd region not written (YOLO has no crowd regions)",
        "r.jpg: annotation 42 (cat): polygon points outside the image moved onto its border",
        "r.jpg: annotation 44 (cat): box [1.0, 1.0, 5.0, 3.0] is not its polygon's extent; YOLO-seg keeps the "
        "polygon, whose extent becomes the box",
    ]
    back = read_yolo(root, "val")
    got = _by_file(back)

    def polys(name: str) -> list[list[float]]:
        return [i.segmentation[0] for i in got[name][1]]

    rect = lambda x1, y1, x2, y2: [x1, y1, x2, y1, x2, y2, x1, y2]  # noqa: E731
    want = {
        "p.jpg": [rect(2, 3, 22, 18), rect(5, 6, 9, 9), rect(30, 20, 37, 29), rect(24, 1, 28, 5), rect(30, 10, 37, 18)],
        "q.png": [rect(0, 3, 17, 15)],
        "r.jpg": [rect(1, 1, 6, 6), [2.25, 1.5, 11.75, 2.0, 7.125, 8.75], rect(15, 5, 20, 8), rect(1, 1, 4, 4),
                  rect(1, 1, 4, 4)],
        "empty.jpg": [],
    }
    assert got.keys() == want.keys()
    for name, polygons in want.items():
        assert len(polys(name)) == len(polygons) and all(_close(a, b) for a, b in zip(polys(name), polygons)), name
    assert [i.category_id for i in got["p.jpg"][1]] == [0, 5, 17, 17, 17]
    assert _close(got["r.jpg"][1][1].bbox, (2.25, 1.5, 9.5, 7.25))
    assert back.report.clipped == 0 and back.report.dropped == []


def test_yolo_detect_writes_shapes_as_boxes_and_clips(tmp_path: Path) -> None:
    aset = _segmentation(tmp_path / "src")
    aset.instances += [
        Instance(50, 3, 0, (-2.5, 4.0, 10.0, 10.0)),  # crosses the left and bottom border
        Instance(51, 3, 0, (25.0, 2.0, 3.0, 3.0)),  # right of the image
        Instance(52, 3, 0, (1.0, 1.0, 2.0, 2.0), score=0.25),
    ]
    report = write_yolo(aset, tmp_path / "yolo", task="detect", copy_images=True)
    assert (report.images, report.boxes, report.polygons, report.masks) == (4, 8, 0, 0)
    assert report.lost == [
        "p.jpg: annotation 10 (cat): polygon written as its box (YOLO detection labels hold boxes only)",
        "p.jpg: annotation 11 (dog): polygon written as its box (YOLO detection labels hold boxes only)",
        "p.jpg: annotation 13 (car): polygon written as its box (YOLO detection labels hold boxes only)",
        "q.png: annotation 20 (dog): RLE mask written as its box (YOLO detection labels hold boxes only)",
        "r.jpg: annotation 50 (cat): box [-2.5, 4.0, 10.0, 10.0] crossed the image border; written clipped to it",
        "r.jpg: annotation 51 (cat): box [25.0, 2.0, 3.0, 3.0] has no area inside the 20x10 image; not written",
        "r.jpg: annotation 52 (cat): score 0.25 (YOLO has no scores)",
    ]
    back = read_yolo(tmp_path / "yolo")
    got = [i.bbox for i in _by_file(back)["r.jpg"][1]]
    assert len(got) == 3 and all(map(_close, got, [(1, 1, 5, 5), (0, 4, 7.5, 6), (1, 1, 2, 2)]))
    assert all(i.segmentation is None for i in back.instances)


def test_yolo_precision_on_a_large_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(50):
        x, y = rng.uniform(0, 4000), rng.uniform(0, 2500)
        boxes.append((float(x), float(y), float(rng.uniform(1, 998)), float(rng.uniform(1, 500))))
    img = ImageRecord(1, "big.png", 4999, 3001)
    aset = _set(tmp_path / "src", [img], [Instance(k, 1, 0, b) for k, b in enumerate(boxes)], files=False)
    (tmp_path / "src").mkdir()
    Image.new("L", (4999, 3001)).save(tmp_path / "src" / "big.png", compress_level=1)
    write_yolo(aset, tmp_path / "yolo", copy_images=True)
    back = read_yolo(tmp_path / "yolo")
    assert max(abs(a - b) for i, g in zip(aset.instances, back.instances) for a, b in zip(i.bbox, g.bbox)) < 1e-6


def test_yolo_data_yaml_merges_splits_and_classes(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    src = tmp_path / "src"
    root.mkdir()
    (root / "data.yaml").write_text("download: get.sh\nnames: [cat, dog]\nnc: 2\n")
    train = _set(src, [ImageRecord(1, "a.jpg", 9, 9)], [Instance(1, 1, 1, (1, 1, 2, 2))], [Category(0, "cat"), Category(1, "dog")])
    write_yolo(train, root, "train", copy_images=True)
    val = _set(src, [ImageRecord(1, "b.jpg", 9, 9)], [Instance(1, 1, 9, (1, 1, 2, 2)), Instance(2, 1, 1, (2, 2, 3, 3))],
               [Category(1, "dog"), Category(9, "bird")])
    write_yolo(val, root, "val", copy_images=True)
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data == {"path": str(root.resolve()), "download": "get.sh", "train": "images/train", "val": "images/val",
                    "nc": 3, "names": {0: "cat", 1: "dog", 2: "bird"}, "visiontl_category_ids": {0: 0, 1: 1, 2: 9}}
    (only,) = read_yolo(root, "train").instances
    assert only.category_id == 1 and _close(only.bbox, (1, 1, 2, 2))
    assert [i.category_id for i in read_yolo(root, "val").instances] == [9, 1]
    clash = _set(src, [ImageRecord(1, "c.jpg", 9, 9)], [], [Category(9, "cow")])
    with pytest.raises(DataError) as err:
        write_yolo(clash, root, "test")
    assert str(err.value) == (f"{root / 'data.yaml'}: class 2 is category 9 'bird', but the set names category 9 "
                              "'cow'; write to an empty folder")
    # A moved dataset: the absolute path is gone, the reader and the writer fall back to the yaml's folder.
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    assert len(read_yolo(moved, "val").instances) == 2
    write_yolo(clash.__class__([Category(0, "cat")], [ImageRecord(1, "c.jpg", 9, 9)], [], src), moved, "test",
               copy_images=True)
    assert yaml.safe_load((moved / "data.yaml").read_text())["path"] == str(moved.resolve())


def test_yolo_reader_rejects_a_bad_id_map_and_writer_errors(tmp_path: Path) -> None:
    aset = _detection(tmp_path / "src")
    root = tmp_path / "yolo"
    write_yolo(aset, root, copy_images=True)
    data = yaml.safe_load((root / "data.yaml").read_text())
    data["visiontl_category_ids"] = {0: 0, 1: 5, 2: 5}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DataError) as err:
        read_yolo(root)
    assert str(err.value) == (f"{root / 'data.yaml'}: 'visiontl_category_ids' must map every class index of 'names' "
                              "to a distinct integer category id")
    with pytest.raises(DataError, match="YOLO task 'pose' is not one of: detect, segment"):
        write_yolo(aset, tmp_path / "other", task="pose")
    wrong = _set(tmp_path / "src", [ImageRecord(1, "a.jpg", 36, 29)], [], files=False)
    with pytest.raises(DataError) as err:
        write_yolo(wrong, tmp_path / "other", copy_images=True)
    assert str(err.value) == (f"{tmp_path / 'src' / 'a.jpg'}: image is 37x29 but memory says 36x29 (image id 1); "
                              "YOLO labels are normalised by the image size")
    same = _set(tmp_path / "src", [ImageRecord(1, "a.jpg", 37, 29), ImageRecord(2, "a.png", 37, 29)], [], files=False)
    with pytest.raises(DataError, match="images 'a.jpg' and 'a.png' would share this label file"):
        write_yolo(same, tmp_path / "other")
