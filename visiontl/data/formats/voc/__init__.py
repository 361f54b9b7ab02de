"""Pascal VOC: `reader` (XML, split lists and the layouts sets come in), `writer` (`write_voc` and the helpers
every format writer shares) and `codec` (the segmentation PNGs). The mapping rules are in `reader`'s and
`write_voc`'s docstrings and in docs/formats.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, WriteReport
from visiontl.data.formats.voc.reader import LABELS_FILE, read_voc
from visiontl.data.formats.voc.writer import (
    category_losses,
    copy_image,
    copy_images_into,
    flag_value,
    has_shape,
    image_losses,
    instance_losses,
    names_by_id,
    polygon_parts,
    relative_file,
    writable_instances,
    write_voc,
)

__all__ = ["LABELS_FILE", "category_losses", "copy_image", "copy_images_into", "flag_value", "has_shape",
           "image_losses", "instance_losses", "names_by_id", "polygon_parts", "read", "read_split", "read_voc",
           "relative_file", "writable_instances", "write", "write_voc"]


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_voc(src, split, classes=classes, sanitize=sanitize, images=images)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_voc(aset, out, split, copy_images=copy_images)


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_voc(root, split, classes=classes, images=images, annotations=annotations)
