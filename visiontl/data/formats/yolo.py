"""YOLO (Ultralytics / darknet) text labels <-> `AnnotationSet`.

Two layouts: (a) `root/data.yaml` with `names` and a key per split (`train`, `val`, `test`) naming an image
folder, a .txt list of image paths, or a list of those, relative to the yaml's `path` when it has one and
to `root` otherwise; (b) no yaml: images in `root/images/<split>/`, names in `root/classes.txt` or
`root/labels/classes.txt`, one per line. The labels of `.../images/<sub>/x.jpg` are in
`.../labels/<sub>/x.txt` (the last `images` folder of the path becomes `labels`); no label file means an
image without objects.

A label line is `class cx cy w h` (box centre and size) or `class x1 y1 x2 y2 ...` (a polygon, YOLO-seg),
normalised by the image size. Mapping rules: class index k is category id k with the name from `names`
(or the id data.yaml's `visiontl_category_ids` gives class k: `write_yolo` writes that mapping when the
category ids are not 0..N-1);
boxes become pixel `(x, y, w, h)`; a polygon becomes a one-polygon COCO segmentation in pixels with its
bounding box as the box; images get ids 1..N in sorted path order (list order for .txt lists) and
instances ids 1..N in reading order. `image_root` is the split's image folder (the deepest folder holding
every image, for lists). An absolute `path` that does not exist (a dataset moved after `write_yolo` wrote
it) falls back to the yaml's folder.

`write_yolo` is the reader's inverse (see its docstring for what YOLO cannot hold).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from visiontl import safe_yaml
from visiontl.atomic import atomic_write_text
from visiontl.data.annotations import (
    AnnotationSet,
    Category,
    ImageRecord,
    Instance,
    ReadReport,
    WriteReport,
    check_text_names,
    sanitize_boxes,
)
from visiontl.data.formats.voc import (
    category_losses,
    copy_image,
    has_shape,
    image_losses,
    instance_losses,
    polygon_parts,
    relative_file,
)
from visiontl.data.formats.common import note_input
from visiontl.data.images import check_image, is_image_file
from visiontl.errors import DataError

# Exporters round, so a coordinate a hair outside [0, 1] is normal (the border clip handles it); far
# outside means pixel coordinates, which would otherwise all be clipped into a corner.
_SLACK = 0.01
IDS_KEY = "visiontl_category_ids"  # data.yaml: class index -> dataset category id, when they differ
_TASKS = ("detect", "segment")
_BOX_SLACK = 0.01  # px: a box this close to its polygon's extent is the same box


def read_yolo(root: Path, split: str = "train", sanitize: bool = True) -> AnnotationSet:
    """Read split `split` of a YOLO dataset at `root` (a folder, or its data.yaml itself)."""
    root = Path(root)
    yaml_path = root if root.suffix in (".yaml", ".yml") and root.is_file() else root / "data.yaml"
    if yaml_path.is_file():
        root = yaml_path.parent
        source, names, paths, image_root, ids = _from_yaml(yaml_path, split)
    else:
        image_dir = root / "images" / split
        if not image_dir.is_dir():
            raise DataError(f"{root}: no data.yaml and no images/{split} folder (not a YOLO dataset?)")
        source, names, image_root = str(root / "labels" / split), _classes_txt(root), image_dir
        paths, ids = _images_in(image_dir), {k: k for k in names}
    if not paths:
        raise DataError(f"{image_root}: no images for split {split!r}")

    categories = [Category(ids[k], names[k]) for k in sorted(names)]
    images: list[ImageRecord] = []
    instances: list[Instance] = []
    for image_id, path in enumerate(paths, start=1):
        width, height = check_image(path)
        images.append(ImageRecord(image_id, Path(os.path.relpath(path, image_root)).as_posix(), width, height))
        for class_id, bbox, seg in _read_labels(_label_path(path), names, width, height):
            instances.append(Instance(len(instances) + 1, image_id, ids[class_id], bbox, segmentation=seg))

    aset = AnnotationSet(categories, images, instances, image_root, ReadReport(source=source))
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset  # False: boxes as written (check, convert)


def write_yolo(aset: AnnotationSet, root: Path, split: str = "train", task: str = "detect",
               copy_images: bool = False) -> WriteReport:
    """Write `aset` as split `split` of the YOLO folder `root`, every file atomically; `read_yolo(root, split)`
    reads it back (it needs the images under `images/<split>/`: `copy_images` copies them there).

    - `labels/<split>/<stem>.txt` per image (empty for an image without objects), beside
      `images/<split>/<file_name>`;
    - `task="detect"`: `class cx cy w h`; `task="segment"`: `class x1 y1 x2 y2 ...`, one line per polygon
      part. Values are normalised by the image size with 7 more decimals than the size has digits (at least
      8), so the pixels read back are within 1e-7 of those written;
    - `data.yaml`: `path` (this folder, absolute: Ultralytics resolves a relative one against its own
      datasets folder), `<split>: images/<split>`, `names` as `{class index: name}`. Class index = category
      id when the ids are 0..N-1; otherwise the categories in id order get 0..N-1 and
      `visiontl_category_ids: {class index: category id}` keeps the ids for `read_yolo`. An existing
      data.yaml is merged: its other keys and splits stay, its classes keep their indices, new categories
      get the next ones (a category id it names differently is an error).

    Lost lines: crowd regions (not written), scores, attributes, supercategories, image ids; detect:
    polygons and RLE become their box; segment: RLE masks and box-only instances become their box's
    rectangle, a multi-part polygon becomes one object per part, a box that is not its polygon's extent
    becomes the extent; both: boxes and polygon points outside the image are clipped to it, and boxes with
    no area inside it are not written.
    """
    if task not in _TASKS:
        raise DataError(f"YOLO task {task!r} is not one of: {', '.join(_TASKS)}")
    root = Path(root)
    if not split or split.strip() != split or any(c in split for c in "/\\\n"):
        raise DataError(f"{root}: split name {split!r} cannot be a folder name")
    aset.validate()
    check_text_names(aset, "YOLO")
    report = WriteReport(f"{root} (YOLO {task}, split {split})")
    yaml_path = root / "data.yaml"
    existing = _existing_yaml(yaml_path, root)
    index_of, table = _class_table(aset, existing, yaml_path)
    report.lost += category_losses(aset, "YOLO")
    names = {c.id: c.name for c in aset.categories}
    image_dir = root / "images" / split
    targets = _targets(aset, image_dir, copy_images)  # every check before the first file is written
    by_image = aset.by_image()
    for img in aset.images:
        dest, label = targets[img.id]
        if not is_image_file(dest):
            report.lost.append(f"{img.file_name}: not named like an image file, so YOLO readers do not list it")
        report.lost += image_losses(img, "YOLO")
        lines: list[str] = []
        for inst in by_image[img.id]:
            where = f"{img.file_name}: annotation {inst.id} ({names[inst.category_id]})"
            if inst.iscrowd:
                report.lost.append(f"{where}: crowd region not written (YOLO has no crowd regions)")
                continue
            report.lost += instance_losses(inst, where, "YOLO")
            lines += _instance_lines(inst, index_of[inst.category_id], img, task, where, report)
        atomic_write_text(label, "".join(f"{line}\n" for line in lines))
        if copy_images and not copy_image(aset.image_path(img), dest):
            report.lost.append(f"{img.file_name}: image file {aset.image_path(img)} not found; not copied")
        report.images += 1
    _write_yaml(yaml_path, root, existing, split, table)
    return report


def _targets(aset: AnnotationSet, image_dir: Path, copy_images: bool) -> dict[int, tuple[Path, Path]]:
    """Image id -> (image path, label path) in the YOLO folder; DataError for a clash or a wrong size."""
    out: dict[int, tuple[Path, Path]] = {}
    owner: dict[Path, str] = {}
    for img in aset.images:
        dest = image_dir / relative_file(img.file_name, f"{aset.report.source}: image {img.id}")
        label = _label_path(dest)
        if label in owner:
            raise DataError(f"{label}: images {owner[label]!r} and {img.file_name!r} would share this label file")
        owner[label] = img.file_name
        if img.width <= 0 or img.height <= 0:
            raise DataError(f"{aset.report.source}: image {img.id} ({img.file_name}): size {img.width}x{img.height}; "
                            "YOLO labels are normalised by the image size")
        src = aset.image_path(img)
        if copy_images and src.is_file() and check_image(src) != (img.width, img.height):
            w, h = check_image(src)
            raise DataError(f"{src}: image is {w}x{h} but {aset.report.source} says {img.width}x{img.height} "
                            f"(image id {img.id}); YOLO labels are normalised by the image size")
        out[img.id] = (dest, label)
    return out


def _instance_lines(inst: Instance, k: int, img: ImageRecord, task: str, where: str, report: WriteReport) -> list[str]:
    W, H = img.width, img.height
    d = 7 + len(str(max(W, H)))
    x, y, w, h = (float(v) for v in inst.bbox)
    x1, y1 = min(max(x, 0.0), W), min(max(y, 0.0), H)
    x2, y2 = min(max(x + w, 0.0), W), min(max(y + h, 0.0), H)
    clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
    if task == "segment" and not isinstance(inst.segmentation, dict):
        parts, bad = polygon_parts(inst.segmentation)
        pixels = [[min(max(v, 0.0), W if i % 2 == 0 else H) for i, v in enumerate(p)] for p in parts]
        usable = [p for p in pixels if max(p[0::2]) > min(p[0::2]) and max(p[1::2]) > min(p[1::2])]
        if usable:
            if bad or len(usable) < len(parts):
                report.lost.append(f"{where}: {bad + len(parts) - len(usable)} polygon part(s) with fewer than 3 "
                                   "points or no area inside the image not written")
            if pixels != parts:
                report.lost.append(f"{where}: polygon points outside the image moved onto its border")
            if len(usable) > 1:
                report.lost.append(f"{where}: its {len(usable)} polygon parts are written as {len(usable)} separate "
                                   "objects (a YOLO-seg line is one polygon)")
            else:
                xs, ys = usable[0][0::2], usable[0][1::2]
                extent = (min(xs), min(ys), max(xs), max(ys))
                if max(abs(a - b) for a, b in zip(extent, (x1, y1, x2, y2))) > _BOX_SLACK:
                    report.lost.append(f"{where}: box {[x, y, w, h]} is not its polygon's extent; YOLO-seg keeps the "
                                       "polygon, whose extent becomes the box")
            report.polygons += 1
            return [_line(k, p, W, H, d) for p in usable]
    if x2 <= x1 or y2 <= y1:
        report.lost.append(f"{where}: box {[x, y, w, h]} has no area inside the {W}x{H} image; not written")
        return []
    if clipped:
        report.lost.append(f"{where}: box {[x, y, w, h]} crossed the image border; written clipped to it")
    report.boxes += 1
    seg = inst.segmentation
    if task == "detect":
        if has_shape(inst):
            what = "RLE mask" if isinstance(seg, dict) else "polygon"
            report.lost.append(f"{where}: {what} written as its box (YOLO detection labels hold boxes only)")
        return [_line(k, [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], W, H, d)]
    if isinstance(seg, dict):
        why = "RLE mask written as its box's rectangle (RLE is not converted to polygons)"
    elif has_shape(inst):
        why = "polygon has no area inside the image; written as its box's rectangle"
    else:
        why = "no polygon; written as its box's rectangle (a YOLO-seg line is a polygon)"
    report.lost.append(f"{where}: {why}")
    return [_line(k, [x1, y1, x2, y1, x2, y2, x1, y2], W, H, d)]


def _line(k: int, values: list[float], width: int, height: int, decimals: int) -> str:
    scaled = (v / (width if i % 2 == 0 else height) + 0.0 for i, v in enumerate(values))
    return " ".join([str(k), *(f"{v:.{decimals}f}" for v in scaled)])


def _existing_yaml(yaml_path: Path, root: Path) -> dict[str, Any]:
    if not yaml_path.is_file():
        return {}
    try:
        data = safe_yaml.load(_read_text(yaml_path))
    except safe_yaml.YamlRefused as exc:
        raise DataError(f"{yaml_path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{yaml_path}: not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(f"{yaml_path}: not a YOLO data file (expected keys such as train, val, names)")
    path = Path(str(data.get("path") or "."))
    moved = path.is_absolute() and not path.is_dir()  # the reader falls back to the yaml's folder too
    if not moved and (yaml_path.parent / path).resolve() != root.resolve():
        raise DataError(f"{yaml_path}: its path {data['path']!r} is another folder; write to an empty folder")
    return data


def _class_table(aset: AnnotationSet, existing: dict[str, Any], yaml_path: Path) -> tuple[dict[int, int], dict[int, tuple[int, str]]]:
    """Category id -> class index, and class index -> (category id, name), merged with an existing data.yaml."""
    table: dict[int, tuple[int, str]] = {}
    if existing.get("names") is not None:
        old = _names(existing["names"], yaml_path)
        ids = _category_ids(existing, old, yaml_path)
        table = {k: (ids[k], old[k]) for k in sorted(old)}
    index_of = {cid: k for k, (cid, _) in table.items()}
    cats = sorted(aset.categories, key=lambda c: c.id)
    for c in cats:
        if c.id in index_of and table[index_of[c.id]][1] != c.name:
            k = index_of[c.id]
            raise DataError(f"{yaml_path}: class {k} is category {c.id} {table[k][1]!r}, but the set names category "
                            f"{c.id} {c.name!r}; write to an empty folder")
    fresh = [c for c in cats if c.id not in index_of]
    contiguous = [c.id for c in cats] == list(range(len(cats)))
    for c in fresh:
        k = c.id if not table and contiguous else max(table, default=-1) + 1
        table[k] = (c.id, c.name)
        index_of[c.id] = k
    return index_of, table


def _write_yaml(yaml_path: Path, root: Path, existing: dict[str, Any], split: str, table: dict[int, tuple[int, str]]) -> None:
    out: dict[str, Any] = {"path": str(root.resolve())}
    out.update((k, v) for k, v in existing.items() if k not in ("path", "names", "nc", IDS_KEY))
    out[split] = f"images/{split}"
    if "nc" in existing:
        out["nc"] = len(table)
    out["names"] = {k: name for k, (_, name) in sorted(table.items())}
    if any(cid != k for k, (cid, _) in table.items()):
        out[IDS_KEY] = {k: cid for k, (cid, _) in sorted(table.items())}
    atomic_write_text(yaml_path, yaml.safe_dump(out, sort_keys=False, allow_unicode=True))


def _from_yaml(yaml_path: Path, split: str) -> tuple[str, dict[int, str], list[Path], Path, dict[int, int]]:
    try:
        data = safe_yaml.load(_read_text(yaml_path))
    except safe_yaml.YamlRefused as exc:
        raise DataError(f"{yaml_path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{yaml_path}: not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{yaml_path}: not a YOLO data file (expected keys such as train, val, names)")
    names = _names(data.get("names"), yaml_path)
    ids = _category_ids(data, names, yaml_path)
    entry = data.get(split)
    if not entry:
        keys = [k for k in ("train", "val", "test") if data.get(k)]
        raise DataError(f"{yaml_path}: no '{split}' entry (it has: {', '.join(keys) or 'none'})")
    base = yaml_path.parent / str(data["path"]) if data.get("path") else yaml_path.parent
    if data.get("path") and Path(str(data["path"])).is_absolute() and not base.is_dir():
        base = yaml_path.parent  # moved since write_yolo wrote its absolute path
    entries = entry if isinstance(entry, list) else [entry]
    paths: list[Path] = []
    folders: list[Path] = []
    for item in entries:
        target = _resolve(base, yaml_path.parent, str(item))
        if target.is_dir():
            folders.append(target)
            paths += _images_in(target)
        elif target.is_file():
            paths += _list_file(target, [base, yaml_path.parent])
        else:
            raise DataError(f"{yaml_path}: '{split}' entry {str(item)!r} ({target}) does not exist")
    if len(folders) == len(entries) == 1:
        image_root = folders[0]
    else:
        image_root = Path(os.path.commonpath([str(p.parent.absolute()) for p in paths])) if paths else base
    return str(yaml_path), names, paths, image_root, ids


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


def _category_ids(data: dict[str, Any], names: dict[int, str], yaml_path: Path) -> dict[int, int]:
    raw = data.get(IDS_KEY)
    if raw is None:
        return {k: k for k in names}
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    ok = isinstance(raw, dict) and set(raw) == set(names) and len(set(raw.values())) == len(raw)
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raise DataError(f"{yaml_path}: '{IDS_KEY}' must map every class index of 'names' to a distinct integer "
                        "category id")
    return dict(raw)


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


def _list_file(path: Path, roots: list[Path]) -> list[Path]:
    """The images a .txt list names. Each must lie under the dataset folder, the data.yaml's folder or the
    list's own (absolute lines included, as darknet writes them): a line that climbs out of all of them
    (`../../home/x.jpg`) is refused, naming the list and line."""
    folders = [os.path.normpath(os.path.abspath(r)) for r in (*roots, path.parent)]
    out = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        line = line.strip()
        if line:
            # Ultralytics lists write "./images/x.jpg", relative to the list's own folder.
            image = os.path.normpath(os.path.abspath(path.parent / line))
            if not any(os.path.commonpath([image, f]) == f for f in folders):
                raise DataError(f"{path}: line {n}: {line!r} is not a path inside the dataset folder "
                                f"({folders[0]}) or the list's")
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
        if coords_n == 4 and (coords[2] < 0 or coords[3] < 0):
            raise DataError(f"{where}: box size {fields[3]} x {fields[4]} is negative")
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
    note_input(path)
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


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_yolo(src.parent if src.is_file() else src, split or "train", sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_yolo(aset, out, split, task=options.get("yolo_task", "detect"), copy_images=copy_images)


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_yolo(root, split)
