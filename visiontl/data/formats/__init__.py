"""Annotation-format readers (and the COCO writer), all reading into `visiontl.data.annotations.AnnotationSet`.

`read_annotations` picks the reader by format name and gives `split` the meaning that format has:
coco: the JSON file (relative to root, or absolute), with `images` an optional image folder relative to root;
voc: the `ImageSets/Main/<split>.txt` list name (`images` is not used);
yolo: the data.yaml key or `images/<split>` folder name;
cvat, labelstudio: the export file (relative to root), `images` the image folder relative to root;
labelme: the folder (or file) of labelme JSON, relative to root.
"""

from __future__ import annotations

from pathlib import Path

from visiontl.data.annotations import AnnotationSet
from visiontl.data.formats.coco import read_coco, write_coco
from visiontl.data.formats.voc import read_voc
from visiontl.data.formats.yolo import read_yolo
from visiontl.errors import DataError

FORMATS = ("coco", "voc", "yolo", "cvat", "labelstudio", "labelme")

__all__ = ["FORMATS", "read_annotations", "read_coco", "read_voc", "read_yolo", "write_coco"]


def read_annotations(format: str, root: Path, split: str, images: str | None = None) -> AnnotationSet:
    root = Path(root)
    if format == "coco":
        return read_coco(root / split, root / images if images else None)
    if format == "voc":
        return read_voc(root, split)
    if format == "yolo":
        return read_yolo(root, split)
    if format == "cvat":
        from visiontl.data.formats.cvat import read_cvat

        return read_cvat(root / split, root / images if images else None)
    if format == "labelstudio":
        from visiontl.data.formats.labelstudio import read_labelstudio

        return read_labelstudio(root / split, root / images if images else root)
    if format == "labelme":
        from visiontl.data.formats.labelme import read_labelme

        return read_labelme(root / split, root / images if images else None)
    raise DataError(f"unknown annotation format {format!r} (expected one of: {', '.join(FORMATS)})")
