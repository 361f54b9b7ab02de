"""Rotated boxes: the model's one convention, and the forms CVAT and Label Studio write.

The model: `Instance.bbox` is always the axis-aligned envelope of the rotated rectangle (what detectors train
on and what COCO scoring sees), and `Instance.attributes["rotated_box"] = [cx, cy, w, h, angle]` holds the
rectangle itself: its centre in pixels, its own width and height, and `angle` in degrees, clockwise on screen
(image coordinates, y pointing down), in (-180, 180]. A point at offset (dx, dy) from the centre of the
unrotated rectangle goes to (cx + dx cos a - dy sin a, cy + dx sin a + dy cos a). Readers set `rotated_box`
only for a non-zero angle; an unrotated box has none.

The tools' forms (both rotate clockwise on screen, by the same matrix; they differ in the pivot):

- CVAT (`<box xtl ytl xbr ybr rotation>`): the unrotated box's corners, rotated by `rotation` degrees about the
  box centre (CVAT's own `RotatedBoxesToPolygons`); CVAT keeps the angle in [0, 360).
- Label Studio (`rectanglelabels` x, y, width, height, rotation): the unrotated rectangle's top-left corner
  (x, y) and size, rotated by `rotation` degrees about that corner (the documented anchor of the results, and
  label-studio-converter's YOLO-OBB corners); percent of the image size in the JSON, pixels here.
"""

from __future__ import annotations

import math
from typing import Any

from visiontl.data.annotations import Box

__all__ = ["RotatedBox", "check_rotated_box", "corners", "envelope", "from_cvat", "from_labelstudio",
           "normalize_angle", "to_cvat", "to_labelstudio"]

RotatedBox = tuple[float, float, float, float, float]  # cx, cy, w, h (pixels), angle (degrees clockwise)

TOLERANCE = 0.01  # px: how far a box may be from its rotated box's envelope and still be that envelope


def normalize_angle(angle: float) -> float:
    """The same rotation in (-180, 180]."""
    a = math.fmod(float(angle), 360.0)
    if a <= -180.0:
        a += 360.0
    elif a > 180.0:
        a -= 360.0
    return a + 0.0  # -0.0 -> 0.0


def _cos_sin(angle: float) -> tuple[float, float]:
    """cos and sin of `angle` degrees, exact at multiples of 90 (so 90 and 180 give no 1e-16 slivers)."""
    a = normalize_angle(angle)
    exact = {0.0: (1.0, 0.0), 90.0: (0.0, 1.0), 180.0: (-1.0, 0.0), -90.0: (0.0, -1.0)}
    if a in exact:
        return exact[a]
    t = math.radians(a)
    return math.cos(t), math.sin(t)


def corners(rb: RotatedBox) -> list[tuple[float, float]]:
    """The four corners: those of the unrotated rectangle's top-left, top-right, bottom-right and bottom-left."""
    cx, cy, w, h, angle = rb
    c, s = _cos_sin(angle)
    out = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        out.append((cx + dx * c - dy * s, cy + dx * s + dy * c))
    return out


def envelope(rb: RotatedBox) -> Box:
    """The axis-aligned bounding box (x, y, w, h) of the rotated rectangle."""
    pts = corners(rb)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


def from_cvat(xtl: float, ytl: float, xbr: float, ybr: float, rotation: float) -> RotatedBox:
    """CVAT's unrotated corners and its rotation about the box centre -> the model's rotated box."""
    return ((xtl + xbr) / 2, (ytl + ybr) / 2, xbr - xtl, ybr - ytl, normalize_angle(rotation))


def to_cvat(rb: RotatedBox) -> tuple[float, float, float, float, float]:
    """(xtl, ytl, xbr, ybr, rotation) of the unrotated box, rotation in [0, 360) as CVAT keeps it."""
    cx, cy, w, h, angle = rb
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, float(angle) % 360.0


def from_labelstudio(x: float, y: float, w: float, h: float, rotation: float) -> RotatedBox:
    """Label Studio's rectangle in pixels (top-left corner, size) and its rotation about that corner -> the
    model's rotated box."""
    c, s = _cos_sin(rotation)
    return (x + w / 2 * c - h / 2 * s, y + w / 2 * s + h / 2 * c, w, h, normalize_angle(rotation))


def to_labelstudio(rb: RotatedBox) -> tuple[float, float, float, float, float]:
    """(x, y, width, height, rotation) in pixels, (x, y) the pivot corner, rotation in [0, 360) as Label Studio
    writes it."""
    cx, cy, w, h, angle = rb
    c, s = _cos_sin(angle)
    return cx - (w / 2 * c - h / 2 * s), cy - (w / 2 * s + h / 2 * c), w, h, float(angle) % 360.0


def check_rotated_box(value: Any, bbox: Box, width: int, height: int) -> tuple[RotatedBox | None, str | None]:
    """(the rotated box, None) when `value` is a valid [cx, cy, w, h, angle] whose envelope is `bbox` within
    TOLERANCE px, as read (sanitize=False) or clipped to the width x height image as readers clip; else
    (None, why not), one line."""
    if not (isinstance(value, (list, tuple)) and len(value) == 5
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        return None, f"rotated_box {_short(value)} is not [cx, cy, w, h, angle] (5 finite numbers)"
    rb: RotatedBox = tuple(float(v) for v in value)  # type: ignore[assignment]
    if rb[2] < 0 or rb[3] < 0:
        return None, f"rotated_box {_short(value)} has a negative width or height"
    ex, ey, ew, eh = envelope(rb)
    raw = (ex, ey, ex + ew, ey + eh)
    clipped = (min(max(ex, 0.0), width), min(max(ey, 0.0), height),
               min(max(ex + ew, 0.0), width), min(max(ey + eh, 0.0), height))
    bx, by, bw, bh = (float(v) for v in bbox)
    box = (bx, by, bx + bw, by + bh)
    for env in (raw, clipped):
        if all(abs(a - b) <= TOLERANCE for a, b in zip(env, box)):
            return rb, None
    shown, given = [round(v, 2) for v in (ex, ey, ew, eh)], [round(float(v), 2) for v in bbox]
    return None, f"rotated_box {_short(value)}: its envelope {shown} is not the box {given}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(list(value)) if isinstance(value, tuple) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
