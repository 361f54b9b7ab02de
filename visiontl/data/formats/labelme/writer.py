"""Writing an `AnnotationSet` as labelme JSON files, one per image, and a labels.txt (see the package
docstring)."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visiontl.atomic import atomic_write_text
from visiontl.data import rle
from visiontl.data.annotations import AnnotationSet, ImageRecord, Instance, WriteReport, check_text_names
from visiontl.data.formats.common import first_line, is_number
from visiontl.data.formats.voc import names_by_id
from visiontl.data.formats.labelme.codec import (
    FILE_KEYS,
    HELD_TYPES,
    IMAGE_ATTRS,
    LABELME_VERSION,
    LABELS_FILE,
    RESERVED_LABELS,
    SHAPE_KEYS,
    abs_path,
)
from visiontl.data.images import DECODE_ERRORS, check_image, open_image, orientation, upright
from visiontl.errors import DataError

def write_labelme(aset: AnnotationSet, folder: Path, embed_images: bool = False) -> WriteReport:
    """Write one labelme JSON per image under `folder` (mirroring the images' sub-folders) and a labels.txt.
    Everything is checked before the first file is written."""
    folder = Path(folder)
    check_text_names(aset, "labelme")
    report = WriteReport(target=str(folder))
    cats = sorted(aset.categories, key=lambda c: c.id)
    for c in cats:
        if "\n" in c.name or "\r" in c.name or not c.name.strip():
            raise DataError(f"{aset.report.source}: category {c.id} name {c.name!r} cannot be a labelme label")
    names = names_by_id(aset, aset.report.source, "labelme", report)
    if [c.id for c in cats] != list(range(1, len(cats) + 1)):
        ids = f"{[c.id for c in cats][:8]}{'...' if len(cats) > 8 else ''}"
        report.lost.append(f"category ids {ids} become 1..{len(cats)} in id order (labelme keeps class names, not ids)")

    targets: dict[Path, str] = {}
    base = abs_path(folder)
    plan = []
    for img in aset.images:
        json_path = abs_path(folder / Path(img.file_name).with_suffix(".json"))
        if not json_path.is_relative_to(base):
            raise DataError(f"{aset.report.source}: image {img.id} ({img.file_name}): its JSON would be outside "
                            f"{folder}")
        if json_path in targets:
            raise DataError(f"{aset.report.source}: images {targets[json_path]} and {img.file_name} would both be "
                            f"written to {json_path}")
        targets[json_path] = img.file_name
        image_path = abs_path(aset.image_path(img))
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
        report.lose("image flags not names to true/false", f"{where}: image flags {flags!r} are not names to true/false")
        flags = {}
    extra: dict[str, Any] = {}
    for key, value in img.attributes.items():
        if key in IMAGE_ATTRS:
            continue
        if key in FILE_KEYS:
            report.lose("image attributes clashing with labelme's keys", f"{where}: image attribute {key!r} clashes with labelme's key")
        elif not _is_json(value):
            report.lose("image attributes not JSON", f"{where}: image attribute {key!r} is not JSON")
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
            report.lose("boxes that are not their shape's bounding box", f"{at}: box {[round(v, 2) for v in inst.bbox]} is not its shape's bounding box "
                               f"{[round(v, 2) for v in tight]} (labelme keeps the shape only)")
        if inst.area is not None:  # what reads back is None: the mask's area, else the box's
            computed = _computed_area(inst, img, at)
            if abs(inst.area - computed) > 1.0:
                report.lose("areas (labelme has none)", f"{at}: area {inst.area:g} (labelme has no area; it reads back as {computed:g})")

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
        report.lose("group_ids not integers", f"{where}: group_id {group_id!r} is not an integer")
        group_id = None
    flags = attrs.pop("flags", None) or {}
    if not _is_flags(flags):
        report.lose("flags not names to true/false", f"{where}: flags {flags!r} are not names to true/false")
        flags = {}
    description = attrs.pop("description", None) or ""
    if not isinstance(description, str):
        report.lose("descriptions not strings", f"{where}: description {description!r} is not a string")
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
        if key in SHAPE_KEYS or key in ("score", "iscrowd"):
            report.lose("attributes clashing with labelme's shape keys", f"{where}: attribute {key!r} clashes with a labelme shape key")
        elif not _is_json(value):
            report.lose("attributes not JSON", f"{where}: attribute {key!r} is not JSON")
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
                report.lose("group_ids already used (written as new groups)", f"{where}: group_id {gid} is already used by another {label!r}; "
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
            report.lose("polygons of fewer than 3 finite points", f"{where}: polygon {j} is not 3 or more finite points")
    if not polygons:
        if seg:
            report.lose("no usable polygon (box written)", f"{where}: no usable polygon; written as its box")
        x, y, w, h = inst.bbox
        report.boxes += 1
        return [shape("rectangle", [[x, y], [x + w, y + h]], claim(group_id, False))]

    report.polygons += 1
    gid = claim(group_id, len(polygons) > 1)
    if len(polygons) == 1:
        if _valid_circle(circle):
            return [shape("circle", [list(map(float, p)) for p in circle], gid)]
        if circle is not None:
            report.lose("circle attributes not two points", f"{where}: circle attribute {circle!r} is not two points; written as a polygon")
        kind = "oriented_rectangle" if kind == "oriented_rectangle" and len(polygons[0]) == 4 else "polygon"
        return [shape(kind, polygons[0], gid)]
    if parts is not None and not _valid_parts(parts, len(polygons)):
        report.lose("labelme_parts not matching their polygons", f"{where}: labelme_parts does not match its {len(polygons)} polygons; written as polygons")
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
        report.lose("empty masks (box written)", f"{where}: its mask has no pixels; written as its box")
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
        try:
            x, y, w, h = rle.box(seg, *seg["size"])
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
        if not isinstance(p.get("extra", {}), dict) or set(p.get("extra", {})) & SHAPE_KEYS:
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

