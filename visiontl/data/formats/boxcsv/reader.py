"""Reading box CSV files: finding the CSV of a split, its columns (a header row in any column order, or
keras-retinanet's headerless `path,x1,y1,x2,y2,class`), its class file, its image folder, and its rows."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.formats.common import first_line, note_input, parse_number, relative_name, short
from visiontl.data.images import check_image
from visiontl.errors import DataError

ANNOTATIONS = "_annotations.csv"  # Roboflow's name, one per split folder; what the writer writes
CLASS_FILES = ("classes.csv", "class_mapping.csv")  # keras-retinanet's `class_name,id` file, found beside the CSV
BOX_FIELDS = ("class", "xmin", "ymin", "xmax", "ymax")
HEADERLESS = ("image", "xmin", "ymin", "xmax", "ymax", "class")  # keras-retinanet's column order

# Header names (lower case, spaces and hyphens read as "_") -> the column they mean; the first alias a header
# has wins when it has several (`filename` before `path`).
ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("filename", "file_name", "image_path", "image", "image_name", "image_file", "img", "file",
              "filepath", "file_path", "path"),
    "class": ("class", "label", "class_name", "classname", "category", "category_name", "label_name"),
    "xmin": ("xmin", "x_min", "x1", "left"),
    "ymin": ("ymin", "y_min", "y1", "top"),
    "xmax": ("xmax", "x_max", "x2", "right"),
    "ymax": ("ymax", "y_max", "y2", "bottom"),
    "width": ("width", "image_width", "img_width"),
    "height": ("height", "image_height", "img_height"),
}
_KNOWN = {alias for aliases in ALIASES.values() for alias in aliases}


@dataclass
class _Row:
    line: int
    image: str  # the file name as a path inside the image folder, POSIX separators
    size: tuple[int, int] | None  # width, height when the CSV gives them
    box: tuple[str, float, float, float, float] | None  # class, xmin, ymin, xmax, ymax; None: no objects
    attributes: dict[str, str] = field(default_factory=dict)  # the other columns' non-empty values


# --- finding the files ------------------------------------------------------------------------------------


def find_csv(src: Path, split: str | None) -> Path:
    """The box CSV `src` names: the file itself; in a folder `_annotations.csv` or its only CSV (class files
    aside); else the split's (`split`, default `train`, as `locate_split` finds it)."""
    if src.is_file():
        return src
    if split is None:
        inside = _in_folder(src)
        if inside is not None:
            return inside
    return locate_split(src, split or "train")


def locate_split(root: Path, split: str) -> Path:
    """The CSV of split `split` under `root`: `root/<split>` when it is a file; when it is a folder, the CSV in
    it (Roboflow: `train/_annotations.csv`); else `<split>.csv`, `<split>_labels.csv` (the TensorFlow Object
    Detection API tutorials' name) or `<split>_annotations.csv` in `root`."""
    target = root / split
    if target.is_file():
        return target
    if target.is_dir():
        inside = _in_folder(target)
        if inside is None:
            raise DataError(f"{target}: no {ANNOTATIONS} and not exactly one other CSV file in it ({_listing(target)})")
        return inside
    for name in (f"{split}.csv", f"{split}_labels.csv", f"{split}_annotations.csv"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{target}: no such CSV file or folder, and no {split}.csv, {split}_labels.csv or "
                    f"{split}_annotations.csv in {root} ({_listing(root)})")


def _in_folder(folder: Path) -> Path | None:
    if (folder / ANNOTATIONS).is_file():
        return folder / ANNOTATIONS
    found = _csv_files(folder)
    return found[0] if len(found) == 1 else None


def _csv_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.csv") if p.name.lower() not in CLASS_FILES and p.is_file())


def _listing(folder: Path) -> str:
    names = [p.name for p in _csv_files(folder)]
    if not names:
        return "no CSV files there"
    return f"CSV files there: {', '.join(names[:10])}" + (" ..." if len(names) > 10 else "")


def class_file(csv_path: Path) -> Path | None:
    for name in CLASS_FILES:
        if (csv_path.parent / name).is_file():
            return csv_path.parent / name
    return None


