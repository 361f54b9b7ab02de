"""The one annotation model every format reads into and writes from: `AnnotationSet`.

Formats never convert into each other directly; each has a reader to and a writer from this model. Its
conventions are COCO's: boxes are `(x, y, w, h)` in pixels with the origin at the top-left corner of the
image, segmentations are COCO polygons (`[[x1, y1, x2, y2, ...], ...]`) or RLE dicts, category and image
ids are the dataset's own integers (0 allowed, gaps allowed). The map from dataset category ids to the
contiguous labels a model uses (`LabelMap`) is explicit and travels with checkpoints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontl.errors import DataError
from visiontl.text import printable

Box = tuple[float, float, float, float]  # x, y, w, h in pixels


@dataclass
class Category:
    id: int
    name: str
    supercategory: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # a COCO record's other fields (keypoints, skeleton, ...)


@dataclass
class ImageRecord:
    id: int
    file_name: str  # relative to AnnotationSet.image_root; may contain sub-folders
    width: int
    height: int
    attributes: dict[str, Any] = field(default_factory=dict)  # subset, the tool's own task/image id, ...
    extra: dict[str, Any] = field(default_factory=dict)  # a COCO record's other fields (license, coco_url, ...)


@dataclass
class Instance:
    id: int
    image_id: int
    category_id: int
    bbox: Box
    iscrowd: bool = False
    segmentation: list[list[float]] | dict[str, Any] | None = None  # COCO polygons or RLE
    area: float | None = None  # COCO area; None: computed (the mask area where there is a mask, else the box area)
    score: float | None = None  # predictions only
    attributes: dict[str, Any] = field(default_factory=dict)  # difficult, truncated, occluded, ...
    extra: dict[str, Any] = field(default_factory=dict)  # a COCO record's other fields (keypoints, ...)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.bbox
        return x, y, x + w, y + h


@dataclass
class ReadReport:
    """What a reader changed or dropped, so the data summary can say so (nothing is dropped silently)."""

    source: str
    clipped: int = 0  # boxes crossing the image border, clipped to it (touching it changes nothing)
    dropped: list[str] = field(default_factory=list)  # the records left out: a line each, or a line per kind (drop)
    inputs: list[Path] = field(default_factory=list)  # the annotation-side files read: a conversion never replaces one
    grouped: int = 0  # records left out beyond one per `dropped` line (a line of `drop` may stand for several)

    def drop(self, line: str, records: int = 1) -> None:
        """Leave out `records` records of one kind, said in one line (which says how many)."""
        self.dropped.append(line)
        self.grouped += records - 1

    @property
    def left_out(self) -> int:
        """The records left out (shapes, annotations, tasks), not the lines that say so."""
        return len(self.dropped) + self.grouped

    def lines(self) -> list[str]:
        out = []
        if self.clipped:
            out.append(f"{self.clipped} box(es) crossed the image border and were clipped to it")
        if self.dropped:
            shown = "; ".join(self.dropped[:3]) + (f"; and {len(self.dropped) - 3} more" if len(self.dropped) > 3 else "")
            out.append(f"{self.left_out} record(s) left out ({shown})")
        return out


class Lost(str):
    """A `WriteReport.lost` line that names its kind of loss (one of many alike: a supercategory, a score, an
    area per record), so that the printed report says each kind once, with its count and first examples."""

    kind: str

    def __new__(cls, kind: str, text: str) -> Lost:
        line = super().__new__(cls, text)
        line.kind = kind
        return line

    def __getnewargs__(self) -> tuple[str, str]:  # copies and pickles keep the kind
        return self.kind, str(self)


@dataclass
class WriteReport:
    """What a writer wrote, and every thing the target format could not hold (one line each, naming the
    image and annotation), so a conversion never loses anything silently. `lines()` summarises them: the
    lines of a kind (`Lost`, `lose`) as one line with their count and first examples."""

    target: str
    images: int = 0
    boxes: int = 0  # instances written with a box only
    polygons: int = 0  # instances written with their polygon(s)
    masks: int = 0  # instances written with an RLE / bitmap mask
    lost: list[str] = field(default_factory=list)

    def lose(self, kind: str, text: str) -> None:
        """One thing lost, of a kind that may repeat per record (`kind` names it in the summary)."""
        self.lost.append(Lost(kind, text))

    def lines(self) -> list[str]:
        out = [f"{self.target}: {self.images} image(s); {self.boxes} box(es), {self.polygons} polygon(s), "
               f"{self.masks} mask(s)"]
        if not self.lost:
            return out
        single = [line for line in self.lost if not isinstance(line, Lost)]
        kinds: dict[str, list[str]] = {}
        for line in self.lost:
            if isinstance(line, Lost):
                kinds.setdefault(line.kind, []).append(line)
        out.append(f"{len(self.lost)} thing(s) the format cannot hold:" + (f" {_shown(single, 5)}" if single else ""))
        out += [f"  {len(lines)} x {kind}: {_shown(lines, 3)}" for kind, lines in kinds.items()]
        return out


def _shown(lines: list[str], first: int) -> str:
    return "; ".join(lines[:first]) + (f"; and {len(lines) - first} more" if len(lines) > first else "")


@dataclass
class AnnotationSet:
    categories: list[Category]
    images: list[ImageRecord]
    instances: list[Instance]
    image_root: Path
    report: ReadReport = field(default_factory=lambda: ReadReport("memory"))
    extra: dict[str, Any] = field(default_factory=dict)  # a COCO file's other top-level fields (info, licenses, ...)

    def image_path(self, image: ImageRecord) -> Path:
        return self.image_root / image.file_name

    def by_image(self) -> dict[int, list[Instance]]:
        groups: dict[int, list[Instance]] = defaultdict(list)
        for inst in self.instances:
            groups[inst.image_id].append(inst)
        return {img.id: groups.get(img.id, []) for img in self.images}

    def category_counts(self) -> dict[int, int]:
        counts = {c.id: 0 for c in self.categories}
        for inst in self.instances:
            counts[inst.category_id] = counts.get(inst.category_id, 0) + 1
        return counts

    def validate(self) -> None:
        """Referential integrity: unique ids, known categories and images, finite boxes. Raises DataError."""
        src = self.report.source
        _unique([c.id for c in self.categories], f"{src}: category", "id")
        _unique([i.id for i in self.images], f"{src}: image", "id")
        _unique([a.id for a in self.instances], f"{src}: annotation", "id")
        categories = {c.id for c in self.categories}
        images = {i.id: i for i in self.images}
        for inst in self.instances:
            where = f"{src}: annotation {inst.id}"
            if inst.image_id not in images:
                raise DataError(f"{where}: refers to image id {inst.image_id}, which is not in the images")
            if inst.category_id not in categories:
                raise DataError(f"{where} ({images[inst.image_id].file_name}): unknown category id {inst.category_id}")
            if len(inst.bbox) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in inst.bbox):
                raise DataError(f"{where} ({images[inst.image_id].file_name}): box {list(inst.bbox)} is not 4 finite numbers")


def unkept_fields(aset: AnnotationSet, fmt: str) -> list[str]:
    """Lost lines for the fields a COCO file held beyond the model's (the `extra` of the set and of its
    records), for a target format with no place for them: one line per kind of record, naming each field
    and how many records held it. The COCO writer writes them back."""
    out = []
    if aset.extra:
        out.append(f"top-level fields {_field_list({k: 1 for k in aset.extra}, with_counts=False)} not written "
                   f"({fmt} has no place for them)")
    kinds: tuple[tuple[str, list[Any]], ...] = (("image", aset.images), ("annotation", aset.instances),
                                                 ("category", aset.categories))
    for what, records in kinds:
        counts: dict[str, int] = defaultdict(int)
        holding = 0
        for record in records:
            holding += bool(record.extra)
            for key in record.extra:
                counts[key] += 1
        if holding:
            out.append(f"{holding} {what}(s) with fields {fmt} has no place for, not written: {_field_list(counts)}")
    return out


def _field_list(counts: dict[str, int], with_counts: bool = True, shown: int = 8) -> str:
    """`name (records), ...` for the first `shown` fields; names come from a file, so they are escaped and cut."""
    names = list(counts)
    parts = [printable(k, 40) + (f" ({counts[k]})" if with_counts else "") for k in names[:shown]]
    if len(names) > shown:
        parts.append(f"and {len(names) - shown} more")
    return ", ".join(parts)


def check_text_names(aset: AnnotationSet, fmt: str) -> None:
    """Before a writer writes: every image file name can be written as text. A file name that is not valid
    UTF-8 (Linux allows any bytes; Python reads them as lone surrogates) reads and trains fine, but no JSON,
    XML or YAML file can hold it, so writing stops here, naming the image."""
    for img in aset.images:
        try:
            img.file_name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{aset.report.source}: image {img.id}: file name {img.file_name!r} is not valid UTF-8, "
                            f"which a {fmt} file cannot hold; rename the file") from None


def _unique(ids: list[int], what: str, key: str) -> None:
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise DataError(f"{what} {key} {i} is used twice")
        seen.add(i)


def sanitize_boxes(aset: AnnotationSet) -> AnnotationSet:
    """Clip boxes to their image (counted) and drop boxes of zero area after clipping (counted and named).

    Crowd regions are clipped but never dropped for area: they only ever suppress false positives.
    """
    images = {i.id: i for i in aset.images}
    kept = []
    for inst in aset.instances:
        img = images[inst.image_id]
        x1, y1, x2, y2 = inst.xyxy
        cx1, cy1 = min(max(x1, 0.0), img.width), min(max(y1, 0.0), img.height)
        cx2, cy2 = min(max(x2, 0.0), img.width), min(max(y2, 0.0), img.height)
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            aset.report.clipped += 1
            inst.bbox = (cx1, cy1, cx2 - cx1, cy2 - cy1)
        if (cx2 - cx1 <= 0 or cy2 - cy1 <= 0) and not inst.iscrowd:
            aset.report.dropped.append(f"{img.file_name}: annotation {inst.id} box {[x1, y1, x2 - x1, y2 - y1]} has zero area")
            continue
        kept.append(inst)
    aset.instances = kept
    return aset


# Categories a model head gets a class for although no training annotation uses them (kept, so that a class the
# dataset names but has no examples of yet keeps its id): at most this many. Every class costs the head weights
# (Faster R-CNN: 5 x 1024 floats); a file declaring a million categories would make a 20 GB head.
MAX_UNUSED_CATEGORIES = 10_000


@dataclass(frozen=True)
class LabelMap:
    """Dataset category ids <-> contiguous model labels. Label 0 is background (torchvision detection
    heads reserve it); category `category_ids[i]` is model label `i + 1`."""

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_set(cls, aset: AnnotationSet) -> LabelMap:
        """Every category, in id order, except supercategory-only entries: a category with no annotations
        whose name is the supercategory of other categories (Roboflow exports write one, often at id 0)."""
        counts = aset.category_counts()
        parents = {c.supercategory for c in aset.categories if c.supercategory and c.supercategory != c.name}
        cats = sorted((c for c in aset.categories if counts.get(c.id, 0) or c.name not in parents), key=lambda c: c.id)
        if not cats:
            raise DataError(f"{aset.report.source}: no categories")
        unused = sum(1 for c in cats if not counts.get(c.id, 0))
        if unused > MAX_UNUSED_CATEGORIES:
            raise DataError(f"{aset.report.source}: {len(cats)} categories, {unused} of them without a single "
                            f"annotation: a model head is not built for more than {MAX_UNUSED_CATEGORIES} classes "
                            "without annotations (detection: name the classes to train in data.classes)")
        return cls(tuple(c.id for c in cats), tuple(c.name for c in cats))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def label(self, category_id: int) -> int:
        return self.category_ids.index(category_id) + 1

    def category(self, label: int) -> int:
        return self.category_ids[label - 1]

    def name(self, label: int) -> str:
        return self.names[label - 1]

    def to_dict(self) -> dict[str, list]:
        return {"category_ids": list(self.category_ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> LabelMap:
        return cls(tuple(int(i) for i in d["category_ids"]), tuple(str(n) for n in d["names"]))
