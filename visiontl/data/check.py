"""`visiontl data check`: every problem of an annotated dataset in one pass, one line each.

Two layers. Reading: a reader that can collect (COCO) lists every bad record and goes on; the others stop
at the first broken file, which is then the one problem reported for it. Content: on what was read, every
image is opened and decoded (missing, unreadable, truncated, size different from the annotation), and
every instance is checked (coordinates that are not finite, zero or negative size, outside the image,
unknown image or category, polygons with fewer than three points, masks of another size than the image).
Errors make the command exit 1; warnings (a box partly outside the image, which training clips; a class
without instances) are listed but do not.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from visiontl.data.annotations import AnnotationSet, Instance
from visiontl.data import SKIP_HINT
from visiontl.errors import DataError
from visiontl.text import printable


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    text: str

    def __str__(self) -> str:
        # The text names files, images and categories as the dataset spells them: escaped, one line each.
        return f"{self.severity}: {printable(self.text)}"


def check_annotations(aset: AnnotationSet, decode: bool = True, progress: bool = False) -> list[Problem]:
    """Content checks of a read set. decode=False reads image headers only (fast; misses truncation)."""
    problems: list[Problem] = []
    images = {img.id: img for img in aset.images}
    categories = {c.id for c in aset.categories}
    for key, count in Counter(img.id for img in aset.images).items():
        if count > 1:
            problems.append(Problem("error", f"{aset.report.source}: image id {key} is used {count} times"))
    for key, count in Counter(inst.id for inst in aset.instances).items():
        if count > 1:
            problems.append(Problem("error", f"{aset.report.source}: annotation id {key} is used {count} times"))

    from tqdm.auto import tqdm

    for img in tqdm(aset.images, desc="images", unit="img", disable=not progress, leave=False):
        problems += _check_image(aset.image_path(img), img.width, img.height, decode)
    for inst in aset.instances:
        img = images.get(inst.image_id)
        where = f"{aset.report.source}: annotation {inst.id}" + (f" ({img.file_name})" if img else "")
        if img is None:
            problems.append(Problem("error", f"{where}: image id {inst.image_id} is not in the images"))
            continue
        if inst.category_id not in categories:
            problems.append(Problem("error", f"{where}: category id {inst.category_id} is not in the categories"))
        problems += _check_instance(inst, img.width, img.height, where)
    used = Counter(inst.category_id for inst in aset.instances)
    for cat in aset.categories:
        if not used[cat.id]:
            problems.append(Problem("warning", f"{aset.report.source}: category {cat.id} {cat.name!r} has no instances"))
    return problems


def _check_image(path: Path, width: int, height: int, decode: bool) -> list[Problem]:
    from visiontl.data.images import check_image, decode_problem

    try:
        actual = check_image(path)
    except DataError as exc:
        return [Problem("error", str(exc))]
    out = []
    if (width, height) != actual:
        out.append(Problem("error", f"{path}: the annotation says {width}x{height}, the image is {actual[0]}x{actual[1]}"))
    reason = decode_problem(path) if decode else None  # a truncated file fails here, not at training time
    if reason is not None:
        out.append(Problem("error", f"{path}: cannot be decoded ({reason})"))
    return out


def _check_instance(inst: Instance, width: int, height: int, where: str) -> list[Problem]:
    x, y, w, h = inst.bbox
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in inst.bbox):
        return [Problem("error", f"{where}: box {list(inst.bbox)} has a coordinate that is not a finite number")]
    out = []
    if w <= 0 or h <= 0:
        out.append(Problem("error", f"{where}: box {list(inst.bbox)} has zero or negative size"))
    elif x >= width or y >= height or x + w <= 0 or y + h <= 0:
        out.append(Problem("error", f"{where}: box {list(inst.bbox)} lies outside the {width}x{height} image"))
    elif x < 0 or y < 0 or x + w > width or y + h > height:
        out.append(Problem("warning", f"{where}: box {list(inst.bbox)} crosses the border of the {width}x{height} "
                                      "image (training clips it)"))
    seg = inst.segmentation
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                out.append(Problem("error", f"{where}: polygon {k} has {len(poly) // 2 if isinstance(poly, list) else 0} "
                                            "point(s); a polygon needs at least 3"))
            elif not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
                out.append(Problem("error", f"{where}: polygon {k} has a coordinate that is not a finite number"))
    elif isinstance(seg, dict):
        from visiontl.data.rle import rle_problem

        problem = rle_problem(seg, height, width)
        if problem is not None:
            out.append(Problem("error", f"{where}: {problem}"))
    return out


def usable_images(paths: list[Path], on_bad_image: str, expected: list[tuple[int, int]] | None = None,
                  source: str = "", what: list[str] | None = None) -> tuple[list[bool], list[str]]:
    """Before training: every image decodes in full and (with `expected`, the sizes the annotations give)
    has that size, since boxes and masks are in those pixels. on_bad_image "error" raises DataError on the
    first problem in list order, naming the key that skips; "skip" returns which images pass and one line per
    image left out. `what` adds a record name per image to the size message (e.g. "image id 3")."""
    from visiontl.data.images import image_problems

    keep, left_out = [], []
    for k, (path, found) in enumerate(zip(paths, image_problems(paths))):
        problem = found if isinstance(found, str) else None
        if problem is None and expected is not None and found != expected[k]:
            record = f" ({what[k]})" if what else ""
            problem = (f"{path}: image is {found[0]}x{found[1]} but {source} says "
                       f"{expected[k][0]}x{expected[k][1]}{record}")
        if problem is not None and on_bad_image != "skip":
            raise DataError(f"{problem}; {SKIP_HINT}")
        keep.append(problem is None)
        if problem is not None:
            left_out.append(problem)
    return keep, left_out


def check_images(aset: AnnotationSet, on_bad_image: str = "error") -> tuple[AnnotationSet, list[str]]:
    """usable_images of an annotated set: the set without the images left out (and their instances), and
    one line per image left out."""
    keep, left_out = usable_images([aset.image_path(img) for img in aset.images], on_bad_image,
                                   [(img.width, img.height) for img in aset.images], str(aset.report.source),
                                   [f"image id {img.id}" for img in aset.images])
    if not left_out:
        return aset, []
    kept = {img.id for img, ok in zip(aset.images, keep) if ok}
    return AnnotationSet(aset.categories, [i for i in aset.images if i.id in kept],
                         [a for a in aset.instances if a.image_id in kept], aset.image_root, aset.report,
                         extra=aset.extra), left_out


def summarize(problems: list[Problem]) -> str:
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    return f"{errors} error(s), {warnings} warning(s)"
