"""Annotation-format readers (and the COCO writer), all reading into `visiontl.data.annotations.AnnotationSet`.

`read_annotations` picks the reader by format name and gives `split` the meaning that format has:
coco: the JSON file (relative to root, or absolute), with `images` an optional image folder relative to root;
voc: the `ImageSets/Main/<split>.txt` list name (`images` is not used);
yolo: the data.yaml key or `images/<split>` folder name.
"""

from __future__ import annotations

from pathlib import Path

from visiontl.data.annotations import AnnotationSet
from visiontl.data.formats.coco import read_coco, write_coco
from visiontl.data.formats.voc import read_voc
from visiontl.data.formats.yolo import read_yolo
from visiontl.errors import DataError

FORMATS = ("coco", "voc", "yolo")

__all__ = ["FORMATS", "read_annotations", "read_coco", "read_voc", "read_yolo", "write_coco"]


def read_annotations(format: str, root: Path, split: str, images: str | None = None) -> AnnotationSet:
    root = Path(root)
    if format == "coco":
        return read_coco(root / split, root / images if images else None)
    if format == "voc":
        return read_voc(root, split)
    if format == "yolo":
        return read_yolo(root, split)
    raise DataError(f"unknown annotation format {format!r} (expected one of: {', '.join(FORMATS)})")
