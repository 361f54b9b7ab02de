"""Every annotation format by name: N readers and N writers meeting in `AnnotationSet`, never N x N
converters. This table is the one place a format is named: the config schema (`data.format`), the CLI's
choices, `data check/convert/stats/split` and the training datasets all derive from it. A format is a module
(or package) under `visiontl.data.formats` that provides three functions:

    read(src, images, split, *, sanitize, problems, classes) -> AnnotationSet
        for check, convert, stats, split: `src` is what the user points at (see `Format.source`);
    write(aset, out, split, copy_images, options) -> WriteReport
        into the folder `out` (coco writes <out>/<split>.json, cvat <out>/annotations.xml, labelstudio
        <out>/tasks.json and label_config.xml, csv <out>/<split>/_annotations.csv, the others their own layout
        inside it); `copy_images` (True or "copy", "link": hard links) puts the images where the reader finds
        them;
    read_split(root, split, *, images, annotations, classes) -> AnnotationSet
        for training: `split` is data.train / data.val as written, `images` / `annotations` the folders
        data.<split>_images (or data.images) and data.annotations name, already resolved (None: found).

Adding a format is one folder (or module) and one line here. This module imports nothing heavy: the config
and the CLI parser import it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from visiontl.errors import DataError


@dataclass(frozen=True)
class Format:
    name: str
    title: str  # as people write it, for messages ("Label Studio")
    module: str  # imported when first used
    tasks: tuple[str, ...]  # the training tasks that read it
    source: str  # what a source path is, for help texts
    # How data.train / data.val name split S of what the writer wrote into a folder (`visiontl data split`).
    split_source: str = "{split}"
    split_folder: bool = False  # the writer holds one split per folder: several splits need a folder each
    # The files name classes, not ids: the reader makes the ids up, so two splits' ids need not agree and the
    # val split's classes are matched to the train split's by name.
    named_categories: bool = True
    # The writer copies images into what it writes (`copy_images`); False: its files name the images where they
    # are (Label Studio's task URLs, labelme's relative imagePath).
    copies_images: bool = True

    def impl(self) -> ModuleType:
        return importlib.import_module(self.module)


_DETECTION = ("detection",)
_INSTANCES = ("detection", "instance_segmentation")

FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("coco", "COCO", "visiontl.data.formats.coco", _INSTANCES + ("segmentation",),
           "the JSON file (--images: the image folder, default: found)", split_source="{split}.json",
           named_categories=False),
    Format("voc", "VOC", "visiontl.data.formats.voc", _DETECTION,
           "the VOC folder (--split: an ImageSets/Main list or a split folder, default: every XML)"),
    Format("yolo", "YOLO", "visiontl.data.formats.yolo", _DETECTION,
           "the root, its data.yaml or obj.data (--split: the split name, default: train)", named_categories=False),
    Format("cvat", "CVAT", "visiontl.data.formats.cvat", _INSTANCES,
           "the XML file (--images: the image folder, default: images/ beside it)",
           split_source="{split}/annotations.xml", split_folder=True),
    Format("labelstudio", "Label Studio", "visiontl.data.formats.labelstudio", _INSTANCES,
           "the export JSON (--images: where the files the tasks name are)", split_source="{split}/tasks.json",
           split_folder=True, copies_images=False),
    Format("labelme", "labelme", "visiontl.data.formats.labelme", _INSTANCES,
           "a folder of labelme JSON files, or one file", split_folder=True, copies_images=False),
    Format("csv", "CSV", "visiontl.data.formats.boxcsv", _DETECTION,
           "the box CSV, or a folder holding it (--split: a split folder or <split>.csv in it; --images: the "
           "image folder, default: the CSV's folder)"),
)}
FORMAT_NAMES = tuple(FORMATS)


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataError(f"unknown annotation format {name!r} (expected one of: {', '.join(FORMAT_NAMES)})")
    return FORMATS[name]


def formats_for(task: str) -> tuple[str, ...]:
    """The annotation formats a training task reads, in table order."""
    return tuple(f.name for f in FORMATS.values() if task in f.tasks)


def read_dataset(fmt: str, src: Path, images: Path | None = None, split: str | None = None,
                 problems: list[str] | None = None, classes: list[str] | None = None):  # -> AnnotationSet
    """Read `src` in format `fmt` with boxes exactly as written (check, convert: nothing changes on the way
    through). With a `problems` list, formats that can collect bad records (COCO) do so instead of stopping
    at the first. The set's `report.inputs` lists every file read other than images."""
    from visiontl.data.formats.common import recording_inputs

    spec = get_format(fmt)
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    with recording_inputs() as inputs:
        aset = spec.impl().read(src, Path(images) if images is not None else None, split, sanitize=False,
                                problems=problems, classes=classes)
    aset.report.inputs = inputs
    return aset


def read_split(fmt: str, root: Path, split: str, *, images: Path | None = None, annotations: Path | None = None,
               classes: list[str] | None = None):  # -> AnnotationSet
    """Read one training split: `split` as data.train / data.val say it, relative to `root`; boxes sanitised
    (clipped to the image) for training."""
    return get_format(fmt).impl().read_split(Path(root), split, images=images, annotations=annotations,
                                             classes=classes)


def write_dataset(aset: Any, fmt: str, out: Path, split: str = "train", copy_images: bool = False,
                  **options: Any):  # -> WriteReport
    """Write `aset` in format `fmt` into the folder `out`; the report says what the format could not hold.

    The files are written as one batch (`visiontl.atomic.written_together`): none is in place until the
    writer has finished, and none may be a file the set was read from (`report.inputs`, and its images when
    `copy_images`): the conversion is refused in one line before any file is touched."""
    from visiontl.atomic import written_together
    from visiontl.data.annotations import unkept_fields

    spec = get_format(fmt)
    out = Path(out)
    inputs = list(aset.report.inputs)
    if copy_images:
        inputs += [aset.image_path(img) for img in aset.images]
    with written_together(protect=inputs):
        report = spec.impl().write(aset, out, split, copy_images, options)
    if fmt != "coco":
        report.lost[:0] = unkept_fields(aset, spec.title)
    return report
