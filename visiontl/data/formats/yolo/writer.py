"""Writing an `AnnotationSet` as a YOLO folder (`write_yolo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from visiontl.atomic import atomic_write_text
from visiontl.data.annotations import AnnotationSet, ImageRecord, Instance, WriteReport, check_text_names
from visiontl.data.formats.voc import (
    category_losses,
    copy_image,
    has_shape,
    image_losses,
    polygon_parts,
    relative_file,
    writable_instances,
)
from visiontl.data.formats.yolo.files import IDS_KEY, category_ids, label_path, load_yaml, names_of
from visiontl.data.images import check_image, is_image_file
from visiontl.errors import DataError

_TASKS = ("detect", "segment")
_BOX_SLACK = 0.01  # px: a box this close to its polygon's extent is the same box


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
        for inst, where in writable_instances(img, by_image[img.id], names, "YOLO", report):
            lines += _instance_lines(inst, index_of[inst.category_id], img, task, where, report)
        atomic_write_text(label, "".join(f"{line}\n" for line in lines))
        if copy_images and not copy_image(aset.image_path(img), dest, copy_images):
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
        label = label_path(dest)
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
    data = load_yaml(yaml_path)
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
        old = names_of(existing["names"], yaml_path)
        ids = category_ids(existing, old, yaml_path)
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
