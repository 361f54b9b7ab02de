"""Reading labelme JSON files into an `AnnotationSet` (see the package docstring)."""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from visiontl.data import rle
from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.formats.common import first_line, is_number, note_input, read_json
from visiontl.data.formats.labelme.codec import (
    DROPPED_TYPES,
    FILE_KEYS,
    HELD_TYPES,
    IMAGE_ATTRS,
    INSTANCE_ATTRS,
    LABELS_FILE,
    RESERVED_LABELS,
    SHAPE_KEYS,
    abs_path,
    circle_polygon,
    mask_patch,
)
from visiontl.data.images import DECODE_ERRORS, check_image, embed, open_image, orientation
from visiontl.errors import DataError

_MIN_POINTS = {"rectangle": 2, "polygon": 3, "circle": 2, "oriented_rectangle": 4, "mask": 2}


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
    root_abs = abs_path(root)
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




def _common_root(folder: Path, image_paths: list[Path]) -> Path:
    """The folder read when it holds every image, else the deepest folder that does (file names never start
    with ..)."""
    base = abs_path(folder)
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
    inside = abs_path(json_path).is_relative_to(abs_path(folder))
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
        if key in IMAGE_ATTRS and key != "flags":
            raise DataError(f"{where}: key {key!r} clashes with a visiontl attribute name")
        if key not in FILE_KEYS:
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
        candidates.append(abs_path(here / text))
    # An absolute path names a file of the machine that wrote the JSON: never opened as written (it could be
    # any file here), only its name is looked for beside the JSON (and in image_root).
    candidates.append(abs_path(here / name))
    if image_root is not None:
        root = abs_path(image_root)
        inside = [c for c in candidates if c.is_relative_to(root)]
        sub = abs_path(here).relative_to(abs_path(folder)) if abs_path(here).is_relative_to(abs_path(folder)) else Path()
        candidates = inside + [abs_path(root / sub / name), abs_path(root / name)]
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
    extra = {key: value for key, value in raw.items() if key not in SHAPE_KEYS}
    clash = sorted(set(extra) & INSTANCE_ATTRS)
    if clash:
        raise DataError(f"{where}: key {clash[0]!r} clashes with a visiontl attribute name")
    shape = _Shape(k, label, shape_type, points, group_id, dict(flags or {}), description or "", extra)
    if shape_type == "mask":
        shape.mask, cut = mask_patch(raw.get("mask"), points, width, height, where)
        report.clipped += cut
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
            full |= s.mask if s.mask is not None else rle.decode([_shape_polygon(s)], height, width)
        segmentation = rle.encode(full)
        bbox = rle.box(segmentation, height, width)
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


