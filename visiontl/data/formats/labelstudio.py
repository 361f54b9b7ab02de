"""Label Studio JSON <-> `AnnotationSet`.

Reads both export styles of Label Studio:

- the full export ("JSON"): a list of tasks, each with `data` (the image URL or path under a data key),
  `annotations[].result[]` and optionally `predictions[].result[]`;
- JSON-MIN: a list of flat records, one per annotation, holding the data fields (the image URL), the task
  `id` and one list per control name (`"label": [{x, y, width, height, rectanglelabels, original_width, ...}]`).

Results held by the model (everything else is counted in `ReadReport.dropped`, never silently):

- `rectanglelabels`: x, y, width, height in percent of original_width / original_height. `rotation` is in
  degrees, clockwise on screen, about the rectangle's top-left corner (x, y). A rotated rectangle follows the
  model's convention (`rotation.py`): the box is the axis-aligned envelope of its four corners and
  `attributes["rotated_box"] = [cx, cy, w, h, angle]` (pixels, angle in (-180, 180]) holds the rectangle, so
  the writer gives it back (and CVAT's writer writes it as CVAT's rotated box).
- `polygonlabels`: points in percent -> one COCO polygon in pixels, box = the polygon's bounding box.
- `brushlabels`: Label Studio's own bit-packed RLE (`rle`, `format: "rle"`; thi.ng rle-pack, decoded the way
  label-studio-converter decodes it: H*W*4 RGBA values, foreground = alpha > 0) -> a compressed COCO RLE.
- `labels` results that carry a rectangle, polygon or brush geometry are read like the typed ones.

Which annotation of a task: cancelled ones (`was_cancelled`, `skipped`) are skipped; of the others the most
recently created one (`created_at`; when equal or absent, the last one in the list) is read, earlier ones are
counted as not read. A task with no usable annotation is read from its latest prediction instead (scores kept);
a task with neither is not an image of the set (counted). Category ids are 1..N in the order of the label
config's `<Label value=...>` when `label_config` is given (labels found only in the JSON follow, in order of
first appearance), else in order of first appearance. Images get ids 1..N in task order.

The image: `attributes["url"]` keeps the URL as written (`/data/upload/3/abc12345-x.jpg`,
`/data/local-files/?d=dir/x.jpg`, `s3://bucket/dir/x.jpg`, `https://host/dir/x.jpg`, a plain path);
`file_name` is its path part made relative to `image_root` when a file there matches it (the longest
matching tail of the path; an upload's `abc12345-` prefix is also tried without it), else the path's base name,
except for local-files URLs, whose `?d=` path is kept whole (it is already relative to Label Studio's
local-files root, which plays the image root's part; this is what makes write -> read keep sub-folders).
Width and height come from original_width / original_height; when no result carries them the image file is
read; when it cannot be found either, that is an error naming the task.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from visiontl.atomic import atomic_write_json
from visiontl.data.annotations import (AnnotationSet, Category, ImageRecord, Instance, ReadReport, WriteReport,
                                       check_text_names, sanitize_boxes)
from visiontl.data.formats.rotation import (check_rotated_box, envelope, from_labelstudio, normalize_angle,
                                            to_labelstudio)
from visiontl.data.images import check_image
from visiontl.data.formats.common import first_line, is_number, note_input, parse_json, read_json
from visiontl.errors import DataError

__all__ = ["read_labelstudio", "write_labelstudio", "labelstudio_config", "brush_decode", "brush_encode",
           "brush_to_mask", "mask_to_brush"]

HELD = ("rectanglelabels", "polygonlabels", "brushlabels")
# Result types Label Studio writes that the model does not hold: read, counted, and dropped.
NOT_HELD = frozenset({
    "rectangle", "polygon", "brush", "keypoint", "keypointlabels", "ellipse", "ellipselabels", "polyline",
    "polylinelabels", "choices", "textarea", "rating", "taxonomy", "number", "datetime", "pairwise", "ranker",
    "relation", "hypertextlabels", "paragraphlabels", "timeserieslabels", "videorectangle", "bitmask",
    "bitmasklabels", "vector", "vectorlabels", "magicwand", "cuboid", "cuboidlabels", "list",
})
_LABEL_TAGS = {"rectanglelabels", "polygonlabels", "brushlabels", "labels"}
_MIN_META = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}
_IMAGE_RESERVED = {"url", "task_id", "annotation_id", "model_version"}
_INSTANCE_HELD = {"rotated_box", "result_id"}
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_RLE_SIZES = (3, 4, 8, 16)


# --- reading ----------------------------------------------------------------------------------------------


def read_labelstudio(json_path: Path, image_root: Path | None = None,
                     label_config: Path | None = None, sanitize: bool = True) -> AnnotationSet:
    """Read a Label Studio full export or JSON-MIN export (see the module docstring for the rules)."""
    json_path = Path(json_path)
    items = _load_tasks(json_path)
    config = _read_config(Path(label_config)) if label_config is not None else _Config()
    root = Path(image_root) if image_root is not None else json_path.parent
    reader = _Reader(json_path, root, config)
    if any(isinstance(it, dict) and isinstance(it.get("data"), dict) for it in items):
        for index, task in enumerate(items):
            reader.full_task(index, task)
    else:
        for index, record in _latest_min_records(json_path, items, reader):
            reader.min_record(index, record)
    aset = reader.finish()
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset  # False: boxes as written (check, convert)


class _Config:
    """What a label config says: label order (aliases -> values), Image tag name -> data key, control types."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.aliases: dict[str, str] = {}
        self.image_keys: dict[str, str] = {}  # Image tag name -> data key
        self.controls: dict[str, str] = {}  # control name -> lower-case tag type


