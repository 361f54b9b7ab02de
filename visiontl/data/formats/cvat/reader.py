"""Reading a CVAT for images 1.1 XML file into an `AnnotationSet` (see the package docstring)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontl.data import rle
from visiontl.data.annotations import AnnotationSet, Box, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.formats.common import parse_number, read_xml, relative_name, short
from visiontl.data.formats.cvat.codec import SHAPE_FIELDS, attribute_score, cvat_rle_to_mask
from visiontl.data.formats.rotation import envelope, from_cvat, normalize_angle
from visiontl.data.images import check_image
from visiontl.errors import DataError
from visiontl.text import printable

_HELD = ("box", "polygon", "mask")
_FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


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
    fixed: bool  # the labels come from the meta: a box, polygon or mask with another label is an error
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
        """Add the instance of one held shape (box, polygon, mask); count any other kind as dropped, whatever its
        label (none, or one the file does not list): it would be left out anyway."""
        if el.tag not in _HELD:
            if label and not self.fixed:
                self.label(label, where)  # without a meta, the labels in use are the file's labels
            self.drop(el.tag, frame.record.file_name if frame.record else frame.name)
            return
        category_id = self.label(label, where)
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
        for key in SHAPE_FIELDS:
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
            if name in SHAPE_FIELDS or name == "track_id" and "track_id" in attributes:
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
            if name == "score" and attribute_score(value) is not None:
                score = attribute_score(value)
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
        seg = rle.encode(full)
        return seg, rle.box(seg, rec.height, rec.width)


def read_cvat(xml_path: Path, image_root: Path | None = None, sanitize: bool = True) -> AnnotationSet:
    """Read a CVAT for images 1.1 XML file (task, job or project export; tracks included).

    Without `image_root`, images are looked for in `images/` beside the file (CVAT's zip layout) and beside it
    (the first image found tells which), as named or in a folder per subset (a project export's
    `images/<subset>/`). sanitize=False keeps boxes exactly as written (no clipping, no dropping of empty
    boxes)."""
    xml_path = Path(xml_path)
    root = read_xml(xml_path)
    if root.tag != "annotations":
        raise DataError(f"{xml_path}: not a CVAT XML file (the root is <{root.tag}>, expected <annotations>)")
    version = (root.findtext("version") or "").strip()
    if version and not version.startswith("1."):
        raise DataError(f"{xml_path}: CVAT XML version {version!r} is not supported (expected 1.1)")
    meta = root.find("meta")
    names, specs = _labels(xml_path, meta)
    tasks = _tasks(xml_path, meta)
    given = Path(image_root) if image_root is not None else None
    if image_root is None:
        image_root = xml_path.parent / "images" if (xml_path.parent / "images").is_dir() else xml_path.parent
    image_root = Path(image_root)

    reader = _Reader(xml_path, {n: i for i, n in enumerate(names, start=1)}, bool(names), specs)
    frames = _frames(xml_path, root, tasks, image_root)
    image_root, in_subsets = _image_layout(xml_path.parent, frames, given, image_root)
    _name_and_number(xml_path, frames, image_root, in_subsets)
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
        report.drop(f"{xml_path}: {count} {kind} shape(s) dropped, the model holds boxes, polygons and masks only "
                    f"(first on {first})", count)
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


def _name_and_number(path: Path, frames: list[_Frame], image_root: Path, in_subsets: bool) -> None:
    """Give every frame its ImageRecord: distinct file names and ids (see the package docstring)."""
    names = [f.name for f in frames]
    by_subset = [_in_subset(f) for f in frames]
    if in_subsets and len(set(names)) == len(names) and len(set(by_subset)) == len(by_subset):
        names = by_subset
    elif len(set(names)) != len(names):
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


def _in_subset(frame: _Frame) -> str:
    return f"{frame.subset or 'default'}/{frame.name}"


def _image_layout(xml_dir: Path, frames: list[_Frame], given: Path | None, default: Path) -> tuple[Path, bool]:
    """Where the images are: the folder given, else `images/` beside the XML (CVAT's zip layout) or the XML's own
    folder; and whether they lie in a folder per subset (`images/<subset>/<name>`, as CVAT's project export
    writes them). The first image found, as named or in its subset's folder, tells."""
    roots = [given] if given is not None else [r for r in (xml_dir / "images", xml_dir) if r.is_dir()]
    for frame in frames:
        in_subset = _in_subset(frame)
        try:
            relative_name(in_subset, "")
        except DataError:  # a subset that climbs out: refused with the names (_name_and_number), never looked at
            in_subset = ""
        for root in roots:
            if (root / frame.name).is_file():
                return root, False
            if in_subset and (root / in_subset).is_file():
                return root, True
    return default, False


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


def _attribute_value(text: str, input_type: str | None, where: str) -> Any:
    if input_type == "checkbox":
        return _bool(text, "value", where)
    if input_type == "number":
        t = text.strip()
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        return parse_number(t, "value", where)
    return text



# CVAT's subsets are free text; its own defaults are Train, Validation and Test.
_SUBSET_ALIASES = {"val": "validation", "valid": "validation"}


def read_cvat_split(root: Path, split: str, images: Path | None = None, annotations: Path | None = None) -> AnnotationSet:
    """One training split: `split` is an XML file under `root`, a folder holding `annotations.xml` (a task export
    unpacked per split), or else the name of a CVAT subset (case-insensitive, `val` for Validation) of the
    project export `annotations` (default `root/annotations.xml`): its images with that subset."""
    path = root / split
    if path.is_dir() and (path / "annotations.xml").is_file():
        path = path / "annotations.xml"
    if path.is_file():
        return read_cvat(path, images)
    xml = annotations if annotations is not None and annotations.is_file() else root / "annotations.xml"
    if not xml.is_file():
        raise DataError(f"{path}: no such CVAT XML file or folder, and no {xml} to take a subset {split!r} from")
    return _subset(read_cvat(xml, images), split)


def _subset(aset: AnnotationSet, split: str) -> AnnotationSet:
    def key(name: str) -> str:
        name = name.strip().lower()
        return _SUBSET_ALIASES.get(name, name)

    subset_of = {img.id: str(img.attributes.get("subset") or "default") for img in aset.images}
    keep = {i for i, name in subset_of.items() if key(name) == key(split)}
    if not keep:
        found = ", ".join(sorted(set(subset_of.values()))) or "none"
        raise DataError(f"{aset.report.source}: no image of subset {split!r} (the images' subsets: "
                        f"{printable(found, 200)})")
    aset.images = [img for img in aset.images if img.id in keep]
    aset.instances = [inst for inst in aset.instances if inst.image_id in keep]
    return aset
