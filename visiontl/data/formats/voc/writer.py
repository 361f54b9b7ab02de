"""`write_voc`: an `AnnotationSet` as a Pascal VOC folder (the reader's inverse; see its docstring for what
VOC cannot hold). Also the helpers every format writer shares (lost lines, image copies, polygon parts)."""

from __future__ import annotations

import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np

from visiontl.atomic import atomic_write, atomic_write_bytes, atomic_write_text, remove_output
from visiontl.data.annotations import AnnotationSet, ImageRecord, Instance, Lost, WriteReport, check_text_names
from visiontl.data.formats.common import relative_name
from visiontl.data.formats.voc.codec import MAX_INDEX, palette_png
from visiontl.data.formats.voc.layout import list_file
from visiontl.data.formats.voc.reader import LABELS_FILE, labels_txt
from visiontl.data.rle import rle_problem
from visiontl.errors import DataError

_FLAGS = ("truncated", "difficult", "occluded")  # in the order VOC writes them


def write_voc(aset: AnnotationSet, root: Path, split: str = "train", copy_images: bool = False,
              masks: bool = True) -> WriteReport:
    """Write `aset` as split `split` of the VOC folder `root`, every file atomically; `read_voc(root, split)`
    reads it back.

    - `Annotations/<id>.xml` per image, where the id is the file name without its extension ("/" of a
      sub-folder and whitespace become "_": the lists are whitespace-separated); `<filename>` is the file name itself, relative to `JPEGImages/`, where the
      images are copied when `copy_images` (a missing source image is a lost line);
    - the box is written as `xmin = x, ymin = y, xmax = x + w, ymax = y + h`, plain pixel positions (the
      reader's convention, no +1), integers without a decimal point and other values as the shortest
      decimal that reads back as the same float;
    - `difficult` and `truncated` from the instance attributes (0 when absent), `occluded` when present;
    - `ImageSets/Main/<split>.txt` and `labels.txt` are merged with existing ones (ids sorted and unique;
      class names: the existing ones first, then new ones in category id order), so writing another split
      into the same folder keeps the others and the class order;
    - with `masks`, an image with polygon or RLE instances also gets `SegmentationClass/<id>.png` (class
      index = position in labels.txt + 1, 0 background) and `SegmentationObject/<id>.png` (object index =
      position in the XML + 1), 8-bit palette PNGs in the VOC colours, listed in
      `ImageSets/Segmentation/<split>.txt`; box-only objects there are void (255). Masks are painted from
      the largest to the smallest, so a pixel under several objects shows the smallest. `read_voc` reads
      the SegmentationObject PNG back: an RLE mask comes back pixel for pixel, a polygon as its rasterised
      mask (RLE). An image written without PNGs loses the PNGs and Segmentation list entries an earlier
      write left for its id, so they cannot describe objects of another XML.

    VOC cannot hold: category ids (the reader numbers labels.txt's names 1..K), supercategories, image and
    instance ids, crowd regions (not written), scores, attributes other than the three flags, polygon
    vertices (VOC holds masks: the PNGs have a polygon's pixels, the XML its box; without `masks` only the
    box), and mask pixels under another object. Each such thing is a line in the report's `lost`.
    """
    root = Path(root)
    _check_split(split, root)
    aset.validate()
    check_text_names(aset, "VOC")
    report = WriteReport(f"{root} (Pascal VOC, split {split})")
    names = _voc_names(aset, report)
    labels = labels_txt(root / LABELS_FILE)
    labels += [n for n in dict.fromkeys(names[c.id] for c in sorted(aset.categories, key=lambda c: c.id)) if n not in labels]
    stems = _stems(aset, root / "Annotations")
    if masks:
        _check_masks(aset, labels)  # before the first file is written
    segmented: list[str] = []
    stale: list[str] = []
    by_image = aset.by_image()
    for img in aset.images:
        stem = stems[img.id]
        report.lost += image_losses(img, "VOC")
        objects = [inst for inst, _ in writable_instances(img, by_image[img.id], names, "VOC", report, _FLAGS)]
        png = masks and any(has_shape(i) for i in objects)
        shaped = _write_pngs(root, stem, img, objects, names, labels, report) if png else set()
        for inst in objects:
            if inst.id in shaped:
                report.masks += 1
                continue
            report.boxes += 1
            if has_shape(inst) and not png:
                what = "RLE mask" if isinstance(inst.segmentation, dict) else "polygon"
                report.lost.append(f"{img.file_name}: annotation {inst.id} ({names[inst.category_id]}): {what} "
                                   "written as its box (VOC XML holds boxes only; masks=True writes PNGs)")
            elif inst.segmentation and not has_shape(inst):
                report.lost.append(f"{img.file_name}: annotation {inst.id} ({names[inst.category_id]}): no polygon "
                                   "of 3 or more points; written as its box")
        if png:
            segmented.append(stem)
        else:
            stale += _remove_pngs(root, stem)
        atomic_write_text(root / "Annotations" / f"{stem}.xml", _xml(img, objects, names, png))
        if copy_images and not copy_image(aset.image_path(img), root / "JPEGImages" / img.file_name, copy_images):
            report.lost.append(f"{img.file_name}: image file {aset.image_path(img)} not found; not copied")
        report.images += 1
    _merge_list(list_file(root, split), [stems[img.id] for img in aset.images])
    # each list written once: inside the writer's batch a list read back still holds what it held before
    segmentation_list = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if stale:
        for path in sorted((root / "ImageSets" / "Segmentation").glob("*.txt")):
            if path != segmentation_list or not segmented:
                _merge_list(path, [], drop=frozenset(stale))
    if segmented:
        _merge_list(segmentation_list, segmented, drop=frozenset(stale))
    atomic_write_text(root / LABELS_FILE, "".join(f"{name}\n" for name in labels))
    return report


