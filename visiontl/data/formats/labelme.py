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

import base64
import binascii
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image

from visiontl.atomic import atomic_write_text
from visiontl.data.annotations import (AnnotationSet, Category, ImageRecord, Instance, ReadReport, WriteReport,
                                       check_text_names, sanitize_boxes)
from visiontl.data.images import DECODE_ERRORS, check_image, embed, open_image, orientation, upright
from visiontl.data.formats.common import first_line, is_number, note_input, read_json
from visiontl.errors import DataError

LABELME_VERSION = "5.2.1"  # the first labelme with mask shapes; what the writer puts in `version`
HELD_TYPES = ("rectangle", "polygon", "circle", "oriented_rectangle", "mask")
DROPPED_TYPES = ("line", "linestrip", "point", "points")
RESERVED_LABELS = ("__ignore__", "_background_")
LABELS_FILE = "labels.txt"

_SHAPE_KEYS = {"label", "points", "group_id", "shape_type", "flags", "description", "mask"}
_FILE_KEYS = {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
# Instance attributes the writer turns into labelme fields (everything else becomes an extra shape key).
_INSTANCE_ATTRS = {"group_id", "flags", "description", "circle", "shape_type", "labelme_parts"}
_IMAGE_ATTRS = {"flags", "embedded_image", "image_data"}
_MIN_POINTS = {"rectangle": 2, "polygon": 3, "circle": 2, "oriented_rectangle": 4, "mask": 2}


# ---------------------------------------------------------------------------------------------- circles


def circle_vertices(radius: float) -> int:
    """Vertices of the polygon standing for a circle: the fewest keeping every chord within 1 pixel of the arc
    (labelme2coco's rule, N >= pi / arccos(1 - 1/r)), rounded up to a multiple of 4 so that the polygon
    touches the circle's leftmost, rightmost, top and bottom points; at least 16."""
    if radius <= 1:
        return 16
    n = math.pi / math.acos(1.0 - 1.0 / radius)
    return max(16, 4 * math.ceil(n / 4))


def circle_polygon(cx: float, cy: float, radius: float) -> list[float]:
    """COCO polygon [x1, y1, ...] of `circle_vertices(radius)` points on the circle, from angle 0 (the
    rightmost point) counter-clockwise in image coordinates."""
    n = circle_vertices(radius)
    out: list[float] = []
    for k in range(n):
        a = 2.0 * math.pi * k / n
        out += [cx + radius * math.cos(a), cy + radius * math.sin(a)]
    return out


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class _Shape:
    index: int  # 1-based, as a person counts the shapes of a file
    label: str
    shape_type: str
    points: list[list[float]]
    group_id: int | None
    flags: dict[str, Any]
    description: str
    extra: dict[str, Any]
    mask: np.ndarray | None = None  # full-image bool mask, for mask shapes


@dataclass
class _File:
    json_path: Path
    image_path: Path  # absolute, normalised
    width: int
    height: int
    attributes: dict[str, Any]
    instances: list[tuple[str, str, Instance]] = field(default_factory=list)  # (label, where, instance without ids)


def read_labelme(folder_or_file: Path, image_root: Path | None = None, classes: list[str] | None = None,
                 sanitize: bool = True) -> AnnotationSet:
    """Read a folder of labelme JSON files (recursively; hidden files and folders skipped) or one file.
    sanitize=False keeps boxes exactly as the shapes give them (no clipping to the image, no dropping of
    zero-area boxes), as a conversion wants."""
    src = Path(folder_or_file)
    if src.is_file():
        folder, files = src.parent, [src]
    elif src.is_dir():
        folder = src
        files = sorted(p for p in src.rglob("*.json")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts))
        if not files:
            raise DataError(f"{src}: no labelme JSON files found")
    else:
        raise DataError(f"{src}: no such labelme file or folder")
    report = ReadReport(source=str(src))
    names = [n for n in classes if n not in RESERVED_LABELS] if classes is not None else _labels_txt(folder)
    fixed = names is not None
    cat_ids: dict[str, int] = {}
    for n in names or []:
        if n in cat_ids:
            raise DataError(f"{src}: class {n!r} is listed twice")
        cat_ids[n] = len(cat_ids) + 1

    root_given = Path(image_root) if image_root is not None else None
    parsed = [_read_file(p, folder, root_given, report) for p in files]

    root = root_given if root_given is not None else _common_root(folder, [f.image_path for f in parsed])
    root_abs = _abs(root)
    images: list[ImageRecord] = []
    instances: list[Instance] = []
    owner: dict[Path, Path] = {}
    for image_id, f in enumerate(parsed, start=1):
        if f.image_path in owner:
            raise DataError(f"{f.json_path}: annotates the image {f.image_path}, as {owner[f.image_path]} does")
        owner[f.image_path] = f.json_path
        rel = os.path.relpath(f.image_path, root_abs)
        images.append(ImageRecord(image_id, Path(rel).as_posix(), f.width, f.height, f.attributes))
        for label, where, inst in f.instances:
            if label not in cat_ids:
                if fixed:
                    listed = "the classes given" if classes is not None else _labels_txt_path(folder)
                    raise DataError(f"{where}: label {label!r} is not in {listed}")
                cat_ids[label] = len(cat_ids) + 1
            inst.id, inst.image_id, inst.category_id = len(instances) + 1, image_id, cat_ids[label]
            instances.append(inst)

    categories = [Category(cid, name) for name, cid in cat_ids.items()]
    aset = AnnotationSet(categories, images, instances, Path(root), report)
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset


