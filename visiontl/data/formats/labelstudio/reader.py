"""Reading a Label Studio export (full JSON or JSON-MIN) into an `AnnotationSet` (the rules: the package docstring)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.formats.common import is_number, read_json
from visiontl.data.formats.labelstudio.codec import brush_to_mask, mask_bbox
from visiontl.data.formats.labelstudio.label_config import CONFIG_NAME, HELD, LabelConfig, read_label_config
from visiontl.data.formats.labelstudio.urls import image_file_name, looks_like_image
from visiontl.data.formats.rotation import envelope, from_labelstudio, normalize_angle
from visiontl.data.images import check_image
from visiontl.data.rle import encode as coco_rle
from visiontl.errors import DataError

# Result types Label Studio writes that the model does not hold: read, counted, and dropped.
NOT_HELD = frozenset({
    "rectangle", "polygon", "brush", "keypoint", "keypointlabels", "ellipse", "ellipselabels", "polyline",
    "polylinelabels", "choices", "textarea", "rating", "taxonomy", "number", "datetime", "pairwise", "ranker",
    "relation", "hypertextlabels", "paragraphlabels", "timeserieslabels", "videorectangle", "bitmask",
    "bitmasklabels", "vector", "vectorlabels", "magicwand", "cuboid", "cuboidlabels", "list",
})
_MIN_META = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}
IMAGE_RESERVED = {"url", "task_id", "annotation_id", "model_version"}


def read_labelstudio(json_path: Path, image_root: Path | None = None,
                     label_config: Path | None = None, sanitize: bool = True) -> AnnotationSet:
    """Read a Label Studio full export or JSON-MIN export (see the package docstring for the rules).

    The labelling config: `label_config` when given, else `label_config.xml` beside the export when there is
    one and it names every label the tasks use (one that does not is some other export's, and is not used)."""
    json_path = Path(json_path)
    items = _load_tasks(json_path)
    root = Path(image_root) if image_root is not None else json_path.parent
    if label_config is not None:
        reader = _read_items(json_path, items, root, read_label_config(Path(label_config)))
    else:
        beside = json_path.parent / CONFIG_NAME
        reader = _read_items(json_path, items, root, read_label_config(beside) if beside.is_file() else LabelConfig())
        if reader.unnamed():
            reader = _read_items(json_path, items, root, LabelConfig())
    aset = reader.finish()
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset  # False: boxes as written (check, convert)


def _read_items(json_path: Path, items: list[Any], root: Path, config: LabelConfig) -> _Reader:
    reader = _Reader(json_path, root, config)
    if any(isinstance(it, dict) and isinstance(it.get("data"), dict) for it in items):
        for index, task in enumerate(items):
            reader.full_task(index, task)
    else:
        for index, record in _latest_min_records(json_path, items, reader):
            reader.min_record(index, record)
    return reader


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
    def __init__(self, path: Path, root: Path, config: LabelConfig) -> None:
        self.path = path
        self.root = root
        self.config = config
        self.cat_ids: dict[str, int] = {name: i + 1 for i, name in enumerate(config.label_order)}
        self.images: list[ImageRecord] = []
        self.instances: list[Instance] = []
        self.dropped: dict[str, list[str]] = {}

    def unnamed(self) -> list[str]:
        """The labels of the tasks that the config does not name (when there is a config)."""
        return list(self.cat_ids)[len(self.config.label_order):] if self.config.label_order else []

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
        urls = {to_name: self.image_url(data, to_name, where) for to_name in groups}
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
            control = self.config.control_types.get(name)
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
        found = [k for k, v in record.items() if k not in _MIN_META and isinstance(v, str) and looks_like_image(v)]
        if len(found) == 1:
            return found[0]
        raise DataError(f"{where}: cannot tell which field holds the image URL (pass the label config)")

    def image_url(self, data: dict[str, Any], to_name: str, where: str) -> tuple[str, str]:
        """(URL, data key) of the image a result's to_name points at."""
        key = self.config.image_keys.get(to_name)
        if key is not None and isinstance(data.get(key), str):
            return data[key], key
        if to_name and isinstance(data.get(to_name), str):
            return data[to_name], to_name
        if isinstance(data.get("image"), str):
            return data["image"], "image"
        strings = [k for k, v in data.items() if isinstance(v, str) and looks_like_image(v)]
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
        file_name = image_file_name(url, self.root, where)
        image = ImageRecord(len(self.images) + 1, file_name, 0, 0, {"url": url, **attrs})
        self.images.append(image)
        return image

    def _fill(self, image: ImageRecord, values: list[tuple], sizes: list[tuple[str, Any, Any]], where: str,
              data_extras: dict[str, Any]) -> None:
        for k, v in data_extras.items():
            if k not in IMAGE_RESERVED:
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
            seg = coco_rle(mask)
            bbox = mask_bbox(mask)
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


def _dim(v: Any, key: str, where: str) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())) or v <= 0:
        raise DataError(f"{where}: {key} {v!r} is not a positive integer")
    return int(v)


def _percent(value: dict[str, Any], key: str, where: str) -> float:
    v = value.get(key)
    if not is_number(v):
        raise DataError(f"{where}: '{key}' {v!r} is not a finite number (percent)")
    return float(v)