def _check_split(split: str, root: Path) -> None:
    if not split or split.strip() != split or any(c in split for c in "/\\\n"):
        raise DataError(f"{root}: split name {split!r} cannot be a file name")


def _voc_names(aset: AnnotationSet, report: WriteReport) -> dict[int, str]:
    """Category id -> the name written (VOC keys classes by name)."""
    names: dict[int, str] = {}
    first: dict[str, int] = {}
    report.lost += category_losses(aset, "VOC")
    for c in sorted(aset.categories, key=lambda c: c.id):
        name = c.name.strip()
        if not name or "\n" in name or "\r" in name:
            raise DataError(f"{aset.report.source}: category {c.id}: name {c.name!r} cannot be a VOC class name")
        if name != c.name:
            report.lost.append(f"category {c.id} ({c.name!r}): written as {name!r} (VOC strips names)")
        if name in first:
            report.lost.append(f"category {c.id} ({name}): same name as category {first[name]}; "
                               "VOC keys classes by name, so they merge")
        first.setdefault(name, c.id)
        names[c.id] = name
    return names


def _stems(aset: AnnotationSet, ann_dir: Path) -> dict[int, str]:
    stems: dict[int, str] = {}
    owner: dict[str, str] = {}
    for img in aset.images:
        rel = relative_file(img.file_name, f"{aset.report.source}: image {img.id}")
        stem = rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()
        stem = re.sub(r"[/\s]", "_", stem)  # ImageSets lists are whitespace-separated: an id holds no space
        if stem in owner:
            raise DataError(f"{ann_dir / stem}.xml: images {owner[stem]!r} and {img.file_name!r} would both be "
                            f"VOC id {stem!r} (the file name without its extension)")
        owner[stem] = img.file_name
        stems[img.id] = stem
    return stems