def _labels_txt_path(folder: Path) -> Path | None:
    for candidate in (folder / LABELS_FILE, folder.parent / LABELS_FILE):
        if candidate.is_file():
            return candidate
    return None


def _labels_txt(folder: Path) -> list[str] | None:
    path = _labels_txt_path(folder)
    if path is None:
        return None
    note_input(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
    names = [s.strip() for s in lines]
    return [n for n in names if n and n not in RESERVED_LABELS]


def _abs(p: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(p)))


def _common_root(folder: Path, image_paths: list[Path]) -> Path:
    """The folder read when it holds every image, else the deepest folder that does (file names never start
    with ..)."""
    base = _abs(folder)
    if all(p.is_relative_to(base) for p in image_paths):
        return folder
    return Path(os.path.commonpath([str(p.parent) for p in image_paths]))


def _load_json(path: Path) -> dict[str, Any]:
    data = read_json(path, "labelme file")
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(f"{path}: not a labelme file (no 'shapes' list)")
    return data


def _read_file(json_path: Path, folder: Path, image_root: Path | None, report: ReadReport) -> _File:
    data = _load_json(json_path)
    f = _image_of(json_path, data, folder, image_root)
    inside = _abs(json_path).is_relative_to(_abs(folder))
    name = Path(os.path.relpath(json_path, folder)).as_posix() if inside else str(json_path)
    shapes: list[_Shape] = []
    for k, raw in enumerate(data["shapes"], start=1):
        shape = _shape(json_path, name, k, raw, f.width, f.height, report)
        if shape is not None:
            shapes.append(shape)
    # One instance per (label, group_id) with a group id; one per shape without. First shape sets the order.
    groups: dict[Any, list[_Shape]] = {}
    for s in shapes:
        key: Any = (s.label, s.group_id) if s.group_id is not None else s.index
        groups.setdefault(key, []).append(s)
    for members in groups.values():
        where = f"{json_path}: shape {members[0].index} ({members[0].label!r})"
        f.instances.append((members[0].label, where, _instance(where, members, f.width, f.height)))
    return f


