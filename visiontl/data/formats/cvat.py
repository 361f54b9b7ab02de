"""CVAT for images 1.1 XML <-> `AnnotationSet` (task and project exports; track-based video exports read).

A CVAT file is `<annotations>` with `<version>1.1</version>`, a `<meta>` (a `<task>`, a `<job>` or a `<project>`
with its `<tasks>`, each with `<labels>`), then `<image id name width height [subset task_id]>` elements holding
shapes, or (video exports) `<track id label>` elements holding one shape per frame. Coordinates are pixels
with the origin at the top-left corner of the image, as in COCO; they are kept as written.

Reading (`read_cvat`):

- categories: the labels of `<meta>`, ids 1..N in their order (a label with no shapes is still a category;
  a skeleton's point sub-labels, those with a `<parent>`, are not); without labels in the meta, the shape
  labels in order of first appearance. A shape whose label is not in the meta's labels is an error;
- images: the `<image>` elements in file order. The image id is CVAT's `id` when the ids are unique in the
  file, else (project exports number the frames of each task from 0) every image is renumbered 0..N-1 in
  file order and CVAT's id is kept as `attributes["cvat_id"]`. `subset` and `task_id` are kept in
  `attributes`. File names are CVAT's names when they are unique in the file; when two images share a name
  (project exports: `img1.jpg` in train and in val), every image becomes `<subset>/<name>` (`default` for an
  image without a subset), CVAT's own dataset layout (`images/<subset>/<name>`); when that still collides
  (two tasks of one subset), `task_<task_id>/<name>`. A missing or zero size is read from the image;
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
  model: each kind is counted in `ReadReport.dropped`, one line per kind, never dropped silently;
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

import math
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from pycocotools import mask as mask_utils

from visiontl.atomic import atomic_write_bytes
from visiontl.data.annotations import (
    AnnotationSet,
    Box,
    Category,
    ImageRecord,
    Instance,
    ReadReport,
    WriteReport,
    check_text_names,
    sanitize_boxes,
)
from visiontl.data.formats.rotation import check_rotated_box, envelope, from_cvat, normalize_angle, to_cvat
from visiontl.data.images import check_image
from visiontl.data.masks import rle_problem
from visiontl.data.formats.common import note_input, parse_number, relative_name, short
from visiontl.errors import DataError

__all__ = ["cvat_rle_to_mask", "mask_to_cvat_rle", "read_cvat", "write_cvat"]

_HELD = ("box", "polygon", "mask")
# Shape fields CVAT writes as XML attributes of the shape element; kept under these names in Instance.attributes,
# except `rotation`, which becomes attributes["rotated_box"] (the model's convention, see rotation.py).
_SHAPE_FIELDS = ("occluded", "z_order", "group_id", "source", "rotation")
_FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
_DECIMALS = 2


# --- CVAT mask RLE ----------------------------------------------------------------------------------------


def cvat_rle_to_mask(counts: list[int], left: int, top: int, width: int, height: int,
                     image_height: int, image_width: int) -> tuple[np.ndarray, bool]:
    """The image-sized bool mask of a CVAT mask, and whether part of it lay outside the image (cut off).

    `counts` are run lengths over the width x height box at (left, top), row-major, alternating background and
    foreground, starting with background. Raises ValueError when they do not cover the box exactly."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise ValueError("run lengths must be non-negative integers")
    if int(runs.sum()) != width * height:
        raise ValueError(f"run lengths sum to {int(runs.sum())}, not width * height = {width * height}")
    values = (np.arange(len(runs)) % 2).astype(bool)  # background first
    box = np.repeat(values, runs).reshape(height, width)
    full = np.zeros((image_height, image_width), dtype=bool)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, image_height), min(left + width, image_width)
    inside = box[y0 - top:max(y1, y0) - top, x0 - left:max(x1, x0) - left]
    if y1 > y0 and x1 > x0:
        full[y0:y1, x0:x1] = inside
    cut = int(inside.sum()) != int(box.sum())
    return full, cut


def mask_to_cvat_rle(mask: np.ndarray) -> tuple[list[int], int, int, int, int] | None:
    """(counts, left, top, width, height) of a 2-D mask over its tight box; None for an empty mask."""
    mask = np.asarray(mask).astype(bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    flat = mask[top:top + height, left:left + width].ravel()  # row-major
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)  # CVAT's runs start with background
    return [int(r) for r in runs], left, top, width, height


