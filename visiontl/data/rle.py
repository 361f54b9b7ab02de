"""COCO segmentations and masks: the one codec every reader, writer, task and evaluation goes through.

A COCO segmentation is either polygons, `[[x1, y1, x2, y2, ...], ...]` in pixel coordinates (the parts of one
instance), or a run-length encoding (RLE) `{"size": [height, width], "counts": ...}`: the mask's pixels in
column-major (Fortran) order as alternating runs, background first. `counts` is a list of run lengths
(uncompressed, as COCO files hold crowd regions) or pycocotools' compressed string (6 bits a character).

- `encode(mask)`: an HxW mask -> a JSON-ready compressed RLE, `{"size": [h, w], "counts": str}`. pycocotools
  hands counts back as bytes, which JSON cannot hold; every RLE visiontl keeps or writes (annotations,
  predictions, files) has them as a str, so the same mask is the same text whoever encoded it.
- `as_json(rle)`: an RLE from pycocotools (counts as bytes) as a JSON-ready one.
- `decode(seg, height, width)`: polygons (their union) or an RLE of either kind -> HxW bool mask. An RLE is
  checked first (`rle_problem`; `RLEError` says what is wrong), since pycocotools decodes whatever it is given.
- `area(seg, height, width)`, `box(seg, height, width)`: pixel count, and `(x, y, w, h)` of the pixels' tight box
  (zeros for an empty mask), as pycocotools computes them.
- `to_pycocotools(seg, height, width)`: the compressed RLE (counts as bytes) that pycocotools' area, toBbox,
  iou, merge and decode take. Like `area` and `box` it trusts `seg`: an RLE from a file is checked first
  (`rle_problem` here, or the evaluation's batch check in visiontl/evaluation/coco_masks.py).
- `rle_problem(seg, height, width)`, `compressed_runs(counts)`: that check, with no pycocotools involved.

This is a module of its own, not part of visiontl/data/masks.py (semantic label maps and their files): the
COCO encoding is shared by the format packages, the detection task, pre-annotation and the evaluation engines,
and needs nothing but numpy and pycocotools. Label Studio's brush RLE and CVAT's mask RLE are those tools' own
encodings and stay in their packages' codec.py.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

class RLEError(ValueError):
    """An RLE that cannot be the mask of the image it is given for (`rle_problem`'s reason)."""


def encode(mask: np.ndarray) -> dict[str, Any]:
    """The JSON-ready compressed COCO RLE of a 2-D mask (bool or 0/1; any memory order)."""
    from pycocotools import mask as mask_utils

    return as_json(mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8))))


def as_json(rle: dict[str, Any]) -> dict[str, Any]:
    """`{"size": [h, w], "counts": str}` of a compressed RLE whose counts may be bytes (pycocotools')."""
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes)
            else counts}


def to_pycocotools(seg: list | dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """The compressed RLE (counts as bytes) of COCO polygons (all parts in one mask; no polygon: an empty mask)
    or of an RLE with either kind of counts, taken to be height x width. Trusts `seg` (see the module
    docstring)."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        if not seg:  # pycocotools' frPyObjects fails on an empty list (IndexError)
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in seg], height, width))
    counts = seg["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode(seg: list | dict[str, Any], height: int, width: int) -> np.ndarray:
    """HxW bool mask of COCO polygons or an RLE. Raises RLEError for an RLE that `rle_problem` refuses."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, dict):
        problem = rle_problem(seg, height, width)
        if problem is not None:
            raise RLEError(problem)  # never handed to pycocotools
    rle = to_pycocotools(seg, height, width)
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def area(seg: list | dict[str, Any], height: int, width: int) -> float:
    """Pixels of the mask of COCO polygons or an RLE (pycocotools' area)."""
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(to_pycocotools(seg, height, width)))


def box(seg: list | dict[str, Any], height: int, width: int) -> tuple[float, float, float, float]:
    """(x, y, w, h) of the tight box of the mask's pixels (pycocotools' toBbox; zeros for an empty mask)."""
    from pycocotools import mask as mask_utils

    x, y, w, h = (float(v) for v in mask_utils.toBbox(to_pycocotools(seg, height, width)))
    return x, y, w, h


def rle_problem(seg: dict[str, Any], height: int, width: int) -> str | None:
    """Why a COCO RLE cannot be the mask of a height x width image, or None when it can. pycocotools decodes
    what it is given without checking it: runs adding up to less than the image leave pixels it never writes
    (whatever its memory held: a different mask each time), and a compressed string it cannot parse is read
    past its end. So every RLE is checked here, before pycocotools sees it."""
    size = seg.get("size")
    if not isinstance(size, (list, tuple)) or [v for v in size] != [height, width]:
        return f"mask size {size} differs from the image's [{height}, {width}]"
    counts = seg.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "RLE counts are not all non-negative integers"
        runs: list[int] | None = counts
    elif isinstance(counts, (str, bytes)):
        runs = compressed_runs(counts)
        if runs is None:
            return "RLE counts string is not a COCO compressed RLE"
    else:
        return "RLE counts are neither a list nor a string"
    total = sum(runs)
    if total != height * width:
        return f"RLE counts add up to {total} pixels, not {height}x{width} = {height * width}"
    return None


def compressed_runs(counts: str | bytes) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString, with every read checked),
    or None when the string is not one: a character outside '0'..'o', a number cut off, a negative run."""
    data = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
    runs: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                return None
            c = data[p] - 48  # 6 bits per character: 5 of value, 1 saying another character follows
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # the sign bit of the last character
        if len(runs) > 2:
            x += runs[-2]  # runs after the first two are stored as differences
        if x < 0:
            return None
        runs.append(x)
    return runs
