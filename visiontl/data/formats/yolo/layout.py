"""Finding a YOLO split's files, in the layouts YOLO datasets come in:

- Ultralytics / Roboflow: a data.yaml (or the folder's one .yaml) with `names` and a key per split naming an
  image folder, a .txt list of image paths, or a list of those, relative to its `path` when given, else to
  its own folder; labels where Ultralytics looks (`.../images/x.jpg` -> `.../labels/x.txt`);
- darknet / CVAT "YOLO 1.1": `obj.data` (`key = value` lines: `classes`, `train = data/train.txt`,
  `valid = ...`, `names = data/obj.names`), list files of image paths, labels beside the images (CVAT's
  `obj_<subset>_data/`) or in a parallel `labels/` folder (`images/` or `JPEGImages/` -> `labels/`);
- plain: `images/<split>/` + `labels/<split>/` with the names in `classes.txt` or `obj.names`, in the root or
  in `labels/`; a flat `images/` + `labels/` (Label Studio's YOLO export) is the train split.

Every path a file names stays inside the dataset folder: one that climbs out (`../..`, an absolute path
elsewhere) is refused with one line naming the file and line. Split `val` also finds `valid` and the other
way round (Roboflow's folders and darknet's key say `valid`, Ultralytics' key says `val`).
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from visiontl.data.formats.yolo.files import category_ids, label_path, load_yaml, names_of, read_text
from visiontl.data.images import is_image_file
from visiontl.errors import DataError

_ALIASES = {"val": "valid", "valid": "val"}
_NAME_FILES = ("classes.txt", "obj.names")
_DARKNET_LABELS = ("images", "JPEGImages")  # darknet's folders whose label twin is `labels`
_NOT_SPLITS = {"classes", "names", "backup", "eval", "results", "map"}  # obj.data keys that are no split
_CVAT_FOLDER = re.compile(r"obj_.+_data")


@dataclass
class SplitFiles:
    source: str  # what the read report names: the data.yaml, the list file, the label folder
    names: dict[int, str]  # class index -> name
    ids: dict[int, int]  # class index -> category id
    items: list[tuple[Path, Path]]  # (image file, its label file) in reading order
    image_root: Path  # the folder the images' names are relative to


def find_split(src: Path, split: str, images: Path | None = None) -> SplitFiles:
    """The files of split `split` of the YOLO dataset `src` (its folder, its data.yaml or obj.data, or a file
    in its folder). `images` (data.images, --images) is where the images are when not where the layout puts
    them (a CVAT export without images): an image named N relative to the split's image folder is read from
    `images/N`; its label stays where the layout puts it."""
    if src.is_file() and src.suffix in (".yaml", ".yml"):
        found = _from_yaml(src, split, images)
    elif src.is_file() and src.suffix == ".data":
        found = _from_darknet(src, split)
    else:
        root = src.parent if src.is_file() else src
        found = _find_in(root, split, images)
    if images is not None:
        found.items = [(images / os.path.relpath(image, found.image_root), label) for image, label in found.items]
        found.image_root = images
    if not found.items:
        raise DataError(f"{found.image_root}: no images for split {split!r}")
    return found


def _find_in(root: Path, split: str, images: Path | None) -> SplitFiles:
    if (root / "data.yaml").is_file():
        return _from_yaml(root / "data.yaml", split, images)
    # Ultralytics names a dataset's yaml after it (coco8.yaml); one with `names` is that, another (a
    # training config kept beside the data) is not.
    yamls = _one(root, ("*.yaml", "*.yml"))
    if yamls and isinstance(data := load_yaml(yamls[0]), dict) and "names" in data:
        return _from_yaml(yamls[0], split, images)
    # darknet: the dataset's .data file, or AlexeyAB's training folder with its `data/obj.data`.
    darknet = [root / "obj.data"] if (root / "obj.data").is_file() else _one(root, ("*.data",))
    if darknet or (root / "data" / "obj.data").is_file():
        return _from_darknet(darknet[0] if darknet else root / "data" / "obj.data", split)
    return _plain(root, split, images)


def _one(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The folder's one file matching `patterns`; none when there are none or several (which is meant is
    not known)."""
    found = [p for pattern in patterns for p in root.glob(pattern) if p.is_file()]
    return found if len(found) == 1 else []


def _split_key(keys: list[str], split: str) -> str | None:
    for key in (split, _ALIASES.get(split)):
        if key in keys:
            return key
    return None


# --- Ultralytics / Roboflow: data.yaml -------------------------------------------------------------------


