"""Every annotation format by name: N readers and N writers meeting in `AnnotationSet`, never N x N
converters. What a source path means per format:

    coco         the JSON file                       --images: the image folder (default: found)
    voc          the VOC root (Annotations/, ...)    --split: an ImageSets/Main list (default: every XML)
    yolo         the root or its data.yaml           --split: the split name (default: train)
    cvat         the XML file                        --images: the image folder (default: images/ beside it)
    labelstudio  the export JSON                     --images: where the files the tasks name are
    labelme      a folder of labelme JSON files, or one file

And what a writer's output path is: a folder (coco writes <folder>/<split>.json, cvat
<folder>/annotations.xml, labelstudio <folder>/tasks.json, the others their own layout inside it).
Reading for conversion keeps boxes exactly as written (no clipping), so nothing changes on the way through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.atomic import written_together
from visiontl.data.annotations import AnnotationSet, WriteReport, unkept_fields
from visiontl.data.formats.common import recording_inputs
from visiontl.errors import DataError

FORMAT_NAMES = ("coco", "voc", "yolo", "cvat", "labelstudio", "labelme")
_TITLES = {"coco": "COCO", "voc": "VOC", "yolo": "YOLO", "cvat": "CVAT", "labelstudio": "Label Studio", "labelme": "labelme"}


def _check_name(fmt: str) -> None:
    if fmt not in FORMAT_NAMES:
        raise DataError(f"unknown annotation format {fmt!r} (expected one of: {', '.join(FORMAT_NAMES)})")


def read_dataset(fmt: str, src: Path, images: Path | None = None, split: str | None = None,
                 problems: list[str] | None = None) -> AnnotationSet:
    """Read `src` in format `fmt`. With a `problems` list, formats that can collect bad records (COCO) do so
    instead of stopping at the first. The set's `report.inputs` lists every file read other than images."""
    _check_name(fmt)
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    with recording_inputs() as inputs:
        aset = _read(fmt, src, images, split, problems)
    aset.report.inputs = inputs
    return aset


def _read(fmt: str, src: Path, images: Path | None, split: str | None, problems: list[str] | None) -> AnnotationSet:
    if fmt == "coco":
        from visiontl.data.formats.coco import read_coco

        return read_coco(src, images, sanitize=False, problems=problems)
    if fmt == "voc":
        from visiontl.data.formats.voc import read_voc

        return read_voc(src, split, sanitize=False)
    if fmt == "yolo":
        from visiontl.data.formats.yolo import read_yolo

        return read_yolo(src.parent if src.is_file() else src, split or "train", sanitize=False)
    if fmt == "cvat":
        from visiontl.data.formats.cvat import read_cvat

        return read_cvat(src, images, sanitize=False)
    if fmt == "labelstudio":
        from visiontl.data.formats.labelstudio import read_labelstudio

        return read_labelstudio(src, images, sanitize=False)
    from visiontl.data.formats.labelme import read_labelme

    return read_labelme(src, images, sanitize=False)


def write_dataset(aset: AnnotationSet, fmt: str, out: Path, split: str = "train", copy_images: bool = False,
                  **options: Any) -> WriteReport:
    """Write `aset` in format `fmt` into the folder `out`; the report says what the format could not hold.

    The files are written as one batch (`visiontl.atomic.written_together`): none is in place until the
    writer has finished, and none may be a file the set was read from (`report.inputs`, and its images when
    `copy_images`): the conversion is refused in one line before any file is touched."""
    _check_name(fmt)
    out = Path(out)
    inputs = list(aset.report.inputs)
    if copy_images:
        inputs += [aset.image_path(img) for img in aset.images]
    with written_together(protect=inputs):
        report = _write(aset, fmt, out, split, copy_images, options)
    if fmt != "coco":
        report.lost[:0] = unkept_fields(aset, _TITLES[fmt])
    return report


def _write(aset: AnnotationSet, fmt: str, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    if fmt == "coco":
        from visiontl.data.formats.coco import write_coco

        return write_coco(aset, out / f"{split}.json")
    if fmt == "voc":
        from visiontl.data.formats.voc import write_voc

        return write_voc(aset, out, split, copy_images=copy_images)
    if fmt == "yolo":
        from visiontl.data.formats.yolo import write_yolo

        return write_yolo(aset, out, split, task=options.get("yolo_task", "detect"), copy_images=copy_images)
    if fmt == "cvat":
        from visiontl.data.formats.cvat import write_cvat

        return write_cvat(aset, out / "annotations.xml", **({"source": options["source"]} if "source" in options else {}))
    if fmt == "labelstudio":
        from visiontl.data.formats.labelstudio import write_labelstudio

        return write_labelstudio(aset, out / "tasks.json")
    from visiontl.data.formats.labelme import write_labelme

    return write_labelme(aset, out)