def _image_of(json_path: Path, data: dict[str, Any], folder: Path, image_root: Path | None) -> _File:
    where = str(json_path)
    declared_w = _size(data, "imageWidth", where)
    declared_h = _size(data, "imageHeight", where)
    image_data = data.get("imageData")
    if image_data is not None and not isinstance(image_data, str):
        raise DataError(f"{where}: imageData is neither null nor a base64 string")
    embedded = _embedded_image(json_path, image_data) if image_data else None

    image_path = data.get("imagePath")
    if image_path is None or image_path == "":
        if embedded is None:
            raise DataError(f"{where}: no imagePath and no imageData")
        image_path = f"{json_path.stem}{embedded[2]}"
    if not isinstance(image_path, str):
        raise DataError(f"{where}: imagePath {image_path!r} is not a string")
    path = _find_image(json_path, image_path, folder, image_root)

    attributes: dict[str, Any] = {}
    flags = data.get("flags")
    if flags is not None and not isinstance(flags, dict):
        raise DataError(f"{where}: image flags {flags!r} are not an object")
    if flags:
        attributes["flags"] = dict(flags)
    for key, value in data.items():
        if key in _IMAGE_ATTRS and key != "flags":
            raise DataError(f"{where}: key {key!r} clashes with a visiontl attribute name")
        if key not in _FILE_KEYS:
            attributes[key] = value
    if image_data:
        attributes["embedded_image"] = True

    if path.is_file():
        width, height = check_image(path)
        what = f"the image {path}"
    elif embedded is not None:
        width, height = embedded[0], embedded[1]
        what = "its imageData"
        attributes["image_data"] = image_data  # the only copy of the image: kept so that it is written back
        embed(path, image_data)  # and read from there by data check and training (docs/formats.md)
    elif declared_w and declared_h:
        width, height, what = declared_w, declared_h, ""
    else:
        raise DataError(f"{where}: image {image_path!r} not found ({path}), no imageData, "
                        "and no imageWidth/imageHeight")
    if (declared_w and declared_w != width) or (declared_h and declared_h != height):
        raise DataError(f"{where}: imageWidth x imageHeight {declared_w}x{declared_h} differs from {what} "
                        f"({width}x{height})")
    return _File(json_path, path, width, height, attributes)


def _size(data: dict[str, Any], key: str, where: str) -> int:
    v = data.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())) or v < 0:
        raise DataError(f"{where}: {key} {v!r} is not a whole number of pixels")
    return int(v)


def _embedded_image(json_path: Path, image_data: str) -> tuple[int, int, str]:
    """(width, height, file extension) of a base64 image, as seen after EXIF rotation."""
    try:
        raw = base64.b64decode(image_data, validate=False)
        with open_image(io.BytesIO(raw), f"{json_path}: imageData") as im:
            w, h = im.size
            fmt = (im.format or "png").lower()
            turn = orientation(im)
    except (binascii.Error, *DECODE_ERRORS) as exc:
        raise DataError(f"{json_path}: imageData is not a base64 image ({first_line(exc)})") from None
    ext = {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")
    return (h, w, ext) if turn in (5, 6, 7, 8) else (w, h, ext)


def _is_absolute_anywhere(text: str) -> bool:
    return text.startswith("/") or PureWindowsPath(text).is_absolute() or text.startswith("\\\\")


def _find_image(json_path: Path, image_path: str, folder: Path, image_root: Path | None) -> Path:
    """Where the image is (absolute, normalised); where it would be when it is nowhere."""
    text = image_path.replace("\\", "/")
    name = PurePosixPath(text).name
    here = json_path.parent
    candidates = []
    if not _is_absolute_anywhere(image_path):
        candidates.append(_abs(here / text))
    # An absolute path names a file of the machine that wrote the JSON: never opened as written (it could be
    # any file here), only its name is looked for beside the JSON (and in image_root).
    candidates.append(_abs(here / name))
    if image_root is not None:
        root = _abs(image_root)
        inside = [c for c in candidates if c.is_relative_to(root)]
        sub = _abs(here).relative_to(_abs(folder)) if _abs(here).is_relative_to(_abs(folder)) else Path()
        candidates = inside + [_abs(root / sub / name), _abs(root / name)]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def _shape(json_path: Path, name: str, k: int, raw: Any, width: int, height: int,
           report: ReadReport) -> _Shape | None:
    where = f"{json_path}: shape {k}"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: not an object")
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"{where}: 'label' {label!r} is missing, empty or not a string")
    where = f"{where} ({label!r})"
    shape_type = raw.get("shape_type")
    if shape_type is None:
        shape_type = "polygon"  # labelme's own default for files without shape types
    if shape_type not in HELD_TYPES + DROPPED_TYPES:
        raise DataError(f"{where}: unknown shape_type {shape_type!r} (labelme's: "
                        f"{', '.join(HELD_TYPES + DROPPED_TYPES)})")
    points = _points(raw.get("points"), f"{where}, {shape_type}")
    if shape_type in DROPPED_TYPES:
        report.dropped.append(f"{name}: shape {k} ({label!r}, {shape_type}): no area, not held")
        return None
    if label in RESERVED_LABELS:
        report.dropped.append(f"{name}: shape {k} ({label!r}, {shape_type}): an ignore region, not held")
        return None
    need = _MIN_POINTS[shape_type]
    exact = shape_type != "polygon"
    if len(points) < need or (exact and len(points) != need):
        raise DataError(f"{where}: a {shape_type} needs {'at least ' if not exact else ''}{need} points, "
                        f"got {len(points)}")

    group_id = raw.get("group_id")
    if group_id is not None:
        if isinstance(group_id, bool) or not (isinstance(group_id, int)
                                              or (isinstance(group_id, float) and group_id.is_integer())):
            raise DataError(f"{where}: group_id {group_id!r} is not an integer")
        group_id = int(group_id)
    flags = raw.get("flags")
    if flags is not None and not isinstance(flags, dict):
        raise DataError(f"{where}: flags {flags!r} are not an object")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise DataError(f"{where}: description {description!r} is not a string")
    extra = {key: value for key, value in raw.items() if key not in _SHAPE_KEYS}
    clash = sorted(set(extra) & _INSTANCE_ATTRS)
    if clash:
        raise DataError(f"{where}: key {clash[0]!r} clashes with a visiontl attribute name")
    shape = _Shape(k, label, shape_type, points, group_id, dict(flags or {}), description or "", extra)
    if shape_type == "mask":
        shape.mask = _mask(raw.get("mask"), points, width, height, where, report)
    return shape