def _coco_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _coco_mask(seg: dict[str, Any] | list[list[float]], height: int, width: int) -> np.ndarray:
    """HxW bool mask of COCO polygons or an RLE dict (compressed or not). Raises ValueError/TypeError."""
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in seg], height, width))
        elif rle_problem(seg, height, width) is not None:
            raise ValueError(rle_problem(seg, height, width))  # never handed to pycocotools
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            counts = seg["counts"]
            rle = {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(rle).astype(bool)


# --- reading ----------------------------------------------------------------------------------------------


@dataclass
class _Task:
    subset: str | None = None
    start: int | None = None
    stop: int | None = None
    step: int = 1
    width: int = 0
    height: int = 0


@dataclass
class _Frame:
    """One image of the file: an `<image>` element, or a video frame that tracks refer to."""

    cvat_id: int
    name: str
    width: int
    height: int
    subset: str | None
    task_id: int | None
    element: ET.Element | None = None
    record: ImageRecord | None = None

    def label(self) -> str:
        task = f" of task {self.task_id}" if self.task_id is not None else ""
        return f"image {self.cvat_id}{task} ({self.name})"


@dataclass
class _Reader:
    path: Path
    cat_ids: dict[str, int]
    fixed: bool  # the labels come from the meta: a shape with another label is an error
    specs: dict[str, dict[str, str]]  # label -> attribute name -> input_type
    instances: list[Instance] = field(default_factory=list)
    dropped: dict[str, list[Any]] = field(default_factory=dict)  # kind -> [count, first place]
    cut: int = 0
    unrotated: list[Any] = field(default_factory=lambda: [0, None])  # non-box shapes' rotations: [count, first]

    def label(self, name: str | None, where: str) -> int:
        if not name:
            raise DataError(f"{where}: no label")
        if name not in self.cat_ids:
            if self.fixed:
                raise DataError(f"{where}: label {name!r} is not in the file's <labels> ({', '.join(self.cat_ids)})")
            self.cat_ids[name] = len(self.cat_ids) + 1
        return self.cat_ids[name]

    def drop(self, kind: str, where: str) -> None:
        entry = self.dropped.setdefault(kind, [0, where])
        entry[0] += 1

    def shape(self, el: ET.Element, label: str | None, frame: _Frame, where: str,
              attributes: dict[str, Any]) -> None:
        """Add the instance of one held shape (box, polygon, mask); count any other kind as dropped."""
        category_id = self.label(label, where)
        if el.tag not in _HELD:
            self.drop(el.tag, frame.record.file_name if frame.record else frame.name)
            return
        assert frame.record is not None
        rec = frame.record
        seg: list[list[float]] | dict[str, Any] | None = None
        corners: tuple[float, float, float, float] | None = None
        if el.tag == "box":
            xtl, ytl, xbr, ybr = (_float_attr(el, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
            if xbr < xtl or ybr < ytl:
                raise DataError(f"{where}: box corners ({xtl}, {ytl}) - ({xbr}, {ybr}) are in the wrong order")
            bbox = (xtl, ytl, xbr - xtl, ybr - ytl)
            corners = (xtl, ytl, xbr, ybr)
        elif el.tag == "polygon":
            points = _points(el, where)
            if len(points) < 6:
                raise DataError(f"{where}: a polygon needs at least 3 points, got {len(points) // 2}")
            seg = [points]
            xs, ys = points[0::2], points[1::2]
            bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        else:
            seg, bbox = self.mask(el, rec, where)
        for key in _SHAPE_FIELDS:
            text = el.get(key)
            if text is None:
                continue
            if key == "occluded":
                attributes[key] = _bool(text, key, where)
            elif key == "source":
                attributes[key] = text
            elif key == "rotation":
                angle = normalize_angle(parse_number(text, key, where))
                if angle and corners is not None:
                    rotated = from_cvat(*corners, angle)
                    bbox = envelope(rotated)
                    attributes["rotated_box"] = list(rotated)
                elif angle:
                    self.unrotated[0] += 1
                    self.unrotated[1] = self.unrotated[1] or rec.file_name
            else:
                attributes[key] = int(_integer(text, key, where))
        iscrowd = False
        score: float | None = None
        special: set[str] = set()  # is_crowd and score when they set the instance's own fields
        for child in el.findall("attribute"):
            name = child.get("name")
            if not name:
                raise DataError(f"{where}: an <attribute> has no name")
            if name in _SHAPE_FIELDS or name == "track_id" and "track_id" in attributes:
                raise DataError(f"{where}: attribute {name!r} clashes with CVAT's own shape field of that name")
            if name == "rotated_box":
                raise DataError(f"{where}: attribute 'rotated_box' clashes with the model's rotated box (a CVAT box "
                                "says its rotation with its 'rotation')")
            if name in attributes or name in special:
                raise DataError(f"{where}: attribute {name!r} is given twice")
            input_type = self.specs.get(label or "", {}).get(name)
            value = _attribute_value(child.text or "", input_type, f"{where}: attribute {name!r}")
            if name == "is_crowd" and (isinstance(value, bool) or value in ("true", "false", "1", "0")):
                iscrowd = value is True or value in ("true", "1")
                special.add(name)
                continue
            if name == "score" and _score(value) is not None:
                score = _score(value)
                special.add(name)
                continue
            attributes[name] = value
        self.instances.append(Instance(len(self.instances) + 1, rec.id, category_id, bbox, iscrowd, seg,
                                       score=score, attributes=attributes))

    def mask(self, el: ET.Element, rec: ImageRecord, where: str) -> tuple[dict[str, Any], Box]:
        text = el.get("rle")
        if text is None:
            raise DataError(f"{where}: a mask needs an 'rle' attribute")
        try:
            counts = [int(part) for part in text.replace(" ", "").split(",")]
        except ValueError:
            raise DataError(f"{where}: rle {short(text)!r} is not comma-separated integers") from None
        left, top = (int(_integer(el.get(k), k, where)) for k in ("left", "top"))
        width, height = (int(_integer(el.get(k), k, where)) for k in ("width", "height"))
        if width < 1 or height < 1:
            raise DataError(f"{where}: mask size {width}x{height} is empty")
        try:
            full, cut = cvat_rle_to_mask(counts, left, top, width, height, rec.height, rec.width)
        except ValueError as exc:
            raise DataError(f"{where}: rle of a {width}x{height} mask: {exc}") from None
        self.cut += cut
        seg = _coco_rle(full)
        x, y, w, h = (float(v) for v in mask_utils.toBbox({**seg, "counts": seg["counts"].encode("ascii")}))
        return seg, (x, y, w, h)


def read_cvat(xml_path: Path, image_root: Path | None = None, sanitize: bool = True) -> AnnotationSet:
    """Read a CVAT for images 1.1 XML file (task, job or project export; tracks included).

    Without `image_root`, images are looked for in `images/` beside the file (CVAT's zip layout), else
    beside it. sanitize=False keeps boxes exactly as written (no clipping, no dropping of empty boxes)."""
    xml_path = Path(xml_path)
    root = _parse(xml_path)
    if root.tag != "annotations":
        raise DataError(f"{xml_path}: not a CVAT XML file (the root is <{root.tag}>, expected <annotations>)")
    version = (root.findtext("version") or "").strip()
    if version and not version.startswith("1."):
        raise DataError(f"{xml_path}: CVAT XML version {version!r} is not supported (expected 1.1)")
    meta = root.find("meta")
    names, specs = _labels(xml_path, meta)
    tasks = _tasks(xml_path, meta)
    if image_root is None:
        image_root = xml_path.parent / "images" if (xml_path.parent / "images").is_dir() else xml_path.parent
    image_root = Path(image_root)

    reader = _Reader(xml_path, {n: i for i, n in enumerate(names, start=1)}, bool(names), specs)
    frames = _frames(xml_path, root, tasks, image_root)
    _name_and_number(xml_path, frames, image_root)
    by_key = {(f.task_id, f.cvat_id): f for f in frames}

    for frame in frames:
        if frame.element is None:
            continue
        for k, el in enumerate(frame.element, start=1):
            where = f"{xml_path}: {frame.label()}: shape {k} <{el.tag}>"
            reader.shape(el, el.get("label"), frame, where, {})
    has_images = bool(root.findall("image"))
    for n, track in enumerate(root.findall("track"), start=1):
        _track(reader, track, n, by_key, has_images)

    categories = [Category(cid, name) for name, cid in reader.cat_ids.items()]
    images = [f.record for f in frames if f.record is not None]
    report = ReadReport(source=str(xml_path))
    report.clipped = reader.cut
    for kind, (count, first) in reader.dropped.items():
        report.dropped.append(f"{xml_path}: {count} {kind} shape(s) dropped, the model holds boxes, polygons and "
                              f"masks only (first on {first})")
    if reader.unrotated[0]:
        report.dropped.append(f"{xml_path}: the rotation of {reader.unrotated[0]} polygon or mask shape(s) not read, "
                              f"CVAT rotates boxes only (first on {reader.unrotated[1]})")
    aset = AnnotationSet(categories, images, reader.instances, image_root, report)
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset


def _track(reader: _Reader, track: ET.Element, n: int, by_key: dict[tuple[int | None, int], _Frame],
           has_images: bool) -> None:
    path = reader.path
    track_where = f"{path}: track {track.get('id', f'#{n}')}"
    track_id = int(_integer(track.get("id"), "id", track_where)) if track.get("id") is not None else n - 1
    task_id = int(_integer(track.get("task_id"), "task_id", track_where)) if track.get("task_id") is not None else None
    for el in track:
        if el.tag == "track":
            continue  # the points of a skeleton track: the skeleton shapes themselves are counted as dropped
        frame_no = int(_integer(el.get("frame"), "frame", f"{track_where} <{el.tag}>"))
        where = f"{track_where} <{el.tag}> frame {frame_no}"
        if el.get("outside", "0") not in ("0", "1", "true", "false"):
            raise DataError(f"{where}: outside {el.get('outside')!r} is not 0 or 1")
        if el.get("outside") in ("1", "true"):
            continue
        frame = by_key.get((task_id, frame_no))
        if frame is None:
            task = f" of task {task_id}" if task_id is not None else ""
            if has_images:
                raise DataError(f"{where}: there is no <image> with id {frame_no}{task}")
            raise DataError(f"{where}: frame {frame_no} is outside the frames of the task{task}")
        attributes: dict[str, Any] = {"track_id": track_id}
        if track.get("group_id") is not None:
            attributes["group_id"] = int(_integer(track.get("group_id"), "group_id", track_where))
        if track.get("source") is not None and el.get("source") is None:
            attributes["source"] = track.get("source")
        reader.shape(el, track.get("label"), frame, where, attributes)


def _frames(path: Path, root: ET.Element, tasks: dict[int | None, _Task], image_root: Path) -> list[_Frame]:
    frames: list[_Frame] = []
    seen: dict[tuple[int | None, str | None, int], _Frame] = {}
    for n, el in enumerate(root.findall("image"), start=1):
        where = f"{path}: image #{n}"
        cvat_id = int(_integer(el.get("id"), "id", where))
        name = el.get("name")
        where = f"{path}: image {cvat_id}"
        if not name:
            raise DataError(f"{where}: no name")
        relative_name(name, where, "name")  # relative to the image folder, never ../ or absolute
        where = f"{where} ({name})"
        task_id = int(_integer(el.get("task_id"), "task_id", where)) if el.get("task_id") is not None else None
        width = int(_integer(el.get("width"), "width", where)) if el.get("width") else 0
        height = int(_integer(el.get("height"), "height", where)) if el.get("height") else 0
        frame = _Frame(cvat_id, name.replace("\\", "/"), width, height, el.get("subset") or None, task_id, el)
        key = (task_id, frame.subset, cvat_id)
        if key in seen:
            task = f" in task {task_id}" if task_id is not None else ""
            raise DataError(f"{where}: image id {cvat_id} is used twice{task} (also {seen[key].name})")
        seen[key] = frame
        frames.append(frame)
    if frames:
        return frames

    # A video export: the images are the frames.
    visited: dict[tuple[int | None, int], str | None] = {}
    for task_id, task in tasks.items():
        if task.stop is not None:
            for f in range(task.start or 0, task.stop + 1, task.step):
                visited[(task_id, f)] = task.subset
    for n, track in enumerate(root.findall("track"), start=1):
        where = f"{path}: track {track.get('id', f'#{n}')}"
        task_id = int(_integer(track.get("task_id"), "task_id", where)) if track.get("task_id") is not None else None
        for el in track:
            if el.tag == "track":
                continue
            f = int(_integer(el.get("frame"), "frame", f"{where} <{el.tag}>"))
            visited.setdefault((task_id, f), track.get("subset") or tasks.get(task_id, _Task()).subset)
    if not visited:
        raise DataError(f"{path}: no images (no <image> elements, no tracks and no frame range in <meta>)")
    keys = sorted(visited, key=lambda k: (-1 if k[0] is None else k[0], k[1]))
    first = keys[0]
    ext = next((e for e in _FRAME_EXTENSIONS for d in ("", visited[first] or "")
                if (image_root / d / f"frame_{first[1]:06d}{e}").is_file()), ".png")
    for task_id, f in keys:
        task = tasks.get(task_id, _Task())
        frames.append(_Frame(f, f"frame_{f:06d}{ext}", task.width, task.height, visited[(task_id, f)], task_id))
    return frames


def _name_and_number(path: Path, frames: list[_Frame], image_root: Path) -> None:
    """Give every frame its ImageRecord: distinct file names and ids (see the module docstring)."""
    names = [f.name for f in frames]
    if len(set(names)) != len(names):
        by_subset = [f"{f.subset or 'default'}/{f.name}" for f in frames]
        by_task = [f"task_{f.task_id}/{f.name}" if f.task_id is not None else f.name for f in frames]
        for candidate in (by_subset, by_task):
            if len(set(candidate)) == len(candidate):
                names = candidate
                break
        else:
            seen: dict[str, _Frame] = {}
            for f, key in zip(frames, by_task):
                if key in seen:
                    raise DataError(f"{path}: {f.label()}: {seen[key].label()} has the same name in the same "
                                    "task; images cannot be told apart")
                seen[key] = f
    ids = [f.cvat_id for f in frames]
    renumber = len(set(ids)) != len(ids)
    for i, (f, name) in enumerate(zip(frames, names)):
        relative_name(name, f"{path}: {f.label()}")  # a subset that climbs out (subset="../x") included
        attributes: dict[str, Any] = {}
        if f.subset is not None:
            attributes["subset"] = f.subset
        if f.task_id is not None:
            attributes["task_id"] = f.task_id
        if renumber:
            attributes["cvat_id"] = f.cvat_id
        width, height = f.width, f.height
        if not width or not height:  # 0 or absent: read the image header
            width, height = check_image(image_root / name)
        f.record = ImageRecord(i if renumber else f.cvat_id, name, width, height, attributes)


def _labels(path: Path, meta: ET.Element | None) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Label names in meta order (skeleton sub-labels left out) and each label's attribute input types."""
    names: list[str] = []
    specs: dict[str, dict[str, str]] = {}
    if meta is None:
        return names, specs
    for labels in meta.iter("labels"):
        for n, label in enumerate(labels.findall("label"), start=1):
            name = (label.findtext("name") or "").strip()
            if not name:
                raise DataError(f"{path}: <meta> label #{n} has no <name>")
            if label.find("parent") is not None and (label.findtext("parent") or "").strip():
                continue  # a skeleton's point: skeletons are not held
            if name not in specs:
                names.append(name)
                specs[name] = {}
            for attr in label.findall("attributes/attribute"):
                attr_name = (attr.findtext("name") or "").strip()
                if attr_name:
                    specs[name][attr_name] = (attr.findtext("input_type") or "text").strip().lower()
    return names, specs


def _tasks(path: Path, meta: ET.Element | None) -> dict[int | None, _Task]:
    """Frame ranges, sizes and subsets of the task (key None) or of each task of a project."""
    out: dict[int | None, _Task] = {}
    if meta is None:
        return out
    for tag in ("task", "job"):
        el = meta.find(tag)
        if el is not None:
            out[None] = _task(path, el, f"<meta><{tag}>")
    for el in meta.findall("project/tasks/task"):
        where = f"<meta> project task {el.findtext('id')}"
        out[int(_integer(el.findtext("id"), "id", f"{path}: {where}"))] = _task(path, el, where)
    return out


def _task(path: Path, el: ET.Element, where: str) -> _Task:
    def number(key: str) -> int | None:
        text = (el.findtext(key) or "").strip()
        return int(_integer(text, key, f"{path}: {where}")) if text else None

    step = re.search(r"step\s*=\s*(\d+)", el.findtext("frame_filter") or "")
    return _Task(
        subset=(el.findtext("subset") or "").strip() or None,
        start=number("start_frame"),
        stop=number("stop_frame"),
        step=max(int(step.group(1)), 1) if step else 1,
        width=number("original_size/width") or 0,
        height=number("original_size/height") or 0,
    )


def _parse(path: Path) -> ET.Element:
    note_input(path)
    try:
        return SafeET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except ET.ParseError as exc:
        raise DataError(f"{path}: not valid XML ({str(exc).splitlines()[0]})") from None
    except DefusedXmlException as exc:
        what = getattr(exc, "name", None)
        raise DataError(f"{path}: refused: the file declares XML entities or external references"
                        f"{f' ({what!r})' if what else ''}, which annotation files never need "
                        "(billion-laughs / external-entity attacks)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _float_attr(el: ET.Element, key: str, where: str) -> float:
    if el.get(key) is None:
        raise DataError(f"{where}: no '{key}'")
    return parse_number(el.get(key), key, where)


def _integer(text: str | None, what: str, where: str) -> int:
    if text is None:
        raise DataError(f"{where}: no '{what}'")
    value = parse_number(text.strip() if text is not None else None, what, where)
    if not value.is_integer():
        raise DataError(f"{where}: {what} {text!r} is not an integer")
    return int(value)


def _bool(text: str, what: str, where: str) -> bool:
    t = text.strip().lower()
    if t not in ("0", "1", "true", "false"):
        raise DataError(f"{where}: {what} {short(text)!r} is not 0 or 1")
    return t in ("1", "true")


def _points(el: ET.Element, where: str) -> list[float]:
    text = el.get("points")
    if text is None:
        raise DataError(f"{where}: no 'points'")
    out: list[float] = []
    for pair in text.strip().split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            raise DataError(f"{where}: points {short(text)!r} are not 'x,y;x,y;...'")
        out.extend(parse_number(v.strip(), "point", where) for v in xy)
    return out


def _score(value: Any) -> float | None:
    """The score an attribute `score` holds: a finite number, or a text that is one; else None."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _attribute_value(text: str, input_type: str | None, where: str) -> Any:
    if input_type == "checkbox":
        return _bool(text, "value", where)
    if input_type == "number":
        t = text.strip()
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        return parse_number(t, "value", where)
    return text


# --- writing ----------------------------------------------------------------------------------------------


def write_cvat(aset: AnnotationSet, xml_path: Path, source: str | None = None) -> WriteReport:
    """Write `aset` as a CVAT for images 1.1 task export, atomically. `source` None keeps each instance's own
    `attributes["source"]` ("manual" when it has none); a string ("auto" for pre-annotations, "manual") is
    written on every shape. Returns what was written and what CVAT cannot hold."""
    xml_path = Path(xml_path)
    aset.validate()
    check_text_names(aset, "CVAT")
    report = WriteReport(target=str(xml_path))
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for c in aset.categories:
        if c.name in seen:
            raise DataError(f"{xml_path}: categories {seen[c.name]} and {c.id} are both named {c.name!r}; "
                            "CVAT tells labels apart by name only")
        seen[c.name] = c.id
        names[c.id] = c.name
        if c.supercategory:
            report.lost.append(f"category {c.id} ({c.name}): supercategory {c.supercategory!r} (CVAT labels have none)")
    if [c.id for c in aset.categories] != list(range(1, len(aset.categories) + 1)):
        report.lost.append(f"category ids {_ids([c.id for c in aset.categories])}: CVAT labels have names only, "
                           "they read back as 1..N in this order")

    by_image = aset.by_image()
    shapes: list[tuple[ImageRecord, list[tuple[str, dict[str, str], dict[str, Any], str]]]] = []
    values: dict[str, dict[str, list[Any]]] = {c.name: {} for c in aset.categories}
    written_ids: list[int] = []
    for img in aset.images:
        extra = sorted(k for k in img.attributes if k != "subset")
        if extra:
            report.lost.append(f"image {img.id} ({img.file_name}): attribute(s) {', '.join(extra)} "
                               "(a task export's images have none)")
        row = []
        for inst in by_image[img.id]:
            where = f"image {img.id} ({img.file_name}): annotation {inst.id}"
            tag, fields, children = _shape_out(inst, img, source, where, report)
            label = names[inst.category_id]
            for key, value in children.items():
                values[label].setdefault(key, []).append(value)
            row.append((tag, {"label": label, **fields}, children, where))
            written_ids.append(inst.id)
        shapes.append((img, row))
    if written_ids != list(range(1, len(written_ids) + 1)):
        report.lost.append(f"annotation ids {_ids(written_ids)}: CVAT shapes have no ids, they read back as 1..N "
                           "in image order")

    specs = {label: {key: _input_type(vals) for key, vals in attrs.items()} for label, attrs in values.items()}
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = xml_path.stem
    ET.SubElement(task, "size").text = str(len(aset.images))
    ET.SubElement(task, "mode").text = "annotation"
    labels_el = ET.SubElement(task, "labels")
    for c in aset.categories:
        label_el = ET.SubElement(labels_el, "label")
        ET.SubElement(label_el, "name").text = c.name
        ET.SubElement(label_el, "type").text = "any"
        attrs_el = ET.SubElement(label_el, "attributes")
        for key, input_type in specs[c.name].items():
            _spec(ET.SubElement(attrs_el, "attribute"), key, input_type, values[c.name][key])

    for img, row in shapes:
        image_attrs = {"id": str(img.id), "name": img.file_name}
        if img.attributes.get("subset"):
            image_attrs["subset"] = str(img.attributes["subset"])
        image_attrs.update(width=str(img.width), height=str(img.height))
        image_el = ET.SubElement(root, "image", image_attrs)
        report.images += 1
        for tag, fields, children, where in row:
            shape_el = ET.SubElement(image_el, tag, fields)
            for key, value in children.items():
                text, exact = _attribute_text(value, specs[fields["label"]][key])
                if not exact:
                    report.lost.append(f"{where}: attribute {key!r} {short(repr(value))} written as text "
                                       f"(reads back as {text!r})")
                ET.SubElement(shape_el, "attribute", {"name": key}).text = text
            if tag == "box":
                report.boxes += 1
            elif tag == "polygon":
                report.polygons += 1
            else:
                report.masks += 1

    ET.indent(root, space="  ")
    text = '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    atomic_write_bytes(xml_path, text.encode("utf-8"))
    return report


def _shape_out(inst: Instance, img: ImageRecord, source: str | None, where: str,
               report: WriteReport) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The shape element's tag, its XML attributes (without the label) and its <attribute> children."""
    attrs = inst.attributes
    x, y, w, h = (float(v) for v in inst.bbox)
    tag, fields = "box", {}
    seg = inst.segmentation
    mask: np.ndarray | None = None
    if isinstance(seg, list) and seg:
        parts = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)]
        if len(parts) != len(seg):
            report.lost.append(f"{where}: segmentation {short(repr(seg))} is not COCO polygons; box written")
        elif len(parts) == 1:
            points = [float(v) for v in parts[0]]
            xs, ys = points[0::2], points[1::2]
            tag, tight = "polygon", (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            fields["points"] = ";".join(f"{_fmt(px)},{_fmt(py)}" for px, py in zip(xs, ys))
        else:
            mask = _coco_mask(parts, img.height, img.width)
            report.lost.append(f"{where}: polygon of {len(parts)} parts written as a mask (a CVAT polygon has one part)")
    elif isinstance(seg, dict):
        if list(seg.get("size", [])) != [img.height, img.width]:
            report.lost.append(f"{where}: RLE size {seg.get('size')} is not the image size "
                               f"[{img.height}, {img.width}]; box written")
        else:
            try:
                mask = _coco_mask(seg, img.height, img.width)
            except (ValueError, TypeError, KeyError) as exc:
                report.lost.append(f"{where}: RLE cannot be decoded ({exc}); box written")
    if mask is not None:
        rle = mask_to_cvat_rle(mask)
        if rle is None:
            report.lost.append(f"{where}: empty mask; box written")
        else:
            counts, left, top, mw, mh = rle
            tag, tight = "mask", (float(left), float(top), float(mw), float(mh))
            fields.update(rle=", ".join(str(c) for c in counts), left=str(left), top=str(top),
                          width=str(mw), height=str(mh))
    rotation: float | None = None
    if tag == "box":
        xtl, ytl, xbr, ybr = x, y, x + w, y + h
        if attrs.get("rotated_box") is not None:
            rotated, why = check_rotated_box(attrs["rotated_box"], inst.bbox, img.width, img.height)
            if rotated is None:
                report.lost.append(f"{where}: {why}; the box is written unrotated")
            else:
                xtl, ytl, xbr, ybr, rotation = to_cvat(rotated)
        fields.update(xtl=_fmt(xtl), ytl=_fmt(ytl), xbr=_fmt(xbr), ybr=_fmt(ybr))
    elif attrs.get("rotated_box") is not None:
        report.lost.append(f"{where}: rotated_box {short(repr(attrs['rotated_box']))} (CVAT rotates boxes only; "
                           f"the {tag} is written)")
    if tag != "box" and any(abs(a - b) > 0.01 for a, b in zip((x, y, w, h), tight)):
        report.lost.append(f"{where}: box {[x, y, w, h]} is not its {tag}'s bounding box "
                           f"{[round(v, 2) for v in tight]}; only the {tag} is written")

    own = attrs.get("source")
    if source is not None:
        written = source
        if own not in (None, source):
            report.lost.append(f"{where}: source {short(repr(own))} written as {source!r}")
    elif isinstance(own, str) and own:
        written = own
    else:
        written = "manual"
        if own is not None:
            report.lost.append(f"{where}: source {short(repr(own))} is not a name; written as 'manual'")
    shape = {"source": written, "occluded": "1" if attrs.get("occluded") else "0", **fields}
    if rotation is not None and _angle(rotation) not in ("0.00", "360.00"):
        shape["rotation"] = _angle(rotation)
    if "rotation" in attrs:
        report.lost.append(f"{where}: attribute 'rotation' {short(repr(attrs['rotation']))} not written (a CVAT "
                           "shape field; a rotated box is attributes['rotated_box'])")
    for key in ("z_order", "group_id"):
        value = attrs.get(key)
        if value is None or (key == "group_id" and not value):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            report.lost.append(f"{where}: {key} {value!r} is not an integer")
            continue
        shape[key] = str(value)
    if inst.area is not None:  # what reads back is None: the mask's area, else the box's
        if mask is not None:
            computed = float(mask.sum())
        elif tag == "polygon" and isinstance(seg, list):
            computed = float(_coco_mask(seg, img.height, img.width).sum())
        else:
            computed = w * h
        if abs(inst.area - computed) > 1.0:
            report.lost.append(f"{where}: area {inst.area} (CVAT has no area; it reads back as {computed:g})")

    children = {k: v for k, v in attrs.items() if k not in _SHAPE_FIELDS and k != "rotated_box"}
    if inst.score is None and _score(children.get("score")) is not None:
        report.lost.append(f"{where}: attribute 'score' {children['score']!r} reads back as the instance's score")
    for key, value in (("is_crowd", True if inst.iscrowd else None), ("score", inst.score)):
        if value is None:
            continue
        if key in children and children[key] != value:
            report.lost.append(f"{where}: attribute {key!r} {children[key]!r} replaced by the instance's {value!r}")
        children[key] = value
    return tag, shape, children


def _input_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "checkbox"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return "number"
    return "text"


def _spec(el: ET.Element, name: str, input_type: str, values: list[Any]) -> None:
    ET.SubElement(el, "name").text = name
    ET.SubElement(el, "mutable").text = "False"
    ET.SubElement(el, "input_type").text = input_type
    if input_type == "checkbox":
        default, allowed = "false", "false"
    elif input_type == "number":
        step = "1" if all(isinstance(v, int) for v in values) else "0.01"
        default = str(min(values))
        allowed = f"{min(values)}\n{max(values)}\n{step}"
    else:
        default, allowed = "", ""
    ET.SubElement(el, "default_value").text = default
    ET.SubElement(el, "values").text = allowed


def _attribute_text(value: Any, input_type: str) -> tuple[str, bool]:
    """The value as CVAT text, and whether it reads back as the same value."""
    if isinstance(value, bool):
        return ("true" if value else "false"), input_type == "checkbox"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return repr(value), input_type == "number"
    if isinstance(value, str):
        return value, True
    return str(value), False


def _fmt(v: float) -> str:
    s = f"{v:.{_DECIMALS}f}"
    return "0.00" if s == "-0.00" else s


def _angle(v: float) -> str:
    """A rotation with 2 to 6 decimals: CVAT's 2 when they hold it, more rather than move the corners."""
    s = f"{v:.6f}".rstrip("0")
    s = s + "0" * (2 - len(s.split(".")[1]))
    return "0.00" if s == "-0.00" else s


def _ids(ids: list[int]) -> str:
    return "[" + ", ".join(str(i) for i in ids[:5]) + (", ...]" if len(ids) > 5 else "]")


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_cvat(src, images, sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_cvat(aset, out / "annotations.xml", **({"source": options["source"]} if "source" in options else {}))


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_cvat(root / split, images)