def _from_yaml(yaml_path: Path, split: str, images: Path | None) -> SplitFiles:
    data = load_yaml(yaml_path)
    if not isinstance(data, dict):
        raise DataError(f"{yaml_path}: not a YOLO data file (expected keys such as train, val, names)")
    names = names_of(data.get("names"), yaml_path)
    ids = category_ids(data, names, yaml_path)
    key = _split_key([k for k, v in data.items() if v], split)
    if key is None:
        keys = [k for k in ("train", "val", "test") if data.get(k)]
        raise DataError(f"{yaml_path}: no '{split}' entry (it has: {', '.join(keys) or 'none'})")
    root = yaml_path.parent
    base = _dataset_folder(root, data.get("path"))
    entries = data[key] if isinstance(data[key], list) else [data[key]]
    items: list[tuple[Path, Path]] = []
    folders: list[Path] = []
    for item in entries:
        target = _entry(base, root, str(item), f"{yaml_path}: '{key}' entry")
        if target.is_dir() or (images is not None and not target.exists() and len(entries) == 1):
            folders.append(target)
            items += [(p, _label(p, [base, root])) for p in _folder_images(target, images)]
        elif target.is_file():
            items += [(p, _label(p, [base, root])) for p in _list_file(target, [base, root])]
        else:
            raise DataError(f"{yaml_path}: '{key}' entry {str(item)!r} ({target}) does not exist")
    if len(folders) == len(entries) == 1:
        image_root = folders[0]
    else:
        image_root = _common_folder([image for image, _ in items]) if items else base
    return SplitFiles(str(yaml_path), names, ids, items, image_root)


def _dataset_folder(root: Path, path: object) -> Path:
    """The folder data.yaml's entries are relative to: its `path` when that is an existing folder, absolute
    (as `write_yolo` writes it) or inside the yaml's folder; else the yaml's folder itself: Ultralytics reads
    a relative `path` (`coco8`, `../datasets/coco8`) against its own datasets folder, which means nothing
    here, and a dataset moved since an absolute `path` was written is where its yaml is."""
    if not path:
        return root
    text = str(path)
    if Path(text).is_absolute():
        return Path(text) if Path(text).is_dir() else root
    folder = Path(posixpath.normpath((root / text).as_posix()))
    return folder if _inside(folder, [root]) and folder.is_dir() else root


def _entry(base: Path, root: Path, item: str, where: str) -> Path:
    """A split entry of data.yaml as a path inside the dataset folder. Roboflow writes `train: ../train/images`
    beside a data.yaml in the dataset folder itself: as Ultralytics does, a `../` entry that is not there is
    read without its `../` (here also one that would leave the dataset)."""
    target = _tidy(base / item)
    if item.startswith("../") and not (target.exists() and _inside(target, [base, root])):
        target = _tidy(base / item[3:])
    if not _inside(target, [base, root]):
        raise DataError(f"{where} {item!r} is not a path inside the dataset folder ({base})")
    return target


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
            out.append(_tidy(path.parent / line))
    return out


# --- darknet / CVAT YOLO 1.1: obj.data ---------------------------------------------------------------------


def _from_darknet(data_path: Path, split: str) -> SplitFiles:
    root = data_path.parent
    config = _darknet_config(data_path)
    names_file = (_darknet_path(root, config["names"], f"{data_path}: names") if config.get("names")
                  else _names_file(root))
    if names_file is None or not names_file.is_file():
        raise DataError(f"{data_path}: names file {config.get('names', 'obj.names')!r} not found "
                        "(the class names are needed)")
    names = _names_in(names_file)
    lists = [k for k, v in config.items() if k not in _NOT_SPLITS and v]
    key = _split_key(lists, split)
    if key is not None:
        list_path = _darknet_path(root, config[key], f"{data_path}: {key}")
        items = [(p, _label(p, [root], _DARKNET_LABELS)) for p in _darknet_list(root, list_path)]
        return SplitFiles(str(list_path), names, {k: k for k in names}, items, _image_root(root, items))
    # A CVAT export whose obj.data names no list for the subset still has its obj_<subset>_data folder.
    for name in (split, _ALIASES.get(split)):
        folder = root / f"obj_{name}_data"
        if name and folder.is_dir():
            items = [(p, _label(p, [root], _DARKNET_LABELS)) for p in images_in(folder)]
            return SplitFiles(str(folder), names, {k: k for k in names}, items, folder)
    raise DataError(f"{data_path}: no '{split}' list and no obj_{split}_data folder (it has: "
                    f"{', '.join(lists) or 'none'})")


def _darknet_config(path: Path) -> dict[str, str]:
    """obj.data's `key = value` lines (darknet's option file: `#` and `;` start comment lines)."""
    out: dict[str, str] = {}
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise DataError(f"{path}: line {n}: {line!r} is not 'key = value'")
        out[key.strip()] = value.strip()
    return out