def _points(raw: Any, where: str) -> list[list[float]]:
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'points' is missing or not a list")
    out = []
    for j, p in enumerate(raw, start=1):
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(is_number(v) for v in p)):
            raise DataError(f"{where}: point {j} {p!r} is not [x, y] with finite numbers")
        out.append([float(p[0]), float(p[1])])
    return out


def _mask(raw: Any, points: list[list[float]], width: int, height: int, where: str, report: ReadReport) -> np.ndarray:
    if not isinstance(raw, str) or not raw:
        raise DataError(f"{where}: a mask shape needs 'mask', a base64 PNG")
    try:
        with open_image(io.BytesIO(base64.b64decode(raw, validate=False)), f"{where}: 'mask'") as im:
            patch = np.asarray(im) != 0
    except (binascii.Error, *DECODE_ERRORS) as exc:
        raise DataError(f"{where}: 'mask' is not a base64 image ({first_line(exc)})") from None
    if patch.ndim == 3:
        patch = patch.any(axis=2)
    # labelme puts the patch's top-left pixel at the rounded first point (its extent is the patch's own).
    x1, y1 = (int(round(v)) for v in points[0])
    ph, pw = patch.shape
    full = np.zeros((height, width), dtype=bool)
    ys, ye, xs, xe = max(y1, 0), min(y1 + ph, height), max(x1, 0), min(x1 + pw, width)
    if ys < ye and xs < xe:
        full[ys:ye, xs:xe] = patch[ys - y1:ye - y1, xs - x1:xe - x1]
    if (ys, ye, xs, xe) != (y1, y1 + ph, x1, x1 + pw) and patch.any():
        report.clipped += 1
    return full


def _shape_polygon(s: _Shape) -> list[float]:
    if s.shape_type == "rectangle":
        (ax, ay), (bx, by) = s.points
        x1, x2, y1, y2 = min(ax, bx), max(ax, bx), min(ay, by), max(ay, by)
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    if s.shape_type == "circle":
        (cx, cy), (px, py) = s.points
        return circle_polygon(cx, cy, math.hypot(px - cx, py - cy))
    return [v for p in s.points for v in p]


