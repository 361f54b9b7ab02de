"""COCO detection / instance-segmentation JSON <-> `AnnotationSet`.

A COCO file has three lists: `images` (id, file_name, width, height), `annotations` (id, image_id,
category_id, bbox [x, y, w, h] in pixels, iscrowd, segmentation, area) and `categories` (id, name,
supercategory). The model uses COCO's own conventions, so the mapping is one to one: every id is kept as
the file writes it (0 and gaps allowed), `segmentation` is kept as written (polygons or an RLE dict), a
missing `iscrowd` means 0 and a missing `area` means "the box's". An empty segmentation list carries no
shape, so it reads as None (and None writes as []). Categories are kept even when nothing uses them
(Roboflow's supercategory-only entry included); leaving those out of the model's labels is `LabelMap`'s job.
Every other field (top-level `info`, `licenses`; an image's `license`, `coco_url`; an annotation's `keypoints`,
`num_keypoints`; a category's `keypoints`, `skeleton`; a tool's own fields) is kept as written in the `extra`
of the set or record: the COCO writer writes it back, other writers report it as not written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, WriteReport
from visiontl.data.formats.coco.layout import find_image_root, split_file, split_of
from visiontl.data.formats.coco.reader import read_coco
from visiontl.data.formats.coco.writer import write_coco

__all__ = ["find_image_root", "read", "read_coco", "read_split", "split_file", "split_of", "write", "write_coco"]


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_coco(src, images, sanitize=sanitize, problems=problems)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool | str, options: dict[str, Any]) -> WriteReport:
    """<out>/<split>.json; with `copy_images`, the images into <out>/images/ under their file names (where the
    reader finds them; the splits of one set share it)."""
    report = write_coco(aset, out / f"{split}.json")
    if copy_images:
        from visiontl.data.formats.voc import copy_images_into

        copy_images_into(aset, out / "images", copy_images, report)
    return report


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    """`split`: the JSON relative to `root`, or a split name (`layout.split_file`); `images`: its image folder
    as the config names it (None: found from the JSON's place and name, `layout.find_image_root`)."""
    return read_coco(split_file(root, split), images)
