"""labelme's names and keys, and its geometry: a circle as a polygon, a mask patch placed in the image (masks
become COCO RLE, and polygons are rasterised, through visiontl.data.rle)."""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from visiontl.data.formats.common import first_line
from visiontl.data.images import DECODE_ERRORS, open_image
from visiontl.errors import DataError

LABELME_VERSION = "5.2.1"  # the first labelme with mask shapes; what the writer puts in `version`
HELD_TYPES = ("rectangle", "polygon", "circle", "oriented_rectangle", "mask")
DROPPED_TYPES = ("line", "linestrip", "point", "points")
RESERVED_LABELS = ("__ignore__", "_background_")
LABELS_FILE = "labels.txt"

SHAPE_KEYS = {"label", "points", "group_id", "shape_type", "flags", "description", "mask"}
FILE_KEYS = {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
# Instance attributes the writer turns into labelme fields (everything else becomes an extra shape key).
INSTANCE_ATTRS = {"group_id", "flags", "description", "circle", "shape_type", "labelme_parts"}
IMAGE_ATTRS = {"flags", "embedded_image", "image_data"}


def circle_vertices(radius: float) -> int:
    """Vertices of the polygon standing for a circle: the fewest keeping every chord within 1 pixel of the arc
    (labelme2coco's rule, N >= pi / arccos(1 - 1/r)), rounded up to a multiple of 4 so that the polygon
    touches the circle's leftmost, rightmost, top and bottom points; at least 16."""
    if radius <= 1:
        return 16
    n = math.pi / math.acos(1.0 - 1.0 / radius)
    return max(16, 4 * math.ceil(n / 4))


def circle_polygon(cx: float, cy: float, radius: float) -> list[float]:
    """COCO polygon [x1, y1, ...] of `circle_vertices(radius)` points on the circle, from angle 0 (the
    rightmost point) counter-clockwise in image coordinates."""
    n = circle_vertices(radius)
    out: list[float] = []
    for k in range(n):
        a = 2.0 * math.pi * k / n
        out += [cx + radius * math.cos(a), cy + radius * math.sin(a)]
    return out


def mask_patch(raw: Any, points: list[list[float]], width: int, height: int, where: str) -> tuple[np.ndarray, bool]:
    """The image-sized bool mask of a mask shape's base64 PNG patch, and whether part of it lay outside the image
    (cut off)."""
    if not isinstance(raw, str) or not raw:
        raise DataError(f"{where}: a mask shape needs 'mask', a base64 PNG")
    try:
        with open_image(io.BytesIO(base64.b64decode(raw, validate=False)), f"{where}: 'mask'") as im:
            patch = np.asarray(im) != 0
    except (binascii.Error, *DECODE_ERRORS) as exc:
        raise DataError(f"{where}: 'mask' is not a base64 image ({first_line(exc)})") from None
    if patch.ndim == 3:
        patch = patch.any(axis=2)
    # labelme puts the patch's top-left pixel at the rounded first point (its extent is the patch's own).
    x1, y1 = (int(round(v)) for v in points[0])
    ph, pw = patch.shape
    full = np.zeros((height, width), dtype=bool)
    ys, ye, xs, xe = max(y1, 0), min(y1 + ph, height), max(x1, 0), min(x1 + pw, width)
    if ys < ye and xs < xe:
        full[ys:ye, xs:xe] = patch[ys - y1:ye - y1, xs - x1:xe - x1]
    cut = (ys, ye, xs, xe) != (y1, y1 + ph, x1, x1 + pw) and bool(patch.any())
    return full, cut



def abs_path(p: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(p)))
