"""Where a Pascal VOC set keeps its files, found among the layouts sets come in:

- the devkit's `Annotations/` + `JPEGImages/` (+ `ImageSets/Main/<split>.txt`);
- `annotations/` or `annots/` + `images/` (Kaggle and GitHub sets);
- the XML files beside the images, in the folder itself or in its `images/` (labelImg saves them there);
- one such folder per split, e.g. Roboflow's "Pascal VOC" export: `train/`, `valid/`, `test/`, each holding
  its JPEGs and their XMLs side by side, no `ImageSets`.

The annotation folder is the first of `ANNOTATION_FOLDERS` that exists, else the first folder holding XML
files among the folder itself and its image folders; the image folder is the first of `IMAGE_FOLDERS` that
exists, else the annotation folder when images lie there, else the folder itself. Folders the user names
(data.annotations / data.images, `--images`) override both.

A split is, in this order: the list `ImageSets/Main/<split>.txt` when it exists; else the folder `<split>/`
(a layout of its own); else, in a set with neither split lists nor split folders, `train` is every XML (the
val split is then held out of it by data.val=0.2). Anything else is an error naming what was looked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from visiontl.data.formats.common import note_input
from visiontl.data.images import is_image_file
from visiontl.errors import DataError

ANNOTATION_FOLDERS = ("Annotations", "annotations", "annots")
IMAGE_FOLDERS = ("JPEGImages", "images", "Images")
SPLIT_FOLDERS = ("train", "trainval", "val", "valid", "validation", "test")  # read as one set when no split is named
WHOLE_SET = "train"  # the split name that means every XML in a set without split lists or folders


@dataclass(frozen=True)
class Layout:
    root: Path  # the set's folder: ImageSets/, SegmentationObject/ and labels.txt are here
    annotations: Path  # the XML files
    images: Path  # the folder an XML's <filename> is relative to

    def stems(self) -> list[str]:
        """Every XML's id (its file name without .xml), sorted."""
        return sorted(p.stem for p in self.annotations.glob("*.xml"))


@dataclass(frozen=True)
class Part:
    """Some XML files of one layout: `stems` are read from `layout.annotations`; `source` is what an empty
    part is reported as."""

    layout: Layout
    stems: list[str]
    source: Path


def find_layout(root: Path, images: Path | None = None, annotations: Path | None = None) -> Layout | None:
    """The layout of the folder `root`, with the folders the user named; None when no XML folder is found."""
    if not root.is_dir():
        return None
    for named, what in ((annotations, "XML folder data.annotations"), (images, "image folder data.images, --images")):
        if named is not None and not named.is_dir():
            raise DataError(f"{named}: no such folder (the {what} names)")
    ann = annotations or _first_folder(root, ANNOTATION_FOLDERS)
    if ann is None:  # XML beside the images
        beside = [images] if images is not None else [root / name for name in IMAGE_FOLDERS]
        ann = next((d for d in [root, *beside] if d.is_dir() and _has_xml(d)), None)
    if ann is None:
        return None
    if images is None:
        images = _first_folder(root, IMAGE_FOLDERS) or (ann if any(is_image_file(p) for p in ann.iterdir()) else root)
    return Layout(root, ann, images)


def layout_of(root: Path, images: Path | None = None, annotations: Path | None = None) -> Layout:
    found = find_layout(root, images, annotations)
    if found is None:
        raise DataError(f"{root}: no Annotations folder and no XML files (looked for {_folders(ANNOTATION_FOLDERS)}, "
                        f"and *.xml in the folder itself and in {_folders(IMAGE_FOLDERS)})")
    return found


def split_folders(root: Path) -> list[Layout]:
    """The split folders of `root` (`SPLIT_FOLDERS`, e.g. Roboflow's train/, valid/, test/) that hold a layout
    of their own, in that order."""
    return [found for name in SPLIT_FOLDERS if (found := find_layout(root / name)) is not None]


def list_file(root: Path, split: str) -> Path:
    return root / "ImageSets" / "Main" / f"{split}.txt"


def select(root: Path, split: str | None, images: Path | None = None,
           annotations: Path | None = None) -> list[Part]:
    """The XML files of split `split` of the set in `root` (None: every XML of the set, of every split folder
    when the set is one folder per split)."""
    if split is None:
        found = find_layout(root, images, annotations)
        folders = [] if found is not None else split_folders(root)
        return [_whole(f) for f in folders] or [_whole(found or layout_of(root, images, annotations))]
    listed = list_file(root, split)
    if listed.is_file():
        return [Part(layout_of(root, images, annotations), read_list(listed), listed)]
    folder = root / split
    if folder.is_dir():
        found = layout_of(folder, images, annotations)
        return [_whole(found)]
    lists = sorted(p.stem for p in listed.parent.glob("*.txt")) if listed.parent.is_dir() else []
    if lists:
        raise DataError(f"{listed}: split list not found (lists there: {', '.join(lists)})")
    folders = split_folders(root)
    if folders:
        raise DataError(f"{root}: split {split!r}: no list ImageSets/Main/{split}.txt and no folder {split}/ "
                        f"(split folders there: {', '.join(f.root.name for f in folders)})")
    found = layout_of(root, images, annotations)
    if split == WHOLE_SET:
        return [_whole(found)]
    raise DataError(f"{root}: split {split!r}: no list ImageSets/Main/{split}.txt and no folder {split}/; the set has "
                    f"no splits, so data.train={WHOLE_SET} reads every XML and data.val=0.2 holds a share of them out")


def read_list(path: Path) -> list[str]:
    """The image ids of a split list, in its order: the first word of each line (per-class lists write
    "<id> 1" / "<id> -1")."""
    ids: list[str] = []
    seen: set[str] = set()
    note_input(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        stem = line.split()[0]
        if "/" in stem or "\\" in stem or stem in (".", ".."):  # an id names <id>.xml in the XML folder, no other
            raise DataError(f"{path}: line {n}: image id {stem!r} is not a file name")
        if stem in seen:
            raise DataError(f"{path}: line {n}: image id {stem!r} is listed twice")
        seen.add(stem)
        ids.append(stem)
    return ids


def _whole(found: Layout) -> Part:
    return Part(found, found.stems(), found.annotations)


def _folders(names: tuple[str, ...]) -> str:
    return ", ".join(f"{name}/" for name in names)


def _first_folder(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def _has_xml(folder: Path) -> bool:
    return any(p.suffix == ".xml" and p.is_file() for p in folder.iterdir())
