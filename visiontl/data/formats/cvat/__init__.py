"""CVAT for images 1.1 XML <-> `AnnotationSet` (task and project exports; track-based video exports read).

A CVAT file is `<annotations>` with `<version>1.1</version>`, a `<meta>` (a `<task>`, a `<job>` or a `<project>`
with its `<tasks>`, each with `<labels>`), then `<image id name width height [subset task_id]>` elements holding
shapes, or (video exports) `<track id label>` elements holding one shape per frame. Coordinates are pixels
with the origin at the top-left corner of the image, as in COCO; they are kept as written.

Reading (`read_cvat`):

- categories: the labels of `<meta>`, ids 1..N in their order (a label with no shapes is still a category;
  a skeleton's point sub-labels, those with a `<parent>`, are not); without labels in the meta, the shape
  box, polygon and mask labels in order of first appearance. A box, polygon or mask without a label, or with
  one that is not in the meta's labels, is an error;
- images: the `<image>` elements in file order. The image id is CVAT's `id` when the ids are unique in the
  file, else (project exports number the frames of each task from 0) every image is renumbered 0..N-1 in
  file order and CVAT's id is kept as `attributes["cvat_id"]`. `subset` and `task_id` are kept in
  `attributes`. File names are CVAT's names when they are unique in the file; when two images share a name
  (project exports: `img1.jpg` in train and in val), every image becomes `<subset>/<name>` (`default` for an
  image without a subset), CVAT's own dataset layout (`images/<subset>/<name>`); when that still collides
  (two tasks of one subset), `task_<task_id>/<name>`. Names become `<subset>/<name>` as well when the images
  lie in a folder per subset (a project export's `images/<subset>/`, told by the first image found). A
  missing or zero size is read from the image;
- shapes: `box` (xtl, ytl, xbr, ybr of the unrotated box), `polygon` (one COCO polygon, its tight bounding
  box), `mask` (CVAT's RLE, converted to a full-image COCO RLE, its tight bounding box). A box's `rotation`
  (degrees, clockwise on screen, about the box centre) follows the model's convention (`rotation.py`): a
  non-zero one gives `attributes["rotated_box"] = [cx, cy, w, h, angle]` and the box becomes the rotated
  rectangle's axis-aligned envelope; a rotation on another shape is not read (counted: CVAT writes it on
  boxes only, other shapes' points are as drawn). Areas are left None (computed). `occluded` (bool),
  `z_order`, `group_id` and `source` are kept in `Instance.attributes` when present, and so is every
  `<attribute name=...>` child, typed by the label's attribute spec (checkbox: bool, number: int or float,
  anything else: the text). An attribute `is_crowd` sets `Instance.iscrowd` (Datumaro's convention), and a
  numeric attribute `score` (a number, or a text that is one) sets `Instance.score`;
- `polyline`, `points`, `ellipse`, `cuboid`, `skeleton` and `tag` (and any other element) are not held by the
  model: each is left out whatever its label (none, or one the meta does not list, is no error there), counted
  in `ReadReport.dropped` as one line per kind that says how many shapes, never dropped silently;
- tracks: each shape of a `<track>` is an instance of its frame's image (`track_id` kept in the attributes),
  except the frames where the track is `outside="1"`. Without `<image>` elements (a video export) the
  images are the frames: every frame from the meta's `start_frame` to `stop_frame` (step from
  `frame_filter` `step=N`) when the meta gives them, else the frames the tracks visit; each is named
  `frame_NNNNNN` plus the extension found in the image folder (`.png` when none is), as in CVAT's zips, and
  its size is the meta's `original_size` (else read from the image).

CVAT's mask RLE (the `rle` attribute) covers only the mask's box (`left`, `top`, `width`, `height`, all
integers): the box's pixels in row-major order, as run lengths that alternate background / foreground and
start with background (a leading 0 when the first pixel is foreground); they sum to width * height.

Writing (`write_cvat`) makes a task export: a `<meta><task>` with the labels and, per label, the names and
types of the attributes its instances carry (checkbox for bools, number for numbers, text otherwise), then
one `<image id name width height [subset]>` per image with one shape per instance: `polygon` for a
one-part polygon, `mask` for an RLE, `box` otherwise (a multi-part polygon is written as a mask). A box with
an `attributes["rotated_box"]` whose envelope is still its box (within 0.01 px, as read or clipped to the
image) is written as that rotated box (unrotated corners + `rotation`, in [0, 360) as CVAT keeps it); otherwise
the box is written unrotated, with a lost line. Every shape gets `source` (the `source` argument when given,
"auto" marking pre-annotations; by default each instance's own `attributes["source"]`, else "manual"),
`occluded`, `z_order` and `group_id` from its attributes, its other attributes as `<attribute>` children,
`is_crowd` when it is a crowd region and `score` when it has one (read back as `Instance.score`).
Coordinates are written with 2 decimals, as CVAT writes them, so they read back within 0.005 px (the
rotation with up to 6). What CVAT cannot hold is listed in `WriteReport.lost`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, WriteReport
from visiontl.data.formats.cvat.codec import cvat_rle_to_mask, mask_to_cvat_rle
from visiontl.data.formats.cvat.reader import read_cvat, read_cvat_split
from visiontl.data.formats.cvat.writer import write_cvat

__all__ = ["cvat_rle_to_mask", "mask_to_cvat_rle", "read", "read_cvat", "read_split", "write", "write_cvat"]


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_cvat(src, images, sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool | str, options: dict[str, Any]) -> WriteReport:
    """<out>/annotations.xml; with `copy_images`, the images into <out>/images/ (where the reader finds them,
    as in a task export with images)."""
    report = write_cvat(aset, out / "annotations.xml", **({"source": options["source"]} if "source" in options else {}))
    if copy_images:
        from visiontl.data.formats.voc import copy_images_into

        copy_images_into(aset, out / "images", copy_images, report)
    return report


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_cvat_split(root, split, images, annotations)

