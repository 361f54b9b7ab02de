"""Rotated boxes: the model's convention (`rotation.py`) against CVAT's and Label Studio's own formulas, and
CVAT -> model -> Label Studio -> model -> CVAT (and the other way) keeping the rotated rectangle."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from visiontl.data.annotations import Instance
from visiontl.data.formats.cvat import read_cvat, write_cvat
from visiontl.data.formats.labelstudio import read_labelstudio, write_labelstudio
from visiontl.data.formats.rotation import (check_rotated_box, corners, envelope, from_cvat, from_labelstudio,
                                            normalize_angle, to_cvat, to_labelstudio)

ANGLES = (0, 30, -75, 90, 180)


def _cvat_corners(xtl, ytl, xbr, ybr, rotation):
    """CVAT's own RotatedBoxesToPolygons (cvat/apps/dataset_manager/formats/transformations.py): the corners
    tl, tr, br, bl rotated by `rotation` degrees about the centre."""
    angle = math.radians(rotation)
    cx, cy = xtl + (xbr - xtl) / 2, ytl + (ybr - ytl) / 2

    def rot(x, y):
        return (cx + math.cos(angle) * (x - cx) - math.sin(angle) * (y - cy),
                cy + math.sin(angle) * (x - cx) + math.cos(angle) * (y - cy))

    return [rot(xtl, ytl), rot(xbr, ytl), rot(xbr, ybr), rot(xtl, ybr)]


def _ls_corners(x, y, w, h, rotation):
    """label-studio-converter's convert_annotation_to_yolo_obb (pixels): rotation about the top-left corner."""
    t = math.radians(rotation)
    c, s = math.cos(t), math.sin(t)
    return [(x, y), (x + w * c, y + w * s), (x + w * c - h * s, y + w * s + h * c), (x - h * s, y + h * c)]


def _close(a, b, tol):
    return all(abs(p - q) <= tol for pa, pb in zip(a, b) for p, q in zip(pa, pb))


# --- geometry ---------------------------------------------------------------------------------------------


def test_normalize_angle() -> None:
    for given, expected in [(0, 0.0), (30, 30.0), (180, 180.0), (-180, 180.0), (181, -179.0), (285, -75.0),
                            (360, 0.0), (-360, 0.0), (720.5, 0.5), (-90, -90.0), (539, 179.0), (-0.0, 0.0)]:
        got = normalize_angle(given)
        assert got == pytest.approx(expected, abs=1e-12) and -180 < got <= 180
    assert math.copysign(1.0, normalize_angle(-360)) == 1.0


def test_clockwise_on_screen_and_exact_quarter_turns() -> None:
    # A 20 x 10 rectangle at (50, 50), turned 90 degrees clockwise on screen (y down): its top-left corner goes
    # to the top-right of the upright envelope.
    rb = (50.0, 50.0, 20.0, 10.0, 90.0)
    assert corners(rb) == [(55.0, 40.0), (55.0, 60.0), (45.0, 60.0), (45.0, 40.0)]
    assert envelope(rb) == (45.0, 40.0, 10.0, 20.0)
    assert envelope((50.0, 50.0, 20.0, 10.0, 180.0)) == (40.0, 45.0, 20.0, 10.0)
    assert envelope((50.0, 50.0, 20.0, 10.0, -90.0)) == (45.0, 40.0, 10.0, 20.0)
    # 30 degrees clockwise: the right end goes down.
    tl, tr, br, bl = corners((0.0, 0.0, 2.0, 0.0, 30.0))
    assert tr[1] > 0 > tl[1]


def test_cvat_form_matches_cvats_own_formula() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        xtl, ytl = (float(v) for v in rng.uniform(-50, 500, 2))
        w, h = (float(v) for v in rng.uniform(0, 300, 2))
        rotation = float(rng.uniform(0, 360))
        rb = from_cvat(xtl, ytl, xtl + w, ytl + h, rotation)
        assert -180 < rb[4] <= 180
        assert _close(corners(rb), _cvat_corners(xtl, ytl, xtl + w, ytl + h, rotation), 1e-9)
        back = to_cvat(rb)
        assert back[:4] == pytest.approx((xtl, ytl, xtl + w, ytl + h), abs=1e-9)
        assert 0 <= back[4] < 360 and back[4] == pytest.approx(rotation, abs=1e-9)


