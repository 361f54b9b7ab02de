"""Data: decoding, datasets per task, augmentation presets, samplers and synthetic sets for tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from visiontl.errors import DataError

# The end of the one-line error of an image that fails the checks before training.
SKIP_HINT = "data.on_bad_image=skip trains without such images"

if TYPE_CHECKING:  # visiontl.config imports the format registry from this package
    from visiontl.config import DataConfig


def dataset_root(data: DataConfig) -> Path:
    """data.root, checked: set and an existing folder (one line otherwise, before anything is built)."""
    if data.root is None:
        raise DataError("data.root is not set: point it at the dataset folder")
    if not data.root.is_dir():
        raise DataError(f"data.root: {str(data.root)!r} does not exist or is not a folder")
    return data.root


def split_images(data: DataConfig, split: str) -> Path | None:
    """The image folder of `split` ("train" or "val"): data.<split>_images, else data.images, relative to root;
    None lets the format find it."""
    folder = getattr(data, f"{split}_images") or data.images
    return dataset_root(data) / folder if folder else None


def read_annotation_split(data: DataConfig, split: str, classes: list[str] | None = None):  # -> AnnotationSet
    """Read split `split` ("train" or "val") of an annotation-format dataset (coco, voc, yolo, ...) for
    training: data.<split> as written, through the format registry."""
    from visiontl.data.formats.registry import read_split

    root = dataset_root(data)
    return read_split(data.format, root, str(getattr(data, split)), images=split_images(data, split),
                      annotations=root / data.annotations if data.annotations else None, classes=classes)


def relative_file(path: str | Path, root: Path | None) -> str:
    """How per-image records name an image: relative to the dataset root when it lies under it (a run
    directory then reads the same on another machine), else as given."""
    path = Path(path)
    if root is not None:
        for p, r in ((path, Path(root)), (path.resolve(), Path(root).resolve())):  # as written first: no syscalls
            try:
                return p.relative_to(r).as_posix()
            except ValueError:
                pass
    return str(path)
