"""labelme JSON <-> `AnnotationSet`.

labelme writes one JSON file per image: `imagePath` (the image, relative to the JSON), `imageHeight`,
`imageWidth`, `imageData` (the image itself, base64, or null), image-level `flags` and `shapes`. A shape has
`label`, `points` ([[x, y], ...] in pixels), `shape_type`, `group_id`, `flags`, `description`, and for masks
(labelme >= 5.2) `mask`, a base64 PNG of the mask's box region. labelme keeps any other key of a shape or of
the file as it is, and so does this module.

Reading (`read_labelme`), per shape type:
- `rectangle`: two opposite corners, in any order -> the box; no segmentation.
- `polygon` (also a missing `shape_type`, as labelme reads it) -> a one-polygon COCO segmentation and its
  bounding box; fewer than 3 points is an error.
- `circle`: the centre and a point on the circle -> a polygon of `circle_vertices(r)` vertices (see there)
  and the circle's exact box; the two points are kept in `attributes["circle"]`, so the writer writes a circle.
- `oriented_rectangle` (labelme >= 6): its 4 corners -> a polygon; `attributes["shape_type"]` remembers it.
- `mask`: the PNG patch placed at the rounded first point -> a full-image COCO RLE (compressed, str counts)
  and the box of its pixels; pixels outside the image are cut off (counted as clipped).
- `line`, `linestrip`, `point`, `points`: no area, not held: each is listed in `ReadReport.dropped`.
- shapes labelled `__ignore__` or `_background_` (labelme's reserved names) are ignore regions, not objects:
  listed in `ReadReport.dropped`, as labelme2coco drops them.
Shapes with the same label and the same non-null `group_id` in one file are ONE instance (labelme2coco's
rule): their polygons together are its segmentation, its box the box of all of them; when one of them is a
mask, the instance is the union mask (polygons rasterised as pycocotools does). Instance attributes:
`group_id`, `flags`, `description` (left out when null or empty), any other key of the shape under its own
name (`score` becomes `Instance.score` and a true `iscrowd` `Instance.iscrowd`), and for an instance of
several shapes that are not all plain polygons alike, `labelme_parts`: one entry per shape (`shape_type`,
`flags`, `description`, `extra`, and `points` for a circle), so each shape is written back as it was.

Images get ids 1..N in sorted JSON path order, instances ids 1..N in reading order. The image is
`imagePath` relative to the JSON (Windows separators accepted; when it is not there, the file of the same
name beside the JSON; an absolute path is never opened as written, only its name is looked for there). Its
size must equal `imageWidth` x `imageHeight` when the image can be read. With an image file missing, an
embedded `imageData` gives the size, is the image that checks and training read (registered with
`visiontl.data.images.embed`) and is kept (`attributes["image_data"]`) so that it is written back;
`attributes["embedded_image"]` is true whenever the file embeds its image. Image-level `flags` and other keys go to `ImageRecord.attributes`.
`image_root` is the folder read (the file's folder) when it holds every image, else the deepest folder
holding every image; given, images are looked for there as well (`<sub-folder of the JSON>/<name>`, then
`<name>`), and an image path outside it is not used.

Categories get ids 1..N in the order of `classes`, else of a `labels.txt` in the folder read or the folder
above it (labelme's examples keep it beside `data_annotated/`; its `__ignore__` and `_background_` lines are
skipped, and a label not in it is an error), else in order of first appearance.

Writing (`write_labelme`): one JSON per image at `<folder>/<file_name with .json>`, `imagePath` relative to
that JSON, `imageData` null unless `embed_images` (or the image exists only embedded), and a `labels.txt`
(`__ignore__`, `_background_`, then the category names in id order) so that reading the folder back gives
the same categories in the same order. An instance without segmentation is a rectangle, polygons are
polygon shapes (several polygons share a `group_id`), an RLE is a mask shape. `WriteReport.lost` names what
labelme cannot hold: category ids that are not 1..N (labelme keeps names), a box that is not its polygons'
or mask's bounding box, an `area` other than the one computed on reading, malformed polygons, empty masks,
attributes whose names clash with labelme's keys or whose values are not JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, WriteReport
from visiontl.data.formats.labelme.codec import circle_polygon, circle_vertices
from visiontl.data.formats.labelme.reader import read_labelme
from visiontl.data.formats.labelme.writer import write_labelme

__all__ = ["circle_polygon", "circle_vertices", "read", "read_labelme", "read_split", "write", "write_labelme"]


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_labelme(src, images, sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_labelme(aset, out)


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_labelme(root / split, images)

