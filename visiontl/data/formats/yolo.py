"""YOLO (Ultralytics / darknet) text labels -> `AnnotationSet`.

Two layouts: (a) `root/data.yaml` with `names` and a key per split (`train`, `val`, `test`) naming an image
folder, a .txt list of image paths, or a list of those, relative to the yaml's `path` when it has one and
to `root` otherwise; (b) no yaml: images in `root/images/<split>/`, names in `root/classes.txt` or
`root/labels/classes.txt`, one per line. The labels of `.../images/<sub>/x.jpg` are in
`.../labels/<sub>/x.txt` (the last `images` folder of the path becomes `labels`); no label file means an
image without objects.

A label line is `class cx cy w h` (box centre and size) or `class x1 y1 x2 y2 ...` (a polygon, YOLO-seg),
normalised by the image size. Mapping rules: class index k is category id k with the name from `names`;
boxes become pixel `(x, y, w, h)`; a polygon becomes a one-polygon COCO segmentation in pixels with its
bounding box as the box; images get ids 1..N in sorted path order (list order for .txt lists) and
instances ids 1..N in reading order. `image_root` is the split's image folder (the deepest folder holding
every image, for lists).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.images import check_image, is_image_file
from visiontl.errors import DataError

# Exporters round, so a coordinate a hair outside [0, 1] is normal (the border clip handles it); far
# outside means pixel coordinates, which would otherwise all be clipped into a corner.
_SLACK = 0.01


def read_yolo(root: Path, split: str = "train") -> AnnotationSet:
    """Read split `split` of a YOLO dataset at `root` (a folder, or its data.yaml itself)."""
    root = Path(root)
    yaml_path = root if root.suffix in (".yaml", ".yml") and root.is_file() else root / "data.yaml"
    if yaml_path.is_file():
        root = yaml_path.parent
        source, names, paths, image_root = _from_yaml(yaml_path, split)
    else:
        image_dir = root / "images" / split
        if not image_dir.is_dir():
            raise DataError(f"{root}: no data.yaml and no images/{split} folder (not a YOLO dataset?)")
        source, names, image_root = str(root / "labels" / split), _classes_txt(root), image_dir
        paths = _images_in(image_dir)
    if not paths:
        raise DataError(f"{image_root}: no images for split {split!r}")

    categories = [Category(k, names[k]) for k in sorted(names)]
    images: list[ImageRecord] = []
    instances: list[Instance] = []
    for image_id, path in enumerate(paths, start=1):
        width, height = check_image(path)
        images.append(ImageRecord(image_id, Path(os.path.relpath(path, image_root)).as_posix(), width, height))
        for class_id, bbox, seg in _read_labels(_label_path(path), names, width, height):
            instances.append(Instance(len(instances) + 1, image_id, class_id, bbox, segmentation=seg))

    aset = AnnotationSet(categories, images, instances, image_root, ReadReport(source=source))
    aset.validate()
    return sanitize_boxes(aset)


def _from_yaml(yaml_path: Path, split: str) -> tuple[str, dict[int, str], list[Path], Path]:
    try:
        data = yaml.safe_load(_read_text(yaml_path))
    except yaml.YAMLError as exc:
        raise DataError(f"{yaml_path}: not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{yaml_path}: not a YOLO data file (expected keys such as train, val, names)")
    names = _names(data.get("names"), yaml_path)
    entry = data.get(split)
    if not entry:
        keys = [k for k in ("train", "val", "test") if data.get(k)]
        raise DataError(f"{yaml_path}: no '{split}' entry (it has: {', '.join(keys) or 'none'})")
    base = yaml_path.parent / str(data["path"]) if data.get("path") else yaml_path.parent
    entries = entry if isinstance(entry, list) else [entry]
    paths: list[Path] = []
    folders: list[Path] = []
    for item in entries:
        target = _resolve(base, yaml_path.parent, str(item))
        if target.is_dir():
            folders.append(target)
            paths += _images_in(target)
        elif target.is_file():
            paths += _list_file(target)
        else:
            raise DataError(f"{yaml_path}: '{split}' entry {str(item)!r} ({target}) does not exist")
    if len(folders) == len(entries) == 1:
        image_root = folders[0]
    else:
        image_root = Path(os.path.commonpath([str(p.parent.absolute()) for p in paths])) if paths else base
    return str(yaml_path), names, paths, image_root


def _resolve(base: Path, root: Path, item: str) -> Path:
    target = base / item
    # Roboflow writes `train: ../train/images` beside a data.yaml that sits in the dataset folder itself.
    if not target.exists() and item.startswith("../") and (root / item[3:]).exists():
        return root / item[3:]
    return target


def _names(raw: Any, yaml_path: Path) -> dict[int, str]:
    if isinstance(raw, list):
        return {k: str(name) for k, name in enumerate(raw)}
    if isinstance(raw, dict):
        out = {}
        for k, name in raw.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise DataError(f"{yaml_path}: names key {k!r} is not a class index (0, 1, ...)")
            out[k] = str(name)
        return out
    raise DataError(f"{yaml_path}: 'names' is missing or not a list or an {{index: name}} mapping")


def _classes_txt(root: Path) -> dict[int, str]:
    for path in (root / "classes.txt", root / "labels" / "classes.txt"):
        if path.is_file():
            lines = [line.strip() for line in _read_text(path).splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            for n, line in enumerate(lines, start=1):
                if not line:
                    raise DataError(f"{path}: line {n} is empty (a class name per line, in class index order)")
            return dict(enumerate(lines))
    raise DataError(f"{root}: no data.yaml and no classes.txt (the class names are needed)")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file())


def _list_file(path: Path) -> list[Path]:
    out = []
    for line in _read_text(path).splitlines():
        line = line.strip()
        if line:
            # Ultralytics lists write "./images/x.jpg", relative to the list's own folder.
            out.append(path.parent / line)
    return out


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_labels(path: Path, names: dict[int, str], width: int, height: int) -> list[tuple[int, tuple, Any]]:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {n}"
        coords_n = len(fields) - 1
        if coords_n != 4 and (coords_n < 6 or coords_n % 2):
            expected = "'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"
            raise DataError(f"{where}: {len(fields)} fields; expected {expected}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _parses(v))
            raise DataError(f"{where}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{where}: {line.strip()!r} has a value that is not a finite number")
        cls, coords = values[0], values[1:]
        if not cls.is_integer() or int(cls) not in names:
            raise DataError(f"{where}: class {fields[0]} is not in names (classes {_span(names)})")
        if any(v < -_SLACK or v > 1 + _SLACK for v in coords):
            raise DataError(f"{where}: coordinates must be normalised to [0, 1] by the image size ({width}x{height})")
        if coords_n == 4:
            cx, cy, w, h = coords
            bbox = ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
            out.append((int(cls), bbox, None))
        else:
            xs, ys = [x * width for x in coords[0::2]], [y * height for y in coords[1::2]]
            polygon = [v for xy in zip(xs, ys) for v in xy]
            bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            out.append((int(cls), bbox, [polygon]))
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot read ({reason})") from None


def _parses(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _span(names: dict[int, str]) -> str:
    keys = sorted(names)
    if not keys:
        return "none"
    return f"{keys[0]}..{keys[-1]}" if keys == list(range(keys[0], keys[-1] + 1)) else ", ".join(map(str, keys))
