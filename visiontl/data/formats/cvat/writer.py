"""Writing an `AnnotationSet` as a CVAT for images 1.1 task export (see the package docstring)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from visiontl.atomic import atomic_write_bytes
from visiontl.data import rle
from visiontl.data.annotations import AnnotationSet, ImageRecord, Instance, WriteReport, check_text_names
from visiontl.data.formats.common import short
from visiontl.data.formats.cvat.codec import SHAPE_FIELDS, attribute_score, mask_to_cvat_rle
from visiontl.data.formats.rotation import check_rotated_box, to_cvat
from visiontl.data.formats.voc import names_by_id

_DECIMALS = 2  # as CVAT writes coordinates


def write_cvat(aset: AnnotationSet, xml_path: Path, source: str | None = None) -> WriteReport:
    """Write `aset` as a CVAT for images 1.1 task export, atomically. `source` None keeps each instance's own
    `attributes["source"]` ("manual" when it has none); a string ("auto" for pre-annotations, "manual") is
    written on every shape. Returns what was written and what CVAT cannot hold."""
    xml_path = Path(xml_path)
    aset.validate()
    check_text_names(aset, "CVAT")
    report = WriteReport(target=str(xml_path))
    names = names_by_id(aset, xml_path, "CVAT", report)
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
            report.lose("image attributes (CVAT task images have none)", f"image {img.id} ({img.file_name}): attribute(s) {', '.join(extra)} "
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
                    report.lose("attributes written as text", f"{where}: attribute {key!r} {short(repr(value))} written as text "
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
            report.lose("segmentations that are not COCO polygons (box written)", f"{where}: segmentation {short(repr(seg))} is not COCO polygons; box written")
        elif len(parts) == 1:
            points = [float(v) for v in parts[0]]
            xs, ys = points[0::2], points[1::2]
            tag, tight = "polygon", (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            fields["points"] = ";".join(f"{_fmt(px)},{_fmt(py)}" for px, py in zip(xs, ys))
        else:
            mask = rle.decode(parts, img.height, img.width)
            report.lose("polygons of several parts written as masks", f"{where}: polygon of {len(parts)} parts written as a mask (a CVAT polygon has one part)")
    elif isinstance(seg, dict):
        if list(seg.get("size", [])) != [img.height, img.width]:
            report.lose("RLEs not of the image size (box written)", f"{where}: RLE size {seg.get('size')} is not the image size "
                               f"[{img.height}, {img.width}]; box written")
        else:
            try:
                mask = rle.decode(seg, img.height, img.width)
            except (ValueError, TypeError, KeyError) as exc:
                report.lose("RLEs that cannot be decoded (box written)", f"{where}: RLE cannot be decoded ({exc}); box written")
    if mask is not None:
        cvat_rle = mask_to_cvat_rle(mask)
        if cvat_rle is None:
            report.lose("empty masks (box written)", f"{where}: empty mask; box written")
        else:
            counts, left, top, mw, mh = cvat_rle
            tag, tight = "mask", (float(left), float(top), float(mw), float(mh))
            fields.update(rle=", ".join(str(c) for c in counts), left=str(left), top=str(top),
                          width=str(mw), height=str(mh))
    rotation: float | None = None
    if tag == "box":
        xtl, ytl, xbr, ybr = x, y, x + w, y + h
        if attrs.get("rotated_box") is not None:
            rotated, why = check_rotated_box(attrs["rotated_box"], inst.bbox, img.width, img.height)
            if rotated is None:
                report.lose("rotated boxes written unrotated", f"{where}: {why}; the box is written unrotated")
            else:
                xtl, ytl, xbr, ybr, rotation = to_cvat(rotated)
        fields.update(xtl=_fmt(xtl), ytl=_fmt(ytl), xbr=_fmt(xbr), ybr=_fmt(ybr))
    elif attrs.get("rotated_box") is not None:
        report.lose("rotated_box on a polygon or mask", f"{where}: rotated_box {short(repr(attrs['rotated_box']))} (CVAT rotates boxes only; "
                           f"the {tag} is written)")
    if tag != "box" and any(abs(a - b) > 0.01 for a, b in zip((x, y, w, h), tight)):
        report.lose("boxes that are not their shape's bounding box", f"{where}: box {[x, y, w, h]} is not its {tag}'s bounding box "
                           f"{[round(v, 2) for v in tight]}; only the {tag} is written")

    own = attrs.get("source")
    if source is not None:
        written = source
        if own not in (None, source):
            report.lose("sources replaced", f"{where}: source {short(repr(own))} written as {source!r}")
    elif isinstance(own, str) and own:
        written = own
    else:
        written = "manual"
        if own is not None:
            report.lose("sources that are not names", f"{where}: source {short(repr(own))} is not a name; written as 'manual'")
    shape = {"source": written, "occluded": "1" if attrs.get("occluded") else "0", **fields}
    if rotation is not None and _angle(rotation) not in ("0.00", "360.00"):
        shape["rotation"] = _angle(rotation)
    if "rotation" in attrs:
        report.lose("attributes 'rotation' not written", f"{where}: attribute 'rotation' {short(repr(attrs['rotation']))} not written (a CVAT "
                           "shape field; a rotated box is attributes['rotated_box'])")
    for key in ("z_order", "group_id"):
        value = attrs.get(key)
        if value is None or (key == "group_id" and not value):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            report.lose("z_order or group_id not an integer", f"{where}: {key} {value!r} is not an integer")
            continue
        shape[key] = str(value)
    if inst.area is not None:  # what reads back is None: the mask's area, else the box's
        if mask is not None:
            computed = float(mask.sum())
        elif tag == "polygon" and isinstance(seg, list):
            computed = float(rle.decode(seg, img.height, img.width).sum())
        else:
            computed = w * h
        if abs(inst.area - computed) > 1.0:
            report.lose("areas (CVAT has none)", f"{where}: area {inst.area} (CVAT has no area; it reads back as {computed:g})")

    children = {k: v for k, v in attrs.items() if k not in SHAPE_FIELDS and k != "rotated_box"}
    if inst.score is None and attribute_score(children.get("score")) is not None:
        report.lose("attributes 'score' read back as the score", f"{where}: attribute 'score' {children['score']!r} reads back as the instance's score")
    for key, value in (("is_crowd", True if inst.iscrowd else None), ("score", inst.score)):
        if value is None:
            continue
        if key in children and children[key] != value:
            report.lose("attributes replaced by the instance's own", f"{where}: attribute {key!r} {children[key]!r} replaced by the instance's {value!r}")
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

