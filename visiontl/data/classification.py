"""Classification datasets: image folders (`root/<split>/<class>/*`) and CSV lists (`path,label`).

Everything is checked when the dataset is built, before training: missing folders, unknown labels,
empty classes, files that are not readable images. Each problem is one line naming the file and record.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from visiontl.config import DataConfig
from visiontl.data import dataset_root
from visiontl.data.images import is_image_file, read_image
from visiontl.data.sampling import split_item
from visiontl.errors import DataError


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def _split_path(data: DataConfig, split: str) -> Path:
    root = dataset_root(data)
    path = Path(getattr(data, split))
    return path if path.is_absolute() else root / path


def discover_classes(data: DataConfig) -> list[str]:
    """The class list: data.classes when given, else the sorted class folders / labels of the train split."""
    if data.classes:
        if len(set(data.classes)) != len(data.classes):
            raise DataError(f"data.classes lists a class twice: {data.classes}")
        return list(data.classes)
    path = _split_path(data, "train")
    if data.format == "imagefolder":
        if not path.is_dir():
            raise DataError(f"{path}: train folder not found (data.format imagefolder wants root/<split>/<class>/)")
        names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    else:
        names = sorted({label for _, label, _ in _read_csv_rows(path)})
    if len(names) < 2:
        raise DataError(f"{path}: found {len(names)} class(es) {names}; classification needs at least 2")
    return names


def load_split(data: DataConfig, split: str, classes: list[str]) -> tuple[list[Sample], list[str]]:
    """The samples of `split` ('train' or 'val'), every file decoded in full, so a truncated file stops here
    and not mid-training; with data.on_bad_image=skip, the files that fail are left out: the samples kept and
    one line per file left out."""
    from visiontl.data.check import usable_images

    path = _split_path(data, split)
    index = {name: i for i, name in enumerate(classes)}
    samples = _imagefolder(path, index) if data.format == "imagefolder" else _csv(path, data.root, index)
    if not samples:
        raise DataError(f"{path}: no images found for split {split!r}")
    keep, left_out = usable_images([s.path for s in samples], data.on_bad_image)
    return [s for s, ok in zip(samples, keep) if ok], left_out


def check_every_class(samples: list[Sample], classes: list[str], where: str) -> None:
    """A class never seen in training cannot be learned: say so now, not after the run."""
    counts = class_counts(samples, len(classes))
    empty = [name for name, n in zip(classes, counts) if not n]
    if empty:
        more = f" (nor {', '.join(map(repr, empty[1:]))})" if len(empty) > 1 else ""
        raise DataError(f"{where}: class {empty[0]!r} has no images{more}")


def _imagefolder(path: Path, index: dict[str, int]) -> list[Sample]:
    if not path.is_dir():
        raise DataError(f"{path}: folder not found (data.format imagefolder wants root/<split>/<class>/)")
    samples = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in index:
            raise DataError(f"{folder}: class folder {folder.name!r} is not in the class list {list(index)}")
        files = sorted(f for f in folder.rglob("*") if f.is_file() and is_image_file(f))
        samples += [Sample(f, index[folder.name]) for f in files]
    return samples


def _read_csv_rows(path: Path) -> list[tuple[str, str, int]]:
    if not path.is_file():
        raise DataError(f"{path}: CSV list not found (data.format csv wants a file with columns path,label)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}: the header must name the columns 'path' and 'label', got {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row["path"] or not row["label"]:
                raise DataError(f"{path}:{line}: empty path or label")
            rows.append((row["path"].strip(), row["label"].strip(), line))
    except csv.Error as exc:  # a NUL byte, an unclosed quote at the end of the file
        raise DataError(f"{path}:{reader.line_num}: not a CSV row ({exc})") from None
    return rows


def _csv(path: Path, root: Path | None, index: dict[str, int]) -> list[Sample]:
    samples = []
    base = root if root is not None else path.parent
    for file, label, line in _read_csv_rows(path):
        if label not in index:
            raise DataError(f"{path}:{line}: unknown label {label!r}; known classes: {list(index)}")
        p = Path(file)
        samples.append(Sample(p if p.is_absolute() else base / p, index[label]))
    return samples


def class_counts(samples: list[Sample], num_classes: int) -> list[int]:
    return np.bincount([s.label for s in samples], minlength=num_classes).tolist()


class ClassificationDataset(Dataset):
    """Items are (image tensor CHW, label, index). Indexed by (index, augmentation seed) pairs from
    `EpochSampler`, so augmentation is reproducible whatever the worker count; a plain int works too."""

    def __init__(self, samples: list[Sample], transform: Callable):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def image_files(self) -> list[str]:
        return [str(s.path) for s in self.samples]

    def file_of(self, index: int) -> str:
        return str(self.samples[index].path)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """The decoded image (HxWx3 uint8) and label of `index`, before any transform."""
        sample = self.samples[index]
        return read_image(sample.path), sample.label

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = split_item(item)
        image, label = self.load(index)
        self.transform.set_random_seed(seed)
        return self.transform(image=image)["image"], label, index