# --- reading ----------------------------------------------------------------------------------------------


def read_box_csv(path: Path, images: Path | None = None, sanitize: bool = True) -> AnnotationSet:
    """Read one box CSV (see the package's docstring for the mapping rules); `images` is the folder the file
    names are relative to (default: the CSV's folder, or `images/` beside it when the first image is there)."""
    path = Path(path)
    classes = class_file(path)
    cat_ids = _read_class_file(classes) if classes is not None else None
    rows = _read_rows(path)
    image_root = Path(images) if images is not None else _image_root(path, rows)

    fixed = cat_ids is not None
    cat_ids = dict(cat_ids or {})
    records: dict[str, ImageRecord] = {}
    instances: list[Instance] = []
    for row in rows:
        where = f"{path}: line {row.line}"
        record = records.get(row.image)
        if record is None:
            width, height = row.size if row.size is not None else check_image(image_root / row.image)
            record = records[row.image] = ImageRecord(len(records) + 1, row.image, width, height)
        elif row.size is not None and row.size != (record.width, record.height):
            raise DataError(f"{where}: size {row.size[0]}x{row.size[1]}, but an earlier row gives {short(row.image)!r} "
                            f"as {record.width}x{record.height}")
        if row.box is None:
            continue
        name, x1, y1, x2, y2 = row.box
        if name not in cat_ids:
            if fixed:
                raise DataError(f"{where}: class {short(name)!r} is not in {classes} ({_names(cat_ids)})")
            cat_ids[name] = len(cat_ids) + 1
        instances.append(Instance(len(instances) + 1, record.id, cat_ids[name], (x1, y1, x2 - x1, y2 - y1),
                                  attributes=row.attributes))
    if not records:
        raise DataError(f"{path}: no rows (a box CSV has a row per box)")
    categories = [Category(cid, name) for name, cid in cat_ids.items()]
    aset = AnnotationSet(categories, list(records.values()), instances, image_root, ReadReport(source=str(path)))
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset  # False: boxes as written (check, convert)


def _image_root(path: Path, rows: list[_Row]) -> Path:
    """The CSV's folder, or `images/` beside it when the first image named is there and not in the folder."""
    beside = path.parent / "images"
    first = rows[0].image if rows else None
    if first is not None and not (path.parent / first).exists() and (beside / first).is_file():
        return beside
    return path.parent


def _names(cat_ids: dict[str, int]) -> str:
    names = [short(n) for n in cat_ids]
    return ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")


def _open(path: Path, what: str):  # -> csv reader over the file's lines
    note_input(path)
    try:
        return open(path, encoding="utf-8-sig", newline="")  # Excel writes a byte order mark
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or first_line(exc)})") from None


def _records(path: Path, what: str):  # -> iterator of (line number, fields), blank lines left out
    with _open(path, what) as f:
        reader = csv.reader(f, strict=True)  # "a"b or an unclosed quote: an error, not a guess
        try:
            for fields in reader:
                if any(v.strip() for v in fields):
                    yield reader.line_num, fields
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({first_line(exc)})") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: cannot read ({first_line(exc)}); a CSV file is UTF-8 text") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror or first_line(exc)})") from None


def _read_rows(path: Path) -> list[_Row]:
    rows: list[_Row] = []
    columns: dict[str, int] | None = None
    extra: dict[str, int] = {}
    count, expected = len(HEADERLESS), ""
    for n, fields in _records(path, "box CSV"):
        if columns is None:
            header = _header(fields)
            if header is not None:
                columns, extra = _columns(header, path, n)
                count, expected = len(fields), f"as the header on line {n}"
                continue
            columns = {key: k for k, key in enumerate(HEADERLESS)}
            expected = "path,x1,y1,x2,y2,class without a header, or a header row naming the columns"
        if len(fields) != count:
            raise DataError(f"{path}: line {n}: {len(fields)} fields; expected {count} ({expected})")
        rows.append(_row(fields, columns, extra, f"{path}: line {n}", n))
    return rows


