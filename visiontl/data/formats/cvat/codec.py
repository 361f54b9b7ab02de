"""CVAT's own encodings: its mask RLE (a box's pixels as alternating background / foreground runs), the shape
fields CVAT writes as XML attributes, and a `score` attribute's value. The COCO RLE the model holds masks in is
visiontl.data.rle's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Shape fields CVAT writes as XML attributes of the shape element; kept under these names in Instance.attributes,
# except `rotation`, which becomes attributes["rotated_box"] (the model's convention, see rotation.py).
SHAPE_FIELDS = ("occluded", "z_order", "group_id", "source", "rotation")


def cvat_rle_to_mask(counts: list[int], left: int, top: int, width: int, height: int,
                     image_height: int, image_width: int) -> tuple[np.ndarray, bool]:
    """The image-sized bool mask of a CVAT mask, and whether part of it lay outside the image (cut off).

    `counts` are run lengths over the width x height box at (left, top), row-major, alternating background and
    foreground, starting with background. Raises ValueError when they do not cover the box exactly."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise ValueError("run lengths must be non-negative integers")
    if int(runs.sum()) != width * height:
        raise ValueError(f"run lengths sum to {int(runs.sum())}, not width * height = {width * height}")
    values = (np.arange(len(runs)) % 2).astype(bool)  # background first
    box = np.repeat(values, runs).reshape(height, width)
    full = np.zeros((image_height, image_width), dtype=bool)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, image_height), min(left + width, image_width)
    inside = box[y0 - top:max(y1, y0) - top, x0 - left:max(x1, x0) - left]
    if y1 > y0 and x1 > x0:
        full[y0:y1, x0:x1] = inside
    cut = int(inside.sum()) != int(box.sum())
    return full, cut


def mask_to_cvat_rle(mask: np.ndarray) -> tuple[list[int], int, int, int, int] | None:
    """(counts, left, top, width, height) of a 2-D mask over its tight box; None for an empty mask."""
    mask = np.asarray(mask).astype(bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    flat = mask[top:top + height, left:left + width].ravel()  # row-major
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)  # CVAT's runs start with background
    return [int(r) for r in runs], left, top, width, height


def attribute_score(value: Any) -> float | None:
    """The score an attribute `score` holds: a finite number, or a text that is one; else None."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
