"""Reading a YOLO split into an `AnnotationSet` (`read_yolo`).

The layouts (Ultralytics / Roboflow data.yaml, darknet / CVAT obj.data, plain images/ + labels/) are found by
`layout.find_split`, which gives each image with its label file; no label file means an image without
objects.

A label line is `class cx cy w h` (box centre and size) or `class x1 y1 x2 y2 ...` (a polygon, YOLO-seg),
normalised by the image size. Mapping rules: class index k is category id k with the name from `names`
(or the id data.yaml's `visiontl_category_ids` gives class k: `write_yolo` writes that mapping when the
category ids are not 0..N-1);
boxes become pixel `(x, y, w, h)`; a polygon becomes a one-polygon COCO segmentation in pixels with its
bounding box as the box; images get ids 1..N in sorted path order (list order for .txt lists) and
instances ids 1..N in reading order. `image_root` is the split's image folder (the deepest folder holding
every image, for lists; CVAT's obj_<subset>_data).

`write_yolo` is the reader's inverse (see its docstring for what YOLO cannot hold).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.formats.yolo.files import read_text
from visiontl.data.formats.yolo.layout import find_split
from visiontl.data.images import check_image
from visiontl.errors import DataError

# Exporters round, so a coordinate a hair outside [0, 1] is normal (the border clip handles it); far
# outside means pixel coordinates, which would otherwise all be clipped into a corner.
_SLACK = 0.01


def read_yolo(root: Path, split: str = "train", sanitize: bool = True, images: Path | None = None) -> AnnotationSet:
    """Read split `split` of a YOLO dataset at `root` (its folder, its data.yaml or obj.data, or a file in its
    folder); `images` is where the images are when not where the layout puts them (see `find_split`)."""
    found = find_split(Path(root), split, Path(images) if images is not None else None)
    names, ids = found.names, found.ids
    categories = [Category(ids[k], names[k]) for k in sorted(names)]
    records: list[ImageRecord] = []
    instances: list[Instance] = []
    for image_id, (path, labels) in enumerate(found.items, start=1):
        width, height = check_image(path)
        records.append(ImageRecord(image_id, Path(os.path.relpath(path, found.image_root)).as_posix(), width, height))
        for class_id, bbox, seg in _read_labels(labels, names, width, height):
            instances.append(Instance(len(instances) + 1, image_id, ids[class_id], bbox, segmentation=seg))

    aset = AnnotationSet(categories, records, instances, found.image_root, ReadReport(source=found.source))
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset  # False: boxes as written (check, convert)


def _read_labels(path: Path, names: dict[int, str], width: int, height: int) -> list[tuple[int, tuple, Any]]:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {n}"
        coords_n = len(fields) - 1
        if coords_n != 4 and (coords_n < 6 or coords_n % 2):
            expected = "'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"
            raise DataError(f"{where}: {len(fields)} fields; expected {expected}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _parses(v))
            raise DataError(f"{where}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{where}: {line.strip()!r} has a value that is not a finite number")
        cls, coords = values[0], values[1:]
        if coords_n == 4 and (coords[2] < 0 or coords[3] < 0):
            raise DataError(f"{where}: box size {fields[3]} x {fields[4]} is negative")
        if not cls.is_integer() or int(cls) not in names:
            raise DataError(f"{where}: class {fields[0]} is not in names (classes {_span(names)})")
        if any(v < -_SLACK or v > 1 + _SLACK for v in coords):
            raise DataError(f"{where}: coordinates must be normalised to [0, 1] by the image size ({width}x{height})")
        if coords_n == 4:
            cx, cy, w, h = coords
            bbox = ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
            out.append((int(cls), bbox, None))
        else:
            xs, ys = [x * width for x in coords[0::2]], [y * height for y in coords[1::2]]
            polygon = [v for xy in zip(xs, ys) for v in xy]
            bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            out.append((int(cls), bbox, [polygon]))
    return out



def _parses(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _span(names: dict[int, str]) -> str:
    keys = sorted(names)
    if not keys:
        return "none"
    return f"{keys[0]}..{keys[-1]}" if keys == list(range(keys[0], keys[-1] + 1)) else ", ".join(map(str, keys))
