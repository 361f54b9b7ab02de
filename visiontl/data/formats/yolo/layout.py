"""Finding a YOLO split's files: data.yaml, or images/<split>/ with classes.txt."""

from __future__ import annotations

import os
from pathlib import Path

from visiontl.data.formats.yolo.files import category_ids, load_yaml, names_of, read_text
from visiontl.data.images import is_image_file
from visiontl.errors import DataError


def from_yaml(yaml_path: Path, split: str) -> tuple[str, dict[int, str], list[Path], Path, dict[int, int]]:
    data = load_yaml(yaml_path)
    if not isinstance(data, dict):
        raise DataError(f"{yaml_path}: not a YOLO data file (expected keys such as train, val, names)")
    names = names_of(data.get("names"), yaml_path)
    ids = category_ids(data, names, yaml_path)
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
            paths += images_in(target)
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


def classes_txt(root: Path) -> dict[int, str]:
    for path in (root / "classes.txt", root / "labels" / "classes.txt"):
        if path.is_file():
            lines = [line.strip() for line in read_text(path).splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            for n, line in enumerate(lines, start=1):
                if not line:
                    raise DataError(f"{path}: line {n} is empty (a class name per line, in class index order)")
            return dict(enumerate(lines))
    raise DataError(f"{root}: no data.yaml and no classes.txt (the class names are needed)")


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file())


def _list_file(path: Path, roots: list[Path]) -> list[Path]:
    """The images a .txt list names. Each must lie under the dataset folder, the data.yaml's folder or the
    list's own (absolute lines included, as darknet writes them): a line that climbs out of all of them
    (`../../home/x.jpg`) is refused, naming the list and line."""
    folders = [os.path.normpath(os.path.abspath(r)) for r in (*roots, path.parent)]
    out = []
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if line:
            # Ultralytics lists write "./images/x.jpg", relative to the list's own folder.
            image = os.path.normpath(os.path.abspath(path.parent / line))
            if not any(os.path.commonpath([image, f]) == f for f in folders):
                raise DataError(f"{path}: line {n}: {line!r} is not a path inside the dataset folder "
                                f"({folders[0]}) or the list's")
            out.append(path.parent / line)
    return out