def _darknet_path(root: Path, text: str, where: str) -> Path:
    """A path darknet's files name, as a path inside the dataset folder `root`. Darknet reads them from its
    working folder, whose `data/` the export was meant to be unpacked into (CVAT writes `data/train.txt`,
    `data/obj_train_data/x.jpg`): `data/` is the dataset folder itself unless it has a `data/` folder."""
    rel = posixpath.normpath(text.replace("\\", "/"))
    if rel.startswith("data/") and not (root / "data").is_dir():
        rel = rel[len("data/"):]
    target = _tidy(root / rel)
    if not _inside(target, [root]):
        raise DataError(f"{where}: {text!r} is not a path inside the dataset folder ({root})")
    return target


def _darknet_list(root: Path, path: Path) -> list[Path]:
    if not path.is_file():
        raise DataError(f"{path}: image list not found")
    lines = read_text(path).splitlines()
    return [_darknet_path(root, line.strip(), f"{path}: line {n}")
            for n, line in enumerate(lines, start=1) if line.strip()]


def _image_root(root: Path, items: list[tuple[Path, Path]]) -> Path:
    """The folder the images of a darknet list are named relative to: CVAT's obj_<subset>_data when every
    image is in it (names then keep their sub-folders), else the deepest folder holding them all."""
    tops = {p[0] if len(p) > 1 else None for p in (_normal(image).relative_to(_normal(root)).parts for image, _ in items)}
    if len(tops) == 1 and (top := tops.pop()) is not None and _CVAT_FOLDER.fullmatch(top):
        return root / top
    return _common_folder([image for image, _ in items]) if items else root


# --- plain: images/<split>/ + labels/<split>/ ----------------------------------------------------------


def _plain(root: Path, split: str, images: Path | None) -> SplitFiles:
    folder = _split_folder(root, split)
    if folder is None and images is None:
        raise DataError(f"{root}: no data.yaml, no obj.data and no images/{split} folder (not a YOLO dataset?)")
    names_file = _names_file(root)
    if names_file is None:
        raise DataError(f"{root}: no data.yaml and no classes.txt or obj.names (the class names are needed)")
    names = _names_in(names_file)
    folder = folder or root / "images" / split
    items = [(p, _label(p, [root])) for p in _folder_images(folder, images)]
    return SplitFiles(str(_label(folder / "x", [root]).parent), names, {k: k for k in names}, items, folder)


def _split_folder(root: Path, split: str) -> Path | None:
    for name in (split, _ALIASES.get(split)):
        if name and (root / "images" / name).is_dir():
            return root / "images" / name
    # One split, flat (images/x.jpg, labels/x.txt), as Label Studio's YOLO export and many hand-made sets
    # are: the train split, so that a val split is never the same images.
    flat = root / "images"
    if split == "train" and flat.is_dir() and any(is_image_file(p) and p.is_file() for p in flat.iterdir()):
        return flat
    return None


def _names_file(root: Path) -> Path | None:
    for folder in (root, root / "labels"):
        for name in _NAME_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _names_in(path: Path) -> dict[int, str]:
    """classes.txt / obj.names: a class name per line, in class index order."""
    lines = [line.strip() for line in read_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for n, line in enumerate(lines, start=1):
        if not line:
            raise DataError(f"{path}: line {n} is empty (a class name per line, in class index order)")
    return dict(enumerate(lines))


# --- paths ---------------------------------------------------------------------------------------------


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file())


def _folder_images(folder: Path, images: Path | None) -> list[Path]:
    """The images of the layout's image folder `folder`; when it is not there (converted with
    --no-copy-images), those of data.images as if they were in it: their labels are where the layout puts
    them."""
    if folder.is_dir() or images is None:
        return images_in(folder)
    return [folder / p.relative_to(images) for p in images_in(images)]


def _label(image: Path, roots: list[Path], folders: tuple[str, ...] = ("images",)) -> Path:
    """The label file of `image`, looking for `images/` (`folders`) only below the dataset folder: a dataset
    kept in a folder that happens to be called `images` keeps its labels inside it."""
    for root in roots:
        if _inside(image, [root]):
            return root / label_path(_normal(image).relative_to(_normal(root)), folders)
    return label_path(image, folders)


def _tidy(path: Path) -> Path:
    """`path` with `..` and `.` resolved by name, relative still when it was (messages name paths as given)."""
    return Path(os.path.normpath(path))


def _normal(path: Path) -> Path:
    """`path` absolute with `..` and `.` resolved by name (not through links: a dataset may be a tree of links)."""
    return Path(os.path.normpath(os.path.abspath(path)))


def _inside(path: Path, folders: list[Path]) -> bool:
    target = str(_normal(path))
    return any(os.path.commonpath([target, str(_normal(f))]) == str(_normal(f)) for f in folders)


def _common_folder(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent.absolute()) for p in paths]))