def test_labelstudio_form_matches_the_converters_formula() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        x, y = (float(v) for v in rng.uniform(-50, 500, 2))
        w, h = (float(v) for v in rng.uniform(0, 300, 2))
        rotation = float(rng.uniform(-360, 360))
        rb = from_labelstudio(x, y, w, h, rotation)
        assert _close(corners(rb), _ls_corners(x, y, w, h, rotation), 1e-9)
        bx, by, bw, bh, brot = to_labelstudio(rb)
        assert (bx, by, bw, bh) == pytest.approx((x, y, w, h), abs=1e-9)
        assert 0 <= brot < 360 and normalize_angle(brot - rotation) == pytest.approx(0, abs=1e-9)


def test_the_two_tools_describe_one_rectangle_alike() -> None:
    """The same rectangle in both forms: CVAT's box centre pivot and Label Studio's corner pivot agree."""
    for angle in ANGLES:
        rb = (120.0, 80.0, 40.0, 16.0, float(angle))
        xtl, ytl, xbr, ybr, crot = to_cvat(rb)
        x, y, w, h, lrot = to_labelstudio(rb)
        assert _close(_cvat_corners(xtl, ytl, xbr, ybr, crot), _ls_corners(x, y, w, h, lrot), 1e-9)


def test_check_rotated_box() -> None:
    rb = (50.0, 50.0, 20.0, 10.0, 30.0)
    assert check_rotated_box(list(rb), envelope(rb), 100, 100) == (rb, None)
    x, y, w, h = envelope(rb)
    assert check_rotated_box(rb, (x + 0.009, y - 0.009, w, h), 100, 100)[0] == rb  # corners within 0.01 px
    assert check_rotated_box(rb, (x + 0.011, y, w, h), 100, 100)[0] is None
    assert check_rotated_box(rb, (0.0, 0.0, 10.0, 10.0), 100, 100) == (
        None, "rotated_box [50.0, 50.0, 20.0, 10.0, 30.0]: its envelope [38.84, 40.67, 22.32, 18.66] is not the box "
              "[0.0, 0.0, 10.0, 10.0]")
    # Readers clip the envelope to the image: the clipped envelope is still the rotated box's.
    big = (5.0, 5.0, 14.0, 2.0, 45.0)
    assert check_rotated_box(big, (0.0, 0.0, 10.0, 10.0), 10, 10)[0] == big
    for bad in ([1, 2, 3, 4], "box", [1, 2, 3, 4, float("nan")], [1, 2, True, 4, 5]):
        rb_, why = check_rotated_box(bad, (0, 0, 1, 1), 10, 10)
        assert rb_ is None and why.endswith("is not [cx, cy, w, h, angle] (5 finite numbers)")
    assert check_rotated_box([1, 1, -2, 1, 5], (0, 0, 1, 1), 10, 10)[1] == \
        "rotated_box [1, 1, -2, 1, 5] has a negative width or height"


# --- CVAT <-> model <-> Label Studio ---------------------------------------------------------------------

W, H = 400, 300


def _cvat_file(path: Path, angles) -> Path:
    boxes = "".join(
        f'<box label="car" source="manual" occluded="0" xtl="{150 + k:.2f}" ytl="{120 + k / 4:.2f}" '
        f'xbr="{230.5 + k:.2f}" ybr="{150.25 + k / 4:.2f}"' + (f' rotation="{a % 360:.2f}"' if a else "") + " />"
        for k, a in enumerate(angles))
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
                    '<meta><task><labels><label><name>car</name></label></labels></task></meta>'
                    f'<image id="0" name="a.jpg" width="{W}" height="{H}">{boxes}</image></annotations>')
    return path