def _header(fields: list[str]) -> list[str] | None:
    """The normalised column names when `fields` is a header row: no field is a number and one is a known
    column name (a headerless row has four numbers, or is `path,,,,,`)."""
    names = [f.strip().lower().replace(" ", "_").replace("-", "_") for f in fields]
    if any(_is_number(f) for f in fields) or not any(n in _KNOWN for n in names):
        return None
    return names


def _columns(names: list[str], path: Path, line: int) -> tuple[dict[str, int], dict[str, int]]:
    """Column -> position for the known columns, and name -> position for the others (kept as attributes)."""
    columns: dict[str, int] = {}
    for key, aliases in ALIASES.items():
        for alias in aliases:
            if alias in names:
                columns[key] = names.index(alias)
                break
    missing = [key for key in ("image", *BOX_FIELDS) if key not in columns]
    if missing:
        wanted = "; ".join(f"{key}: one of {', '.join(ALIASES[key])}" for key in missing)
        raise DataError(f"{path}: line {line}: the header names no column for {wanted}")
    used = set(columns.values())
    extra = {name: k for k, name in enumerate(names) if k not in used and name}
    return columns, extra


def _row(fields: list[str], columns: dict[str, int], extra: dict[str, int], where: str, line: int) -> _Row:
    image = fields[columns["image"]].strip()  # "a.jpg, 1, 2": hand-written files put spaces after commas
    if not image:
        raise DataError(f"{where}: no image file name")
    rel = relative_name(image, where, "image file name").as_posix()
    size = None
    if "width" in columns and "height" in columns:
        w, h = fields[columns["width"]].strip(), fields[columns["height"]].strip()
        if w or h:
            size = (_side(w, "width", where), _side(h, "height", where))
    values = [fields[columns[key]] for key in BOX_FIELDS]
    attributes = {name: fields[k].strip() for name, k in extra.items() if fields[k].strip()}
    if not any(v.strip() for v in values):
        return _Row(line, rel, size, None)  # keras-retinanet's `path,,,,,`: an image without objects
    name = values[0].strip()
    if not name:
        raise DataError(f"{where}: a box without a class")
    x1, y1, x2, y2 = (parse_number(v.strip() or None, key, where) for v, key in zip(values[1:], BOX_FIELDS[1:]))
    if x2 < x1 or y2 < y1:
        raise DataError(f"{where}: box corners ({x1:g}, {y1:g}) - ({x2:g}, {y2:g}) are in the wrong order "
                        "(xmin, ymin, xmax, ymax)")
    return _Row(line, rel, size, (name, x1, y1, x2, y2), attributes)


def _side(text: str, what: str, where: str) -> int:
    value = parse_number(text or None, f"image {what}", where)
    if not value.is_integer() or value <= 0:
        raise DataError(f"{where}: image {what} {short(text)!r} is not a positive whole number of pixels")
    return int(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_class_file(path: Path) -> dict[str, int]:
    """keras-retinanet's class file: `class_name,id` per line (a header row such as `class,id` is allowed)."""
    ids: dict[str, int] = {}
    seen: dict[int, str] = {}
    for n, fields in _records(path, "class file"):
        where = f"{path}: line {n}"
        if len(fields) != 2:
            raise DataError(f"{where}: {len(fields)} fields; expected class_name,id")
        name, text = fields[0].strip(), fields[1].strip()
        if not ids and text.lower() in ("id", "class_id", "label_id", "index"):
            continue  # a header row
        if not _is_integer(text):
            raise DataError(f"{where}: id {short(text)!r} is not a whole number")
        cid = int(text)
        if not name:
            raise DataError(f"{where}: no class name")
        if name in ids:
            raise DataError(f"{where}: class {short(name)!r} is listed twice")
        if cid in seen:
            raise DataError(f"{where}: id {cid} is used by {short(seen[cid])!r} and {short(name)!r}")
        ids[name], seen[cid] = cid, name
    if not ids:
        raise DataError(f"{path}: no classes (a class file has a `class_name,id` row per class)")
    return ids


def _is_integer(text: str) -> bool:
    t = text[1:] if text[:1] in "+-" else text
    return t.isascii() and t.isdigit() and len(t) <= 18