def _read_config(path: Path) -> _Config:
    note_input(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: label config not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
    config = _Config()
    if text.lstrip().startswith("{"):  # a parsed config, as Label Studio's API returns it
        parsed = parse_json(text, path)
        for name, info in parsed.items() if isinstance(parsed, dict) else []:
            if not isinstance(info, dict):
                raise DataError(f"{path}: control {name!r} is not an object")
            kind = str(info.get("type", "")).lower()
            config.controls[str(name)] = kind
            if kind in _LABEL_TAGS:
                _add_labels(config, [str(v) for v in info.get("labels", [])])
            inputs = [i for i in info.get("inputs", [])
                      if isinstance(i, dict) and str(i.get("type", "")).lower() == "image"]
            for to in info.get("to_name", []):
                if inputs and re.fullmatch(r"\w+", str(inputs[0].get("value", ""))):
                    config.image_keys[str(to)] = str(inputs[0]["value"])
        return config
    try:
        tree = SafeET.fromstring(text)
    except ET.ParseError as exc:
        raise DataError(f"{path}: not valid XML ({first_line(exc)})") from None
    except DefusedXmlException as exc:
        raise DataError(f"{path}: refused XML ({type(exc).__name__})") from None
    for el in tree.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        name = el.get("name")
        if tag == "image" and name and (el.get("value") or "").startswith("$"):
            config.image_keys[name] = el.get("value", "")[1:]
        elif name and tag not in ("view", "header", "label", "image", "text", "style"):
            config.controls[name] = tag
            if tag in _LABEL_TAGS:
                values = []
                for label in el.iter():
                    if isinstance(label.tag, str) and label.tag.lower() == "label" and label.get("value") is not None:
                        values.append(label.get("value", ""))
                        if label.get("alias"):
                            config.aliases[label.get("alias", "")] = label.get("value", "")
                _add_labels(config, values)
    return config


def _add_labels(config: _Config, values: list[str]) -> None:
    for v in values:
        if v not in config.labels:
            config.labels.append(v)


def _load_tasks(path: Path) -> list[Any]:
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = [data]  # one task
    if not isinstance(data, list):
        raise DataError(f"{path}: not a Label Studio export (the top level is not a list of tasks)")
    if not data:
        raise DataError(f"{path}: no tasks")
    return data


def _latest_min_records(path: Path, items: list[Any], reader: _Reader) -> list[tuple[int, dict[str, Any]]]:
    """JSON-MIN has one record per annotation: keep the latest one of each task id."""
    chosen: dict[Any, tuple[int, dict[str, Any]]] = {}
    order: list[Any] = []
    for index, record in enumerate(items):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record #{index + 1}: not an object")
        key = record.get("id", ("#", index))
        if isinstance(key, (list, dict)):
            raise DataError(f"{path}: record #{index + 1}: 'id' {key!r} is not a task id")
        if key not in chosen:
            order.append(key)
            chosen[key] = (index, record)
        else:
            reader.count("earlier annotation(s) of a task not read (the latest one is)", f"task {key}")
            if str(record.get("created_at") or "") >= str(chosen[key][1].get("created_at") or ""):
                chosen[key] = (index, record)
    return [chosen[k] for k in order]


class _Reader:
    def __init__(self, path: Path, root: Path, config: _Config) -> None:
        self.path = path
        self.root = root
        self.config = config
        self.cat_ids: dict[str, int] = {name: i + 1 for i, name in enumerate(config.labels)}
        self.images: list[ImageRecord] = []
        self.instances: list[Instance] = []
        self.dropped: dict[str, list[str]] = {}

    def count(self, reason: str, example: str) -> None:
        self.dropped.setdefault(reason, []).append(example)

    # One task of a full export.
    def full_task(self, index: int, task: Any) -> None:
        if not isinstance(task, dict):
            raise DataError(f"{self.path}: task #{index + 1}: not an object")
        tid = task.get("id")
        named = isinstance(tid, (int, str)) and not isinstance(tid, bool)
        where = f"{self.path}: task {tid}" if named else f"{self.path}: task #{index + 1}"
        data = task.get("data")
        if not isinstance(data, dict):
            raise DataError(f"{where}: 'data' is missing or not an object")
        label = where.split(": ", 1)[1]
        annotations = task.get("annotations", task.get("completions", []))
        predictions = task.get("predictions", [])
        for key, value in (("annotations", annotations), ("predictions", predictions)):
            if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
                raise DataError(f"{where}: '{key}' is not a list of objects")
        live = [a for a in annotations if not (a.get("was_cancelled") or a.get("skipped"))]
        source: dict[str, Any] | None = None
        is_prediction = False
        if live:
            source = _latest(live)
            for _ in live[1:]:
                self.count("earlier annotation(s) of a task not read (the latest one is)", label)
        elif predictions:
            source, is_prediction = _latest(predictions), True
            self.count("task(s) without an annotation read from their latest prediction", label)
        else:
            why = "cancelled" if annotations else "no annotation nor prediction"
            self.count(f"task(s) not read ({why})", label)
            return
        results = source.get("result", [])
        if not isinstance(results, list):
            raise DataError(f"{where}: 'result' is not a list")
        extras = {"task_id": tid} if tid is not None else {}
        if not is_prediction and source.get("id") is not None:
            extras["annotation_id"] = source.get("id")
        if is_prediction and source.get("model_version") is not None:
            extras["model_version"] = source.get("model_version")
        default_score = source.get("score") if is_prediction and is_number(source.get("score")) else None

        # Group results by the image they are drawn on (one image per task, except Repeater tasks).
        groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        sizes: dict[str, list[tuple[str, Any, Any]]] = {}  # image sizes, from every result (held or not)
        for k, r in enumerate(results):
            if not isinstance(r, dict):
                raise DataError(f"{where}, result #{k + 1}: not an object")
            rwhere = f"{where}, result {r['id']!r}" if isinstance(r.get("id"), str) else f"{where}, result #{k + 1}"
            kind = r.get("type")
            if not isinstance(kind, str):
                raise DataError(f"{rwhere}: 'type' is missing or not a string")
            kind = kind.lower()
            to = r.get("to_name") if isinstance(r.get("to_name"), str) else ""
            if "original_width" in r or "original_height" in r:
                sizes.setdefault(to, []).append((rwhere, r.get("original_width"), r.get("original_height")))
            if kind not in HELD and kind != "labels":
                if kind in NOT_HELD:
                    self.count(f"{kind} result(s) not held (dropped)", rwhere.split(": ", 1)[1])
                    continue
                raise DataError(f"{rwhere}: unknown result type {r.get('type')!r}")
            groups.setdefault(to, []).append((rwhere, r))
        if not groups:  # nothing held: still an image (of the results that say their size, if any)
            groups = {to: [] for to in sizes} or {"": []}
        urls = {to_name: self._image_url(data, to_name, where) for to_name in groups}
        used_keys = {key for _, key in urls.values()}
        for to_name, rs in groups.items():
            image = self._new_image(urls[to_name][0], where, dict(extras))
            values = []
            for rwhere, r in rs:
                value = r.get("value")
                if not isinstance(value, dict):
                    raise DataError(f"{rwhere}: 'value' is missing or not an object")
                score = r.get("score") if is_prediction else None
                if score is not None and not is_number(score):
                    raise DataError(f"{rwhere}: score {score!r} is not a finite number")
                values.append((rwhere, r["type"].lower(), value, r.get("id") if isinstance(r.get("id"), str) else None,
                               float(score) if score is not None else default_score))
            # Data fields other than the image keys are kept as image attributes.
            self._fill(image, values, sizes.get(to_name, []), where,
                       data_extras={k: v for k, v in data.items() if k not in used_keys})

    # One JSON-MIN record.
    def min_record(self, index: int, record: dict[str, Any]) -> None:
        tid = record.get("id")
        where = f"{self.path}: task {tid}" if tid is not None else f"{self.path}: record #{index + 1}"
        key = self._min_image_key(record, where)
        url = record[key]
        attrs: dict[str, Any] = {}
        if tid is not None:
            attrs["task_id"] = tid
        if record.get("annotation_id") is not None:
            attrs["annotation_id"] = record["annotation_id"]
        image = self._new_image(url, where, attrs)
        values = []
        sizes = []
        extras = {}
        for name, field in record.items():
            if name in _MIN_META or name == key:
                continue
            control = self.config.controls.get(name)
            entries = field if isinstance(field, list) else [field]
            is_results = control is not None or (
                bool(entries) and all(isinstance(e, dict) and _value_kind(e) is not None for e in entries))
            if not is_results:
                extras[name] = field
                continue
            for k, entry in enumerate(entries):
                rwhere = f"{where}, {name} #{k + 1}"
                kind = _value_kind(entry) if isinstance(entry, dict) else None
                if isinstance(entry, dict) and ("original_width" in entry or "original_height" in entry):
                    sizes.append((rwhere, entry.get("original_width"), entry.get("original_height")))
                if kind in HELD or kind == "labels":
                    values.append((rwhere, kind, entry, None, None))
                else:
                    shown = kind or control or "choices/textarea"
                    self.count(f"{shown} result(s) not held (dropped)", rwhere.split(": ", 1)[1])
        self._fill(image, values, sizes, where, data_extras=extras)

    def _min_image_key(self, record: dict[str, Any], where: str) -> str:
        keys = [k for k in self.config.image_keys.values() if isinstance(record.get(k), str)]
        if keys:
            return keys[0]
        if isinstance(record.get("image"), str):
            return "image"
        found = [k for k, v in record.items() if k not in _MIN_META and isinstance(v, str) and _looks_like_image(v)]
        if len(found) == 1:
            return found[0]
        raise DataError(f"{where}: cannot tell which field holds the image URL (pass the label config)")

    def _image_url(self, data: dict[str, Any], to_name: str, where: str) -> tuple[str, str]:
        """(URL, data key) of the image a result's to_name points at."""
        key = self.config.image_keys.get(to_name)
        if key is not None and isinstance(data.get(key), str):
            return data[key], key
        if to_name and isinstance(data.get(to_name), str):
            return data[to_name], to_name
        if isinstance(data.get("image"), str):
            return data["image"], "image"
        strings = [k for k, v in data.items() if isinstance(v, str) and _looks_like_image(v)]
        if len(strings) == 1:
            return data[strings[0]], strings[0]
        # Repeater tasks: data {"images": [{"url": ...}, ...]} and to_name "page_<i>".
        m = re.fullmatch(r"(.*?)_?(\d+)", to_name)
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if m and len(lists) == 1:
            items = data[lists[0]]
            i = int(m.group(2))
            if i < len(items):
                item = items[i]
                if isinstance(item, dict):
                    item = item.get("url", next((v for v in item.values() if isinstance(v, str)), None))
                if isinstance(item, str):
                    return item, lists[0]
        raise DataError(f"{where}: cannot tell which data field holds the image of {to_name!r} (pass the label config)")

    def _new_image(self, url: Any, where: str, attrs: dict[str, Any]) -> ImageRecord:
        if not isinstance(url, str) or not url.strip():
            raise DataError(f"{where}: the image URL {url!r} is not a non-empty string")
        file_name = _file_name(url, self.root, where)
        image = ImageRecord(len(self.images) + 1, file_name, 0, 0, {"url": url, **attrs})
        self.images.append(image)
        return image

    def _fill(self, image: ImageRecord, values: list[tuple], sizes: list[tuple[str, Any, Any]], where: str,
              data_extras: dict[str, Any]) -> None:
        for k, v in data_extras.items():
            if k not in _IMAGE_RESERVED:
                image.attributes[k] = v
        # Image size: every result carries it; they must agree.
        for rwhere, ow, oh in sizes:
            w, h = _dim(ow, "original_width", rwhere), _dim(oh, "original_height", rwhere)
            if image.width and (w, h) != (image.width, image.height):
                raise DataError(f"{rwhere}: original size {w}x{h} differs from {image.width}x{image.height} "
                                f"of an earlier result of the same image")
            image.width, image.height = w, h
        if not image.width:
            path = self.root / image.file_name
            if not path.is_file():
                raise DataError(f"{where}: no original_width/original_height in its results and the image "
                                f"{image.file_name} is not found under {self.root}")
            image.width, image.height = check_image(path)
        for rwhere, kind, value, rid, score in values:
            self._instance(image, rwhere, kind, value, rid, score)

    def _instance(self, image: ImageRecord, where: str, kind: str, value: dict[str, Any], rid: str | None,
                  score: float | None) -> None:
        short = where.split(": ", 1)[1]
        if kind == "labels":  # a <Labels> control beside a tool: the geometry says which
            kind = _value_kind({k: v for k, v in value.items() if k != "labels"}) or "labels"
            if kind not in HELD:
                self.count("labels result(s) without a rectangle, polygon or mask (dropped)", short)
                return
            names = value.get("labels")
        else:
            names = value.get(kind, value.get("labels"))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{where}: '{kind}' {names!r} is not a list of label names")
        if not names:
            self.count(f"{kind} result(s) without a label (dropped)", short)
            return
        if len(names) > 1:
            self.count("result(s) with several labels: only the first is kept", short)
        name = self.config.aliases.get(names[0], names[0])
        cat = self.cat_ids.setdefault(name, len(self.cat_ids) + 1)
        W, H = image.width, image.height
        attrs: dict[str, Any] = {"result_id": rid} if rid else {}
        seg: Any = None
        if kind == "rectanglelabels":
            x, y, w, h = (_percent(value, k, where) for k in ("x", "y", "width", "height"))
            rotation = value.get("rotation", 0) or 0
            if not is_number(rotation):
                raise DataError(f"{where}: rotation {rotation!r} is not a finite number")
            px, py, pw, ph = x / 100 * W, y / 100 * H, w / 100 * W, h / 100 * H
            if normalize_angle(rotation):
                rotated = from_labelstudio(px, py, pw, ph, rotation)
                bbox = envelope(rotated)
                attrs["rotated_box"] = list(rotated)
            else:
                bbox = (px, py, pw, ph)
        elif kind == "polygonlabels":
            points = value.get("points")
            if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
                raise DataError(f"{where}: 'points' is not a list of [x, y] pairs")
            for p in points:
                if not all(is_number(c) for c in p):
                    raise DataError(f"{where}: point {p!r} is not two finite numbers (percent)")
            if len(points) < 3:
                self.count("polygon(s) with fewer than 3 points (dropped)", short)
                return
            xs = [p[0] / 100 * W for p in points]
            ys = [p[1] / 100 * H for p in points]
            seg = [[c for xy in zip(xs, ys) for c in xy]]
            bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        else:  # brushlabels
            fmt = value.get("format", "rle")
            if fmt != "rle":
                raise DataError(f"{where}: brush format {fmt!r} is not supported (only 'rle')")
            rle = value.get("rle")
            if not isinstance(rle, list) or not all(
                    isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in rle):
                raise DataError(f"{where}: 'rle' is not a list of byte values 0..255")
            try:
                mask = brush_to_mask(rle, H, W) if rle else np.zeros((H, W), bool)  # [] : an emptied brush
            except ValueError as exc:
                raise DataError(f"{where}: cannot decode the brush RLE ({exc})") from None
            seg = _coco_rle(mask)
            bbox = _mask_bbox(mask)
        self.instances.append(Instance(len(self.instances) + 1, image.id, cat, bbox, segmentation=seg,
                                       score=score, attributes=attrs))

    def finish(self) -> AnnotationSet:
        name = self.path.name
        report = ReadReport(source=str(self.path))
        for reason, examples in self.dropped.items():
            shown = "; ".join(examples[:3]) + ("; ..." if len(examples) > 3 else "")
            report.dropped.append(f"{name}: {len(examples)} {reason} ({shown})")
        categories = [Category(i, n) for n, i in sorted(self.cat_ids.items(), key=lambda t: t[1])]
        return AnnotationSet(categories, self.images, self.instances, self.root, report)


def _latest(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The most recently created item; when created_at is equal or absent, the last one."""
    best = items[0]
    for it in items[1:]:
        if str(it.get("created_at") or "") >= str(best.get("created_at") or ""):
            best = it
    return best


def _value_kind(value: dict[str, Any]) -> str | None:
    """The result type of a JSON-MIN value (which has no 'type'), from the keys it holds."""
    for kind in ("rectanglelabels", "polygonlabels", "brushlabels", "keypointlabels", "ellipselabels",
                 "choices", "taxonomy", "text", "rating", "number", "datetime", "ranker"):
        if kind in value:
            return kind
    if "labels" in value:
        return "labels"
    if "rle" in value:
        return "brushlabels"
    if "points" in value:
        return "polygonlabels"
    if {"x", "y", "width", "height"} <= value.keys():
        return "rectanglelabels"
    return None


def _looks_like_image(v: str) -> bool:
    low = v.lower().split("?", 1)[0]
    return low.endswith(_IMAGE_SUFFIXES) or v.startswith(("/data/upload/", "/data/local-files/"))


def _url_path(url: str, where: str) -> str:
    """The path part of an image reference, '/'-separated, unquoted."""
    if url.startswith("data:"):
        raise DataError(f"{where}: inline data: images are not supported (export with file references)")
    parts = urlsplit(url)
    if _is_local_files(url):
        return parse_qs(parts.query)["d"][0].replace("\\", "/")
    if _SCHEME.match(url):
        return unquote(parts.path)  # s3://bucket/key: the bucket is the netloc; http(s): the host is
    if url.startswith("/data/"):
        return unquote(parts.path)
    return url.replace("\\", "/")


def _file_name(url: str, root: Path, where: str) -> str:
    path = _url_path(url, where)
    if ".." in PurePosixPath(path).parts:
        # Label Studio never writes one; it would name a file outside the image folder (its own server
        # refuses such local-files URLs too). Absolute paths and URLs are fine: only their tail is used.
        raise DataError(f"{where}: the image URL {url!r} climbs out of the image folder ('..')")
    pieces = [p for p in PurePosixPath(path).parts if p not in ("/", ".", "")]
    if re.fullmatch(r"[A-Za-z]:", pieces[0] if pieces else ""):
        pieces = pieces[1:]  # a Windows drive
    if not pieces:
        raise DataError(f"{where}: the image URL {url!r} has no file name")
    for i in range(len(pieces)):
        candidate = "/".join(pieces[i:])
        if (root / candidate).is_file():
            return candidate
    m = _UPLOAD_PREFIX.match(pieces[-1])
    if m and (root / m.group(1)).is_file():
        return m.group(1)
    if _is_local_files(url):
        return "/".join(pieces)  # already relative to Label Studio's local-files root, i.e. the image root
    return pieces[-1]


def _is_local_files(url: str) -> bool:
    parts = urlsplit(url)
    return parts.path.rstrip("/").endswith("/local-files") and "d" in parse_qs(parts.query)


def _dim(v: Any, key: str, where: str) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())) or v <= 0:
        raise DataError(f"{where}: {key} {v!r} is not a positive integer")
    return int(v)


def _percent(value: dict[str, Any], key: str, where: str) -> float:
    v = value.get(key)
    if not is_number(v):
        raise DataError(f"{where}: '{key}' {v!r} is not a finite number (percent)")
    return float(v)


def _coco_rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0]))


# --- Label Studio brush RLE -------------------------------------------------------------------------------
#
# The bit stream (thi.ng rle-pack, as Label Studio's editor and label-studio-converter use it), MSB first:
# 32 bits: number of values; 5 bits: word size - 1; 4 x 4 bits: the four run-length field sizes - 1; then
# chunks until all values are out: 1 bit repeat flag, 2 bits choosing a field size, that many bits: run
# length - 1, then one word (repeat: the value repeated) or run-length words (literal values).


def brush_decode(rle: list[int] | bytes, expected: int | None = None) -> np.ndarray:
    """The flat values (uint32) of a Label Studio brush RLE. Raises ValueError on a malformed stream."""
    buf = bytes(rle)
    nbits = len(buf) * 8
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        end = pos + n
        if end > nbits:
            raise ValueError(f"the stream ends after {len(buf)} bytes, in the middle of a run")
        first, last = pos >> 3, (end + 7) >> 3
        chunk = int.from_bytes(buf[first:last], "big")
        pos = end
        return (chunk >> ((last << 3) - end)) & ((1 << n) - 1)

    if nbits < 53:
        raise ValueError(f"{len(buf)} bytes are too few for the header")
    num = read(32)
    if expected is not None and num != expected:
        raise ValueError(f"it holds {num} values, not width x height x 4 = {expected}")
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise ValueError(f"a run of {j - i} values at value {i} passes the end ({num})")
        if repeat:
            out[i:j] = read(word)
        else:
            out[i:j] = [read(word) for _ in range(j - i)]
        i = j
    return out


def brush_encode(values: Any) -> list[int]:
    """Encode flat values 0..255 as a Label Studio brush RLE (word size 8, run-length fields 3/4/8/16 bits),
    byte for byte what label-studio-converter's `encode_rle` writes."""
    arr = np.asarray(values).ravel()
    if arr.size and (arr.min() < 0 or arr.max() > 255 or not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError("brush values must be integers 0..255")
    n = int(arr.size)
    pieces = [f"{n:032b}", f"{7:05b}", "".join(f"{s - 1:04b}" for s in _RLE_SIZES)]
    if n:
        starts = np.concatenate(([0], np.flatnonzero(arr[1:] != arr[:-1]) + 1))
        lengths = np.diff(np.concatenate((starts, [n])))
        for length, value in zip(lengths.tolist(), arr[starts].tolist()):
            v = f"{value:08b}"
            if length == 1:
                pieces.append("000000" + v)  # a literal run of one value
            elif length <= 8:
                pieces.append(f"100{length - 1:03b}{v}")
            elif length <= 16:
                pieces.append(f"101{length - 1:04b}{v}")
            elif length <= 256:
                pieces.append(f"110{length - 1:08b}{v}")
            else:
                while length > 1 << 16:
                    pieces.append(f"111{(1 << 16) - 1:016b}{v}")
                    length -= 1 << 16
                pieces.append(f"111{length - 1:016b}{v}")
    bits = "".join(pieces)
    bits += "0" * (8 - len(bits) % 8)  # as the converter pads: always 1..8 zero bits
    return np.packbits(np.frombuffer(bits.encode("ascii"), dtype=np.uint8) - 48).tolist()


def brush_to_mask(rle: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """HxW bool mask of a brush RLE: its H*W*4 RGBA values, foreground where alpha > 0 (as the converter)."""
    values = brush_decode(rle, expected=height * width * 4)
    return values.reshape(height, width, 4)[:, :, 3] > 0


def mask_to_brush(mask: np.ndarray) -> list[int]:
    """Brush RLE of an HxW mask: RGBA (255, 255, 255, 255) on the foreground, 0 elsewhere."""
    pixels = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8).ravel()
    return brush_encode(np.repeat(pixels, 4))


# --- writing ----------------------------------------------------------------------------------------------


def write_labelstudio(aset: AnnotationSet, json_path: Path, *, from_name: str | Mapping[str, str] = "label",
                      to_name: str = "image", image_prefix: str = "/data/local-files/?d=",
                      as_predictions: bool = False, model_version: str | None = None) -> WriteReport:
    """Write `aset` as a Label Studio task list (full-export style, importable), atomically.

    Box-only instances become `rectanglelabels` (rotated when their `rotated_box` still has the box as its
    envelope), polygons
    `polygonlabels`, RLE masks `brushlabels`. `from_name` is the control name of every result, or a mapping
    from result type to control name for a project that has one control per shape. `data.image` is
    `image_prefix` + file name (URL-quoted when the prefix is a URL). With `as_predictions` the results go under
    `predictions` (Label Studio's pre-annotation import format), each with its score, and the prediction's
    score is their mean."""
    aset.validate()
    check_text_names(aset, "Label Studio")
    json_path = Path(json_path)
    report = WriteReport(target=str(json_path))
    names = {c.id: c.name for c in aset.categories}
    controls = _controls(from_name)
    used_ids: set[str] = set()
    by_image = aset.by_image()
    expected = [c.id for c in sorted(aset.categories, key=lambda c: c.id)]
    if expected != list(range(1, len(expected) + 1)):
        report.lost.append("category ids: Label Studio holds label names only; they read back as 1..N "
                           "in label-config order")
    counts = aset.category_counts()
    for c in aset.categories:
        if not counts.get(c.id):
            report.lost.append(f"category {c.id} {c.name!r}: has no annotations, so no result names it "
                               "(it is in labelstudio_config)")
    tasks = []
    for img in aset.images:
        where = img.file_name
        if img.width <= 0 or img.height <= 0:
            raise DataError(f"{aset.report.source}: image {img.id} ({img.file_name}): size {img.width}x{img.height} "
                            "is needed for Label Studio's percent coordinates")
        data: dict[str, Any] = {"image": _image_url(image_prefix, img.file_name)}
        for k, v in img.attributes.items():
            if k in _IMAGE_RESERVED or k == "image":
                continue
            if _jsonable(v):
                data[k] = v
            else:
                report.lost.append(f"{where}: image attribute {k!r} is not JSON data")
        results: list[dict[str, Any]] = []
        scores: list[float] = []
        for inst in by_image[img.id]:
            iwhere = f"{where}: annotation {inst.id}"
            for r in _results(inst, img, names[inst.category_id], controls, to_name, used_ids, report, iwhere):
                if as_predictions and inst.score is not None:
                    r["score"] = inst.score
                results.append(r)
            if inst.score is not None:
                if as_predictions:
                    scores.append(inst.score)
                else:
                    report.lost.append(f"{iwhere}: score {inst.score} (annotations have no score; "
                                       "write as_predictions)")
            if inst.iscrowd:
                report.lost.append(f"{iwhere}: iscrowd (Label Studio has no crowd regions)")
            held = _INSTANCE_HELD if inst.segmentation is None else {"result_id"}  # rotation: boxes only
            extra = sorted(set(inst.attributes) - held)
            if extra:
                report.lost.append(f"{iwhere}: attributes {', '.join(extra)}")
        task: dict[str, Any] = {"data": data}
        if as_predictions:
            pred: dict[str, Any] = {}
            if model_version is not None:
                pred["model_version"] = model_version
            if scores:
                pred["score"] = sum(scores) / len(scores)
            pred["result"] = results
            task["predictions"] = [pred]
        else:
            task["annotations"] = [{"result": results}]
        tasks.append(task)
        report.images += 1
    atomic_write_json(json_path, tasks)
    return report


def _controls(from_name: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(from_name, str):
        return {k: from_name for k in HELD}
    unknown = set(from_name) - set(HELD)
    if unknown:
        raise ValueError(f"from_name keys must be result types {', '.join(HELD)}, not {', '.join(sorted(unknown))}")
    return {k: from_name.get(k, "label") for k in HELD}


def _results(inst: Instance, img: ImageRecord, label: str, controls: dict[str, str], to_name: str,
             used: set[str], report: WriteReport, where: str) -> list[dict[str, Any]]:
    W, H = img.width, img.height
    seg = inst.segmentation

    def result(kind: str, value: dict[str, Any], suffix: str = "") -> dict[str, Any]:
        value[kind] = [label]
        return {"id": _result_id(inst, used, suffix), "type": kind, "from_name": controls[kind], "to_name": to_name,
                "original_width": W, "original_height": H, "image_rotation": 0, "value": value}

    if isinstance(seg, dict):
        from visiontl.data.masks import instance_mask

        mask = instance_mask(inst, H, W, where)
        report.masks += 1
        return [result("brushlabels", {"format": "rle", "rle": mask_to_brush(mask)})]
    polygons = [p for p in (seg or []) if len(p) >= 6 and len(p) % 2 == 0]
    if seg and len(polygons) < len(seg):
        report.lost.append(f"{where}: {len(seg) - len(polygons)} polygon(s) with fewer than 3 points")
    if polygons:
        report.polygons += 1
        if len(polygons) > 1:
            report.lost.append(f"{where}: {len(polygons)} polygons written as {len(polygons)} separate regions")
        out = []
        for k, poly in enumerate(polygons):
            points = [[poly[i] / W * 100, poly[i + 1] / H * 100] for i in range(0, len(poly), 2)]
            out.append(result("polygonlabels", {"points": points, "closed": True}, f"_{k + 1}" if k else ""))
        return out
    report.boxes += 1
    x, y, w, h = (float(v) for v in inst.bbox)
    rotation: float = 0
    if inst.attributes.get("rotated_box") is not None:
        rotated, why = check_rotated_box(inst.attributes["rotated_box"], inst.bbox, W, H)
        if rotated is None:
            report.lost.append(f"{where}: {why}; the box is written unrotated")
        else:
            x, y, w, h, rotation = to_labelstudio(rotated)
    value = {"x": x / W * 100, "y": y / H * 100, "width": w / W * 100, "height": h / H * 100, "rotation": rotation}
    return [result("rectanglelabels", value)]


def _result_id(inst: Instance, used: set[str], suffix: str) -> str:
    rid = inst.attributes.get("result_id")
    rid = f"{rid}{suffix}" if isinstance(rid, str) and re.fullmatch(r"[A-Za-z0-9_-]+", rid) else f"vtl{inst.id}{suffix}"
    base, n = rid, 1
    while rid in used:
        n += 1
        rid = f"{base}-{n}"
    used.add(rid)
    return rid


def _image_url(prefix: str, file_name: str) -> str:
    if "?" in prefix or _SCHEME.match(prefix) or prefix.startswith("/data/"):
        return prefix + quote(file_name, safe="/")
    return prefix + file_name


def labelstudio_config(aset: AnnotationSet, *, from_name: str | Mapping[str, str] = "label",
                       to_name: str = "image") -> str:
    """A labeling config for the tasks `write_labelstudio` writes: one Image and one control per shape used
    (RectangleLabels for boxes, PolygonLabels, BrushLabels), listing every category in id order."""
    controls = _controls(from_name)
    kinds = set()
    for inst in aset.instances:
        seg = inst.segmentation
        kinds.add("brushlabels" if isinstance(seg, dict) else "polygonlabels" if seg else "rectanglelabels")
    kinds = kinds or {"rectanglelabels"}
    if len({controls[k] for k in kinds}) < len(kinds):
        raise ValueError(f"the set has {', '.join(sorted(kinds))} results: give from_name one control name per "
                         "result type, e.g. {'rectanglelabels': 'box', 'polygonlabels': 'poly', 'brushlabels': 'mask'}")
    tags = {"rectanglelabels": "RectangleLabels", "polygonlabels": "PolygonLabels", "brushlabels": "BrushLabels"}
    labels = "".join(f"    <Label value={quoteattr(c.name)}/>\n" for c in sorted(aset.categories, key=lambda c: c.id))
    lines = ["<View>", f"  <Image name={quoteattr(to_name)} value=\"$image\"/>"]
    for kind in HELD:
        if kind in kinds:
            lines.append(f"  <{tags[kind]} name={quoteattr(controls[kind])} toName={quoteattr(to_name)}>\n"
                         f"{labels}  </{tags[kind]}>")
    return "\n".join(lines + ["</View>", ""])


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_labelstudio(src, images, sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_labelstudio(aset, out / "tasks.json")


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    # Task files name images by upload or storage paths; training resolves them against data.root unless
    # data.images says otherwise.
    return read_labelstudio(root / split, images if images is not None else root)