def _ls_file(path: Path, angles) -> Path:
    results = [{"id": f"r{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                "original_width": W, "original_height": H, "image_rotation": 0,
                "value": {"x": 40.125 + k, "y": 45.5 + k / 3, "width": 17.3, "height": 8.9, "rotation": a,
                          "rectanglelabels": ["car"]}}
               for k, a in enumerate(angles)]
    path.write_text(json.dumps([{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": results}]}]))
    return path


def _rotated(inst: Instance) -> list[float] | None:
    return inst.attributes.get("rotated_box")


def _rotation_lost(report) -> list[str]:
    """The lost lines about rotation (the others: each tool's own image and instance fields)."""
    return [line for line in report.lost if "rotat" in line]


def _same(a: list[Instance], b: list[Instance], tol: float) -> None:
    """Same rectangles: rotated boxes within `tol` px (angles within 1e-6 degrees), boxes within 2 * tol."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (_rotated(x) is None) == (_rotated(y) is None)
        if _rotated(x) is not None:
            assert max(abs(p - q) for p, q in zip(_rotated(x)[:4], _rotated(y)[:4])) <= tol + 1e-9
            assert abs(normalize_angle(_rotated(x)[4] - _rotated(y)[4])) <= 1e-6
        assert max(abs(p - q) for p, q in zip(x.bbox, y.bbox)) <= 2 * tol + 1e-9


def test_cvat_to_labelstudio_and_back(tmp_path: Path) -> None:
    source = _cvat_file(tmp_path / "in.xml", ANGLES)
    first = read_cvat(source)
    assert [_rotated(i) and _rotated(i)[4] for i in first.instances] == [None, 30.0, -75.0, 90.0, 180.0]
    assert first.report.clipped == 0

    assert _rotation_lost(write_labelstudio(first, tmp_path / "ls.json", image_prefix="")) == []
    values = [r["value"] for r in json.loads((tmp_path / "ls.json").read_text())[0]["annotations"][0]["result"]]
    assert [v["rotation"] for v in values] == [0, 30.0, 285.0, 90.0, 180.0]
    # Label Studio's form of each rectangle has the very corners CVAT draws.
    for inst, v in zip(first.instances[1:], values[1:]):
        x, y, w, h = v["x"] / 100 * W, v["y"] / 100 * H, v["width"] / 100 * W, v["height"] / 100 * H
        assert _close(_ls_corners(x, y, w, h, v["rotation"]), corners(tuple(_rotated(inst))), 1e-9)
    middle = read_labelstudio(tmp_path / "ls.json")
    _same(first.instances, middle.instances, 1e-6)

    assert _rotation_lost(write_cvat(middle, tmp_path / "out.xml")) == []
    last = read_cvat(tmp_path / "out.xml")
    _same(first.instances, last.instances, 0.01)
    # CVAT's 2-decimal values come back as they were written.
    shapes = re.compile(r'(xtl="[^"]*" ytl="[^"]*" xbr="[^"]*" ybr="[^"]*"(?: rotation="[^"]*")?)')
    assert shapes.findall((tmp_path / "out.xml").read_text()) == shapes.findall(source.read_text())


def test_labelstudio_to_cvat_and_back(tmp_path: Path) -> None:
    source = _ls_file(tmp_path / "in.json", ANGLES)
    first = read_labelstudio(source)
    assert [_rotated(i) and _rotated(i)[4] for i in first.instances] == [None, 30.0, -75.0, 90.0, 180.0]
    assert first.report.clipped == 0

    # Label Studio -> model -> Label Studio: within 1e-6 px.
    assert _rotation_lost(write_labelstudio(first, tmp_path / "again.json")) == []
    _same(first.instances, read_labelstudio(tmp_path / "again.json", image_root=tmp_path).instances, 1e-6)
    values = json.loads((tmp_path / "again.json").read_text())[0]["annotations"][0]["result"]
    original = json.loads(source.read_text())[0]["annotations"][0]["result"]
    for got, want in zip(values, original):
        for key in ("x", "y", "width", "height"):
            assert got["value"][key] == pytest.approx(want["value"][key], abs=1e-9)
        assert normalize_angle(got["value"]["rotation"] - want["value"]["rotation"]) == pytest.approx(0, abs=1e-9)

    # -> CVAT (2 decimals) -> model: within 0.01 px; the rectangle CVAT draws is Label Studio's.
    assert _rotation_lost(write_cvat(first, tmp_path / "out.xml")) == []
    middle = read_cvat(tmp_path / "out.xml")
    _same(first.instances, middle.instances, 0.01)
    for inst, r in zip(middle.instances[1:], original[1:]):
        v = r["value"]
        ls = _ls_corners(v["x"] / 100 * W, v["y"] / 100 * H, v["width"] / 100 * W, v["height"] / 100 * H,
                         v["rotation"])
        assert _close(corners(tuple(_rotated(inst))), ls, 0.015)  # corners: within 0.01 px * sqrt(2)

    # -> Label Studio -> model: what CVAT held, within 1e-6 px.
    assert _rotation_lost(write_labelstudio(middle, tmp_path / "last.json")) == []
    _same(middle.instances, read_labelstudio(tmp_path / "last.json", image_root=tmp_path).instances, 1e-6)
