"""YOLO (Ultralytics / darknet) text labels <-> `AnnotationSet`: `layout` finds a split's files, `reader` reads
them, `writer` writes a set as a YOLO folder; `files` holds what both sides share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, WriteReport
from visiontl.data.formats.yolo.files import IDS_KEY
from visiontl.data.formats.yolo.reader import read_yolo
from visiontl.data.formats.yolo.writer import write_yolo

__all__ = ["IDS_KEY", "read", "read_split", "read_yolo", "write", "write_yolo"]


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_yolo(src, split or "train", sanitize=sanitize, images=images)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_yolo(aset, out, split, task=options.get("yolo_task", "detect"), copy_images=copy_images)


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_yolo(root, split, images=images)