def _xml(img: ImageRecord, objects: list[Instance], names: dict[int, str], segmented: bool) -> str:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "JPEGImages"
    ET.SubElement(ann, "filename").text = img.file_name
    size = ET.SubElement(ann, "size")
    for tag, value in (("width", img.width), ("height", img.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(ann, "segmented").text = str(int(segmented))
    for inst in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = names[inst.category_id]
        ET.SubElement(obj, "pose").text = "Unspecified"
        for tag in _FLAGS:
            if tag != "occluded" or tag in inst.attributes:
                ET.SubElement(obj, tag).text = str(flag_value(inst.attributes.get(tag, 0)) or 0)
        box = ET.SubElement(obj, "bndbox")
        x, y, w, h = (float(v) for v in inst.bbox)
        for tag, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = _num(value)
    ET.indent(ann, space="\t")
    return ET.tostring(ann, encoding="unicode") + "\n"


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _write_pngs(root: Path, stem: str, img: ImageRecord, objects: list[Instance], names: dict[int, str],
                labels: list[str], report: WriteReport) -> set[int]:
    """SegmentationClass/SegmentationObject PNGs of one image; the ids of the instances whose mask they hold."""
    from visiontl.data.masks import instance_mask

    h, w = img.height, img.width
    owner = np.zeros((h, w), dtype=np.int32)  # 0 background, -1 void, k: the k-th object (1-based)
    shapes = []
    for k, inst in enumerate(objects, start=1):
        binary = instance_mask(inst, h, w, f"{img.file_name}: annotation {inst.id}")
        if has_shape(inst):
            shapes.append((k, inst, binary))
        else:
            owner[binary] = -1  # an object of unknown shape: neither background nor any class
    for k, _, binary in sorted(shapes, key=lambda t: -int(t[2].sum())):
        owner[binary] = k
    visible = np.bincount(owner.ravel() + 1, minlength=len(objects) + 2)
    class_lut = np.zeros(len(objects) + 2, dtype=np.uint8)
    object_lut = np.zeros(len(objects) + 2, dtype=np.uint8)
    class_lut[0] = object_lut[0] = 255
    written = set()
    for k, inst, binary in shapes:
        where = f"{img.file_name}: annotation {inst.id} ({names[inst.category_id]})"
        total, shown = int(binary.sum()), int(visible[k + 1])
        if not shown:
            why = "covers no whole pixel" if not total else "lies entirely under other objects' masks"
            report.lost.append(f"{where}: its mask {why}; only its box is written")
            continue
        if not isinstance(inst.segmentation, dict):
            report.lost.append(f"{where}: polygon written as its pixel mask (VOC holds masks, not polygon vertices)")
        if shown < total:
            report.lost.append(f"{where}: {total - shown} of its {total} mask pixels lie under other objects' "
                               "masks (a VOC PNG holds one object per pixel)")
        if k > MAX_INDEX:
            report.lost.append(f"{where}: object {k} of the image does not fit the 8-bit SegmentationObject PNG "
                               f"({MAX_INDEX} at most); void there")
        parts = polygon_parts(inst.segmentation)[1]
        if parts:
            report.lost.append(f"{where}: {parts} polygon part(s) of fewer than 3 points dropped")
        class_lut[k + 1] = labels.index(names[inst.category_id]) + 1
        object_lut[k + 1] = k if k <= MAX_INDEX else 255
        written.add(inst.id)
    for folder, lut in (("SegmentationClass", class_lut), ("SegmentationObject", object_lut)):
        atomic_write_bytes(root / folder / f"{stem}.png", palette_png(lut[owner + 1]))
    return written


def _check_masks(aset: AnnotationSet, labels: list[str]) -> None:
    images = {img.id: img for img in aset.images}
    shaped = [i for i in aset.instances if not i.iscrowd and has_shape(i)]
    if shaped and len(labels) > MAX_INDEX:
        raise DataError(f"{aset.report.source}: {len(labels)} classes; VOC segmentation PNGs hold {MAX_INDEX} at most "
                        "(masks=False writes boxes only)")
    for inst in shaped:
        img = images[inst.image_id]
        if isinstance(inst.segmentation, dict) and list(inst.segmentation.get("size", [])) != [img.height, img.width]:
            raise DataError(f"{aset.report.source}: annotation {inst.id} ({img.file_name}): RLE size "
                            f"{inst.segmentation.get('size')} differs from the image size [{img.height}, {img.width}]")
        problem = rle_problem(inst.segmentation, img.height, img.width) if isinstance(inst.segmentation, dict) else None
        if problem is not None:
            raise DataError(f"{aset.report.source}: annotation {inst.id} ({img.file_name}): {problem}")


def _remove_pngs(root: Path, stem: str) -> list[str]:
    """Remove the segmentation PNGs an earlier write left for `stem`; [stem] when there were any."""
    found = [p for p in (root / "SegmentationObject" / f"{stem}.png", root / "SegmentationClass" / f"{stem}.png")
             if p.is_file()]
    for path in found:
        remove_output(path)
    return [stem] if found else []


def _merge_list(path: Path, stems: list[str], drop: frozenset[str] = frozenset()) -> None:
    existing: list[str] = []
    if path.is_file():
        try:
            existing = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    atomic_write_text(path, "".join(f"{stem}\n" for stem in sorted((set(existing) | set(stems)) - drop)))


# --- shared by the format writers ----------------------------------------------------------------------


def relative_file(file_name: str, where: str) -> PurePosixPath:
    """An image's file name as a path inside the image folder; DataError when it would leave it."""
    return relative_name(file_name, where)


def copy_image(src: Path, dest: Path, how: bool | str = "copy") -> bool:
    """Copy an image atomically (nothing to do when `dest` is `src`); False when `src` does not exist.
    how="link" makes a hard link instead where the file system allows it (`visiontl data split`: a split of a
    large set costs no space), and copies where it does not."""
    if not src.is_file():
        return False
    if dest.exists() and os.path.samefile(src, dest):
        return True
    if how == "link":
        dest.parent.mkdir(parents=True, exist_ok=True)
        temporary = dest.with_name(f".{dest.name}.link-{os.getpid()}")
        try:
            os.link(src, temporary)
            os.replace(temporary, dest)
            return True
        except OSError:  # another file system, or one without hard links: a copy then
            temporary.unlink(missing_ok=True)
    with open(src, "rb") as f:
        atomic_write(dest, lambda out: shutil.copyfileobj(f, out))
    return True


def copy_images_into(aset: AnnotationSet, folder: Path, how: bool | str, report: WriteReport) -> None:
    """Every image of `aset` into `folder` under its file name (copy_image's `how`); a missing source image is
    a lost line of `report`. For the writers whose reader finds images in a folder beside the file."""
    for img in aset.images:
        dest = folder / relative_name(img.file_name, f"image {img.id}")
        if not copy_image(aset.image_path(img), dest, how):
            report.lost.append(f"image {img.id}: {img.file_name} not found, not copied")


def polygon_parts(segmentation: Any) -> tuple[list[list[float]], int]:
    """The polygons of a COCO polygon segmentation that have 3 or more points, and how many do not."""
    if not isinstance(segmentation, list):
        return [], 0
    good = [[float(v) for v in p] for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    return good, len(segmentation) - len(good)


def has_shape(inst: Instance) -> bool:
    """An RLE mask, or at least one polygon of 3 or more points."""
    return isinstance(inst.segmentation, dict) or bool(polygon_parts(inst.segmentation)[0])


def flag_value(value: Any) -> int | None:
    """0/1 of a flag attribute (a number, bool or "0"/"1"/"true"/"false"/"yes"/"no"); None otherwise."""
    if isinstance(value, (bool, int, float)) and math.isfinite(value):
        return int(value != 0)
    if isinstance(value, str):
        return {"0": 0, "1": 1, "false": 0, "true": 1, "no": 0, "yes": 1}.get(value.strip().lower())
    return None


def _meaningful(value: Any) -> bool:
    return value not in (None, "", 0, False) and value != [] and value != {}


def image_losses(img: ImageRecord, fmt: str) -> list[str]:
    extra = {k: v for k, v in img.attributes.items() if _meaningful(v)}
    if not extra:
        return []
    shown = ", ".join(f"{k}={v!r}" for k, v in extra.items())
    return [Lost("image attributes", f"{img.file_name}: image attributes {shown} ({fmt} has no place for them)")]


def instance_losses(inst: Instance, where: str, fmt: str, flags: tuple[str, ...] = ()) -> list[str]:
    """Lost lines for an instance's score and for attributes other than `flags` (0/1 flags the format
    keeps) that carry something (0, False, "" and None carry nothing)."""
    out = []
    if inst.score is not None:
        out.append(Lost("scores", f"{where}: score {inst.score} ({fmt} has no scores)"))
    extra = {k: v for k, v in inst.attributes.items() if k not in flags and _meaningful(v)}
    if extra:
        shown = ", ".join(f"{k}={v!r}" for k, v in extra.items())
        out.append(Lost("annotation attributes", f"{where}: attributes {shown} ({fmt} has no place for them)"))
    for k in flags:
        if k in inst.attributes and flag_value(inst.attributes[k]) is None:
            out.append(Lost("flags that are not 0/1",
                            f"{where}: {k}={inst.attributes[k]!r} is not a 0/1 flag; written as 0"))
    return out


def writable_instances(img: ImageRecord, instances: list[Instance], names: dict[int, str], fmt: str,
                       report: WriteReport, flags: tuple[str, ...] = ()) -> Iterator[tuple[Instance, str]]:
    """The instances of `img` that a format without crowd regions writes, each with the `where` that starts
    its report lines; what each loses (a crowd region, a score, attributes other than `flags`) goes to
    `report`."""
    for inst in instances:
        where = f"{img.file_name}: annotation {inst.id} ({names[inst.category_id]})"
        if inst.iscrowd:
            report.lost.append(f"{where}: crowd region not written ({fmt} has no crowd regions)")
            continue
        report.lost += instance_losses(inst, where, fmt, flags)
        yield inst, where


def names_by_id(aset: AnnotationSet, target: str | Path, fmt: str, report: WriteReport) -> dict[int, str]:
    """Category id -> name for a format that tells classes apart by name only: two categories of one name are
    refused (one line naming both ids), supercategories are reported lost."""
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for c in sorted(aset.categories, key=lambda c: c.id):
        if c.name in seen:
            raise DataError(f"{target}: categories {seen[c.name]} and {c.id} are both named {c.name!r}; "
                            f"{fmt} tells classes apart by name only")
        seen[c.name] = c.id
        names[c.id] = c.name
    report.lost += category_losses(aset, fmt)
    return names


def category_losses(aset: AnnotationSet, fmt: str) -> list[str]:
    return [Lost("supercategories", f"category {c.id} ({c.name}): supercategory {c.supercategory!r} ({fmt} has no "
                 "supercategories)") for c in sorted(aset.categories, key=lambda c: c.id) if c.supercategory]
