"""Where a COCO file's images are. A COCO file names its images relative to a folder it does not record, and
the layouts datasets come in put that folder in different places:

    COCO 2017            annotations/instances_train2017.json   train2017/ (or images/train2017/)
    Datumaro             annotations/instances_<split>.json     images/<split>/
    Roboflow             train/_annotations.coco.json           train/ (the JSON beside its images)
    Ultralytics coco128  annotations.json                       images/train2017/

`data.train` / `data.val` name the JSON file, or a split whose JSON these layouts keep in a known place
(`split_file`). The image folder is looked for among the candidates below, in this fixed order: the first
that holds one of the file's first images is it. The split in the JSON's name (instances_<split>.json) names
the folders tried first after the JSON's own; the files themselves decide, so a name that misleads costs
nothing. For a JSON at `D/F.json`, with `P` the folder above `D`:

    D,  D/<split>,  D/images/<split>,  P/<split>,  P/images/<split>,  D/images,  P/images,
    then each sub-folder of D/images, then each of P/images (in name order)
"""

from __future__ import annotations

import os
from pathlib import Path

from visiontl.data.formats.common import short
from visiontl.errors import DataError

# COCO names its files <task>_<split>.json (instances_val2017.json, person_keypoints_train2017.json,
# image_info_test2017.json); Datumaro's export does the same (instances_default.json without subsets).
TASK_PREFIXES = ("instances_", "person_keypoints_", "image_info_", "stuff_", "labels_")

# How many image records are looked for: enough that a missing first image does not hide the folder, few
# enough that a folder that lacks them all costs a handful of stat calls.
PROBE = 8


def split_of(json_path: Path) -> str | None:
    """The split a COCO file's name gives (instances_train2017.json: train2017), None when it gives none."""
    stem = Path(json_path).stem
    for prefix in TASK_PREFIXES:
        if stem.startswith(prefix) and stem[len(prefix):] not in ("", ".", ".."):
            return stem[len(prefix):]
    return None


def candidates(json_path: Path) -> tuple[Path, list[tuple[str, list[Path]]]]:
    """The folder above the JSON's, and the folders that may hold the JSON's images in the order they are
    tried, in groups as a message shows them (relative to that folder; `images/*/`: each sub-folder)."""
    here = Path(json_path).parent
    if here.name in ("", ".."):  # "." or "a/..": the folder above is not written in the path itself
        here = here.absolute()
    above = here.parent
    at = here.relative_to(above)
    split = split_of(json_path)
    named = [at, *([at / split, at / "images" / split, Path(split), Path("images", split)] if split else []),
             at / "images", Path("images")]
    groups = [(f"{rel}/", [above / rel]) for rel in named]
    for rel in (at / "images", Path("images")):  # Ultralytics-style: names relative to images/<split>/
        groups.append((f"{rel}/*/", _subfolders(above / rel)))
    seen: set[Path] = set()
    unique = []
    for shown, folders in groups:
        folders = [f for f in folders if f not in seen]
        seen.update(folders)
        if folders:
            unique.append((shown, folders))
    return above, unique


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:  # not a folder, or not readable: nothing to look in
        return []


def find_image_root(json_path: Path, file_names: list[str]) -> Path:
    """The first candidate folder holding one of the first `PROBE` images `file_names` lists; when none
    holds any, one line naming the JSON, the images looked for and every folder tried."""
    probe = file_names[:PROBE]
    above, tried = candidates(json_path)
    for _, folders in tried:
        for folder in folders:
            # os.path.isfile: a name the file system cannot hold (too long, a NUL) is simply not there
            if any(os.path.isfile(folder / name) for name in probe):
                return folder
    shown = ", ".join(repr(short(name, 60)) for name in probe[:3]) + (", ..." if len(probe) > 3 else "")
    raise DataError(f"{json_path}: its images ({shown}) are in none of the folders tried in {above}: "
                    f"{', '.join(s for s, _ in tried)}; name their folder with data.images (per split: "
                    f"data.train_images, data.val_images; data commands: --images)")


def split_file(root: Path, split: str) -> Path:
    """The JSON of training split `split` (data.train / data.val as written): the file it names relative to
    `root`, or for a split name the first of <split>/_annotations.coco.json (Roboflow; `val` also tries
    Roboflow's `valid/`), annotations/instances_<split>.json (COCO, Datumaro) and <split>.json (visiontl's own
    `data convert --to coco`) that exists; one line naming them all when none does."""
    path = root / split
    if path.suffix.lower() == ".json" or path.is_file():
        return path  # a missing file is named by the reader
    tried = [path / "_annotations.coco.json", *([root / "valid" / "_annotations.coco.json"] if split == "val" else []),
             root / "annotations" / f"instances_{split}.json", root / f"{split}.json"]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise DataError(f"{root}: no COCO file for split {split!r}: none of "
                    f"{', '.join(str(p.relative_to(root)) for p in tried)} exists; name the JSON file "
                    f"(data.train / data.val, relative to data.root)")
