"""Where a COCO file's images are: the folder its file names are relative to."""

from __future__ import annotations

from pathlib import Path


def find_image_root(json_path: Path, file_names: list[str]) -> Path:
    """The first candidate folder holding the first image; the JSON's folder when none does (the image
    check then names the missing file)."""
    base = json_path.parent
    candidates = [base, base / "images", base.parent / "images"]
    # Ultralytics-style layouts keep file names relative to images/<split>/ (e.g. coco128's train2017).
    if (base / "images").is_dir():
        candidates += sorted(p for p in (base / "images").iterdir() if p.is_dir())
    for folder in candidates:
        if (folder / file_names[0]).is_file():
            return folder
    return base