def _shape_box(s: _Shape) -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 of a non-mask shape; a circle's exact box, not its polygon's."""
    if s.shape_type == "circle":
        (cx, cy), (px, py) = s.points
        r = math.hypot(px - cx, py - cy)
        return cx - r, cy - r, cx + r, cy + r
    xs, ys = [p[0] for p in s.points], [p[1] for p in s.points]
    return min(xs), min(ys), max(xs), max(ys)


def _rle(mask: np.ndarray) -> tuple[dict[str, Any], tuple[float, float, float, float]]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    counts = rle["counts"]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}, (x, y, w, h)


def _rasterise(polygon: list[float], width: int, height: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(mask_utils.frPyObjects([polygon], height, width)).any(axis=2)


def _instance(where: str, members: list[_Shape], width: int, height: int) -> Instance:
    first = members[0]
    attributes: dict[str, Any] = {}
    if first.group_id is not None:
        attributes["group_id"] = first.group_id
    if first.flags:
        attributes["flags"] = dict(first.flags)
    if first.description:
        attributes["description"] = first.description
    extra = dict(first.extra)
    score = extra.pop("score", None)
    iscrowd = bool(extra.pop("iscrowd", False))
    attributes.update(extra)
    for s in members[1:]:  # a group: per-shape score / iscrowd go with the whole instance
        if s.extra.get("iscrowd"):
            iscrowd = True
    if score is not None and not is_number(score):
        raise DataError(f"{where}: score {score!r} is not a finite number")

    if any(s.shape_type == "mask" for s in members):
        full = np.zeros((height, width), dtype=bool)
        for s in members:
            full |= s.mask if s.mask is not None else _rasterise(_shape_polygon(s), width, height)
        segmentation, bbox = _rle(full)
    elif len(members) == 1 and first.shape_type == "rectangle":
        segmentation, bbox = None, _xywh(_shape_box(first))
    else:
        segmentation = [_shape_polygon(s) for s in members]
        boxes = [_shape_box(s) for s in members]
        bbox = _xywh((min(b[0] for b in boxes), min(b[1] for b in boxes),
                      max(b[2] for b in boxes), max(b[3] for b in boxes)))
        if len(members) == 1:
            if first.shape_type == "circle":
                attributes["circle"] = [list(p) for p in first.points]
            elif first.shape_type == "oriented_rectangle":
                attributes["shape_type"] = "oriented_rectangle"
        elif any(s.shape_type != "polygon" or (s.flags, s.description, s.extra) != (first.flags, first.description,
                                                                                     first.extra) for s in members):
            parts = []
            for s in members:
                part: dict[str, Any] = {"shape_type": s.shape_type, "flags": dict(s.flags),
                                        "description": s.description, "extra": dict(s.extra)}
                if s.shape_type == "circle":
                    part["points"] = [list(p) for p in s.points]
                parts.append(part)
            attributes["labelme_parts"] = parts
    return Instance(0, 0, 0, bbox, iscrowd=iscrowd, segmentation=segmentation,
                    score=float(score) if score is not None else None, attributes=attributes)


def _xywh(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1, y1, x2 - x1, y2 - y1)


# ---------------------------------------------------------------------------------------------- writing


def write_labelme(aset: AnnotationSet, folder: Path, embed_images: bool = False) -> WriteReport:
    """Write one labelme JSON per image under `folder` (mirroring the images' sub-folders) and a labels.txt.
    Everything is checked before the first file is written."""
    folder = Path(folder)
    check_text_names(aset, "labelme")
    report = WriteReport(target=str(folder))
    cats = sorted(aset.categories, key=lambda c: c.id)
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for c in cats:
        if "\n" in c.name or "\r" in c.name or not c.name.strip():
            raise DataError(f"{aset.report.source}: category {c.id} name {c.name!r} cannot be a labelme label")
        if c.name in seen:
            raise DataError(f"{aset.report.source}: categories {seen[c.name]} and {c.id} are both named {c.name!r}; "
                            "labelme tells classes apart by name only")
        seen[c.name] = c.id
        names[c.id] = c.name
    if [c.id for c in cats] != list(range(1, len(cats) + 1)):
        ids = f"{[c.id for c in cats][:8]}{'...' if len(cats) > 8 else ''}"
        report.lost.append(f"category ids {ids} become 1..{len(cats)} in id order (labelme keeps class names, not ids)")

    targets: dict[Path, str] = {}
    base = _abs(folder)
    plan = []
    for img in aset.images:
        json_path = _abs(folder / Path(img.file_name).with_suffix(".json"))
        if not json_path.is_relative_to(base):
            raise DataError(f"{aset.report.source}: image {img.id} ({img.file_name}): its JSON would be outside "
                            f"{folder}")
        if json_path in targets:
            raise DataError(f"{aset.report.source}: images {targets[json_path]} and {img.file_name} would both be "
                            f"written to {json_path}")
        targets[json_path] = img.file_name
        image_path = _abs(aset.image_path(img))
        if embed_images and image_path.is_file():
            check_image(image_path)  # an unreadable image stops the writer here, before any file is written
        elif embed_images and not isinstance(img.attributes.get("image_data"), str):
            raise DataError(f"{image_path}: image file not found, cannot embed it (image {img.id}, {img.file_name})")
        plan.append((img, json_path, image_path))

    by_image = aset.by_image()
    docs = [(img, json_path, image_path, _document(img, by_image[img.id], names, json_path, image_path, report))
            for img, json_path, image_path in plan]
    for img, json_path, image_path, doc in docs:
        doc["imageData"] = _image_data(img, image_path, embed_images)  # one image in memory at a time
        atomic_write_text(json_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        doc["imageData"] = None
        report.images += 1
    atomic_write_text(folder / LABELS_FILE, "".join(f"{n}\n" for n in (*RESERVED_LABELS, *names.values())))
    return report


def _document(img: ImageRecord, instances: list[Instance], names: dict[int, str], json_path: Path,
              image_path: Path, report: WriteReport) -> dict[str, Any]:
    where = f"{img.file_name}"
    flags = img.attributes.get("flags") or {}
    if not _is_flags(flags):
        report.lost.append(f"{where}: image flags {flags!r} are not names to true/false")
        flags = {}
    extra: dict[str, Any] = {}
    for key, value in img.attributes.items():
        if key in _IMAGE_ATTRS:
            continue
        if key in _FILE_KEYS:
            report.lost.append(f"{where}: image attribute {key!r} clashes with labelme's key")
        elif not _is_json(value):
            report.lost.append(f"{where}: image attribute {key!r} is not JSON")
        else:
            extra[key] = value

    used = {inst.attributes.get("group_id") for inst in instances}
    used_ids = {g for g in used if isinstance(g, int) and not isinstance(g, bool)}
    taken: set[tuple[str, int]] = set()
    next_free = [max(used_ids, default=-1) + 1]

    def fresh() -> int:
        while next_free[0] in used_ids:
            next_free[0] += 1
        used_ids.add(next_free[0])
        return next_free[0]

    shapes: list[dict[str, Any]] = []
    for inst in instances:
        at = f"{where}: annotation {inst.id}"
        shapes += _shapes_of(inst, names[inst.category_id], img, at, taken, fresh, report)
        tight = _tight_box(inst, img)
        if tight is not None and any(abs(a - b) > 0.01 for a, b in zip(_clip(inst.bbox, img), _clip(tight, img))):
            report.lost.append(f"{at}: box {[round(v, 2) for v in inst.bbox]} is not its shape's bounding box "
                               f"{[round(v, 2) for v in tight]} (labelme keeps the shape only)")
        if inst.area is not None:  # what reads back is None: the mask's area, else the box's
            computed = _computed_area(inst, img, at)
            if abs(inst.area - computed) > 1.0:
                report.lost.append(f"{at}: area {inst.area:g} (labelme has no area; it reads back as {computed:g})")

    doc: dict[str, Any] = {
        "version": LABELME_VERSION,
        "flags": dict(flags),
        "shapes": shapes,
        "imagePath": Path(os.path.relpath(image_path, json_path.parent)).as_posix(),
        "imageData": None,  # filled in when the file is written
        "imageHeight": img.height,
        "imageWidth": img.width,
    }
    doc.update(extra)
    return doc


def _image_data(img: ImageRecord, image_path: Path, embed: bool) -> str | None:
    if image_path.is_file():
        if not embed:
            return None
        raw = image_path.read_bytes()
        try:
            with open_image(io.BytesIO(raw), image_path) as im:
                turn = orientation(im)
                if turn != 1:
                    # labelme shows embedded pixels as stored: embed them turned upright, as labelme itself does
                    im.load()
                    buf = io.BytesIO()
                    upright(im, turn).save(buf, format="PNG")
                    raw = buf.getvalue()
        except DECODE_ERRORS as exc:
            raise DataError(f"{image_path}: not a readable image, cannot embed it ({first_line(exc)})") from None
        return base64.b64encode(raw).decode("ascii")
    stored = img.attributes.get("image_data")
    return stored if isinstance(stored, str) else None  # the image exists only embedded: keep it


def _shapes_of(inst: Instance, label: str, img: ImageRecord, where: str, taken: set[tuple[str, int]],
               fresh: Any, report: WriteReport) -> list[dict[str, Any]]:
    attrs = dict(inst.attributes)
    group_id = attrs.pop("group_id", None)
    if group_id is not None and (isinstance(group_id, bool) or not isinstance(group_id, int)):
        report.lost.append(f"{where}: group_id {group_id!r} is not an integer")
        group_id = None
    flags = attrs.pop("flags", None) or {}
    if not _is_flags(flags):
        report.lost.append(f"{where}: flags {flags!r} are not names to true/false")
        flags = {}
    description = attrs.pop("description", None) or ""
    if not isinstance(description, str):
        report.lost.append(f"{where}: description {description!r} is not a string")
        description = ""
    circle = attrs.pop("circle", None)
    kind = attrs.pop("shape_type", None)
    parts = attrs.pop("labelme_parts", None)
    first_extra: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if inst.score is not None:
        extra["score"] = float(inst.score)
    if inst.iscrowd:
        extra["iscrowd"] = True
    for key, value in attrs.items():
        if key in _SHAPE_KEYS or key in ("score", "iscrowd"):
            report.lost.append(f"{where}: attribute {key!r} clashes with a labelme shape key")
        elif not _is_json(value):
            report.lost.append(f"{where}: attribute {key!r} is not JSON")
        else:
            extra[key] = value

    def shape(shape_type: str, points: list[list[float]], gid: int | None, mask: str | None = None,
              part: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": label,
            "points": points,
            "group_id": gid,
            "description": part.get("description", "") if part else description,
            "shape_type": shape_type,
            "flags": dict(part.get("flags", {})) if part else dict(flags),
            "mask": mask,
        }
        if part is None:
            out.update(extra)
        else:  # the part's own keys, and those the instance has gained since it was read
            out.update(part.get("extra", {}))
            out.update({k: v for k, v in extra.items() if k not in first_extra})
        return out

    def claim(gid: int | None, needed: bool) -> int | None:
        if gid is None and not needed:
            return None
        if gid is None or (label, gid) in taken:
            if gid is not None:
                report.lost.append(f"{where}: group_id {gid} is already used by another {label!r}; "
                                   "written as a new group")
            gid = fresh()
        taken.add((label, gid))
        return gid

    seg = inst.segmentation
    if isinstance(seg, dict):
        return [_mask_shape(inst, img, where, claim(group_id, False), shape, report)]
    polygons = []
    for j, poly in enumerate(seg or [], start=1):
        ok = (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
              and all(is_number(v) for v in poly))
        if ok:
            polygons.append([[float(poly[i]), float(poly[i + 1])] for i in range(0, len(poly), 2)])
        else:
            report.lost.append(f"{where}: polygon {j} is not 3 or more finite points")
    if not polygons:
        if seg:
            report.lost.append(f"{where}: no usable polygon; written as its box")
        x, y, w, h = inst.bbox
        report.boxes += 1
        return [shape("rectangle", [[x, y], [x + w, y + h]], claim(group_id, False))]

    report.polygons += 1
    gid = claim(group_id, len(polygons) > 1)
    if len(polygons) == 1:
        if _valid_circle(circle):
            return [shape("circle", [list(map(float, p)) for p in circle], gid)]
        if circle is not None:
            report.lost.append(f"{where}: circle attribute {circle!r} is not two points; written as a polygon")
        kind = "oriented_rectangle" if kind == "oriented_rectangle" and len(polygons[0]) == 4 else "polygon"
        return [shape(kind, polygons[0], gid)]
    if parts is not None and not _valid_parts(parts, len(polygons)):
        report.lost.append(f"{where}: labelme_parts does not match its {len(polygons)} polygons; written as polygons")
        parts = None
    if parts:
        first_extra = parts[0].get("extra", {})
    out = []
    for j, points in enumerate(polygons):
        part = parts[j] if parts else None
        kind = part["shape_type"] if part else "polygon"
        if kind == "rectangle":
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            points = [[min(xs), min(ys)], [max(xs), max(ys)]]
        elif kind == "circle":
            points = [list(map(float, p)) for p in part["points"]]  # type: ignore[index]
        elif kind == "oriented_rectangle" and len(points) != 4:
            kind = "polygon"
        out.append(shape(kind, points, gid, part=part))
    return out


def _mask_shape(inst: Instance, img: ImageRecord, where: str, gid: int | None, shape: Any,
                report: WriteReport) -> dict[str, Any]:
    from visiontl.data.masks import instance_mask

    full = instance_mask(inst, img.height, img.width, where)
    ys, xs = np.nonzero(full)
    if not len(xs):
        report.lost.append(f"{where}: its mask has no pixels; written as its box")
        x, y, w, h = inst.bbox
        report.boxes += 1
        return shape("rectangle", [[x, y], [x + w, y + h]], gid)
    x1, x2, y1, y2 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    buf = io.BytesIO()
    Image.fromarray(full[y1:y2 + 1, x1:x2 + 1].astype(np.uint8)).save(buf, format="PNG")
    report.masks += 1
    # The second point is the last pixel of the box, inclusive (labelme 5.2's convention).
    return shape("mask", [[float(x1), float(y1)], [float(x2), float(y2)]], gid,
                 mask=base64.b64encode(buf.getvalue()).decode("ascii"))


def _tight_box(inst: Instance, img: ImageRecord) -> tuple[float, float, float, float] | None:
    """The box reading the written shape gives back (before clipping); None for a box-only instance."""
    seg = inst.segmentation
    if isinstance(seg, dict):
        from pycocotools import mask as mask_utils

        try:
            rle = mask_utils.frPyObjects(seg, *seg["size"]) if isinstance(seg.get("counts"), list) else seg
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
        except Exception:  # pycocotools raises bare exceptions; the mask writer has said what is wrong
            return None
        return None if w * h == 0 else (x, y, w, h)
    polygons = [p for p in seg or [] if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                and all(is_number(v) for v in p)]
    if not polygons:
        return None
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


def _clip(box: tuple[float, float, float, float], img: ImageRecord) -> tuple[float, float, float, float]:
    x, y, w, h = box
    x1, y1 = min(max(x, 0.0), img.width), min(max(y, 0.0), img.height)
    x2, y2 = min(max(x + w, 0.0), img.width), min(max(y + h, 0.0), img.height)
    return (x1, y1, x2, y2)


def _computed_area(inst: Instance, img: ImageRecord, where: str) -> float:
    if inst.segmentation is None:
        return float(inst.bbox[2] * inst.bbox[3])
    from visiontl.data.masks import instance_mask

    return float(instance_mask(inst, img.height, img.width, where).sum())


def _valid_circle(c: Any) -> bool:
    return (isinstance(c, (list, tuple)) and len(c) == 2
            and all(isinstance(p, (list, tuple)) and len(p) == 2
                    and all(is_number(v) for v in p)
                    for p in c))


def _valid_parts(parts: Any, n: int) -> bool:
    if not isinstance(parts, list) or len(parts) != n:
        return False
    for p in parts:
        if not isinstance(p, dict) or p.get("shape_type") not in HELD_TYPES or p["shape_type"] == "mask":
            return False
        if not _is_flags(p.get("flags", {})) or not isinstance(p.get("description", ""), str):
            return False
        if not isinstance(p.get("extra", {}), dict) or set(p.get("extra", {})) & _SHAPE_KEYS:
            return False
        if p["shape_type"] == "circle" and not _valid_circle(p.get("points")):
            return False
    return True


def _is_flags(flags: Any) -> bool:
    return isinstance(flags, dict) and all(isinstance(k, str) and isinstance(v, bool) for k, v in flags.items())


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_labelme(src, images, sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_labelme(aset, out)


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_labelme(root / split, images)
