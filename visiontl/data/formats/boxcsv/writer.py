"""Writing box CSV: Roboflow's "Tensorflow CSV" split folder (`<split>/_annotations.csv` in the TensorFlow
Object Detection API's columns) and keras-retinanet's class file beside it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from visiontl.atomic import atomic_write_text
from visiontl.data.annotations import AnnotationSet, WriteReport, check_text_names
from visiontl.data.formats.boxcsv.reader import ANNOTATIONS, CLASS_FILES
from visiontl.data.formats.common import relative_name
from visiontl.data.formats.voc import category_losses, copy_image, has_shape, image_losses, writable_instances
from visiontl.errors import DataError

HEADER = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def write_box_csv(aset: AnnotationSet, root: Path, split: str = "train", copy_images: bool = False) -> WriteReport:
    """Write `aset` as split `split` of the folder `root`, every file atomically; `read_box_csv` (and
    `find_csv(root, split)`) reads it back.

    - `<split>/_annotations.csv`: the header `filename,width,height,class,xmin,ymin,xmax,ymax`, then one row
      per box in image order: the file name relative to this folder (where `copy_images` copies the images),
      the image size, the class name, and the corners `x, y, x + w, y + h` as plain pixel positions
      (integers without a decimal point, other values as the shortest decimal that reads back as the same
      float);
    - an image without boxes is one row with the class and box fields empty (`a.jpg,640,480,,,,,`), as
      keras-retinanet writes it, so the image list survives (the TensorFlow Object Detection API's own
      scripts expect a box in every row: drop those rows for them);
    - `<split>/classes.csv`: keras-retinanet's class file, `name,id` per category in id order (no header),
      which keeps category ids and the classes without boxes.

    Lost lines: crowd regions (not written), scores, instance and image attributes, supercategories;
    polygons and masks are written as their box; two categories with the same name merge (a CSV names
    classes). Image and instance ids are not kept (the reader numbers them)."""
    root = Path(root)
    if not split or split.strip() != split or any(c in split for c in "/\\\n") or split in (".", ".."):
        raise DataError(f"{root}: split name {split!r} cannot be a folder name")
    aset.validate()
    check_text_names(aset, "CSV")
    folder = root / split
    report = WriteReport(f"{folder / ANNOTATIONS} (CSV)")
    names = _class_names(aset, report)
    by_image = aset.by_image()
    rows: list[list[str]] = [list(HEADER)]
    for img in aset.images:
        rel = relative_name(img.file_name, f"{aset.report.source}: image {img.id}").as_posix()
        if rel != rel.strip():
            report.lost.append(f"{img.file_name!r}: the reader strips the spaces at the ends of a file name, so it "
                               "will not find this image")
        report.lost += image_losses(img, "CSV")
        image = [rel, str(img.width), str(img.height)]
        boxes = 0
        for inst, where in writable_instances(img, by_image[img.id], names, "CSV", report):
            if has_shape(inst):
                what = "RLE mask" if isinstance(inst.segmentation, dict) else "polygon"
                report.lost.append(f"{where}: {what} written as its box (a box CSV holds boxes only)")
            x1, y1, x2, y2 = inst.xyxy
            rows.append(image + [names[inst.category_id], *(_num(float(v)) for v in (x1, y1, x2, y2))])
            boxes += 1
        if not boxes:
            rows.append(image + [""] * 5)
        report.boxes += boxes
        if copy_images and not copy_image(aset.image_path(img), folder / rel, copy_images):
            report.lost.append(f"{img.file_name}: image file {aset.image_path(img)} not found; not copied")
        report.images += 1
    atomic_write_text(folder / ANNOTATIONS, _csv_text(rows))
    classes = sorted({c.id: names[c.id] for c in aset.categories}.items())
    first = {}
    for cid, name in classes:
        first.setdefault(name, cid)
    atomic_write_text(folder / CLASS_FILES[0], _csv_text([[name, str(cid)] for name, cid in first.items()]))
    return report


def _class_names(aset: AnnotationSet, report: WriteReport) -> dict[int, str]:
    """Category id -> the class name written; a CSV names classes, so two categories of one name merge."""
    report.lost += category_losses(aset, "CSV")
    names: dict[int, str] = {}
    first: dict[str, int] = {}
    for c in sorted(aset.categories, key=lambda c: c.id):
        if not c.name.strip():
            raise DataError(f"{aset.report.source}: category {c.id} has no name; a box CSV names classes")
        if c.name != c.name.strip():
            report.lost.append(f"category {c.id} ({c.name!r}): read back as {c.name.strip()!r} (the reader strips "
                               "the spaces at the ends of a field)")
        if c.name in first:
            report.lost.append(f"category {c.id} ({c.name}): same name as category {first[c.name]}; "
                               "a CSV names classes, so they merge")
        first.setdefault(c.name, c.id)
        names[c.id] = c.name
    return names


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)  # quotes a field holding a comma, quote or newline
    return buf.getvalue()


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
