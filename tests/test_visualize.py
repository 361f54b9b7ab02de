"""Boxes drawn on images, label tags kept inside the picture, class colours, image grids and atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontl.visualize import class_color, draw_boxes, image_grid, save_png


def _tag_bbox(out: Image.Image, color: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1 inclusive) of every pixel painted in `color`: box outline plus tag."""
    ys, xs = np.nonzero(np.all(np.asarray(out) == color, axis=-1))
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_box_edges_get_class_colour_and_interior_stays_black() -> None:
    black = np.zeros((48, 64, 3), np.uint8)
    out = draw_boxes(black, [(10, 20, 50, 40)], ["WBC"], color_keys=[3], line_width=1)
    px = np.asarray(out)
    assert out.size == (64, 48) and out.mode == "RGB"
    color = class_color(3)
    assert tuple(px[40, 30]) == color  # bottom edge
    assert tuple(px[30, 10]) == color  # left edge
    assert tuple(px[30, 50]) == color  # right edge
    assert tuple(px[30, 30]) == (0, 0, 0)  # interior centre
    assert tuple(px[5, 60]) == (0, 0, 0)  # far from the box
    assert black.max() == 0  # the input was not drawn on


def test_label_hash_colour_is_stable_and_default_line_width() -> None:
    black = Image.new("RGB", (400, 400))
    a = draw_boxes(black, np.array([[100.0, 200.0, 300.0, 350.0]]), ["RBC"])
    b = draw_boxes(black, np.array([[100.0, 200.0, 300.0, 350.0]]), ["RBC"])
    assert np.array_equal(np.asarray(a), np.asarray(b))
    px = np.asarray(a)
    edge = tuple(px[350, 200])
    assert edge != (0, 0, 0)
    # min(400, 400) / 200 = 2 pixels wide, drawn inward from the box edge
    assert tuple(px[349, 200]) == edge and tuple(px[348, 200]) == (0, 0, 0)
    assert black.getextrema() == ((0, 0), (0, 0), (0, 0))


@pytest.mark.parametrize("box", [(5, 0, 30, 20), (40, 15, 64, 40), (50, 0, 80, 10), (-10, -10, 20, 20)])
def test_tag_stays_inside_image(box: tuple[int, int, int, int]) -> None:
    out = draw_boxes(np.zeros((48, 64), np.uint8), [box], ["Platelet"], scores=[0.93], color_keys=[0])
    x0, y0, x1, y1 = _tag_bbox(out, class_color(0))
    assert 0 <= x0 and 0 <= y0 and x1 <= 63 and y1 <= 47
    # The tag is wider than it is tall: a coloured run at least as wide as the text at some row near the top.
    rows = np.all(np.asarray(out) == class_color(0), axis=-1)
    assert rows[: 20].sum(axis=1).max() >= 30


def test_tag_goes_inside_box_at_top_edge_and_above_it_otherwise() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    top = np.all(np.asarray(draw_boxes(img, [(10, 0, 90, 80)], ["WBC"], color_keys=[1])) == class_color(1), axis=-1)
    # The tag's padding row just under the top edge is solid from the box's left side for the text width.
    assert top[1, 10:30].all() and not top[1, 60:80].any()
    mid = np.all(np.asarray(draw_boxes(img, [(10, 50, 90, 80)], ["WBC"], color_keys=[1])) == class_color(1), axis=-1)
    assert mid[49, 10:30].all() and mid[40:50, 10].all()  # tag sits on the box, above it
    assert not mid[51:60, 11:40].any()  # the box's inside stays clear


def test_zero_boxes_and_torch_style_input() -> None:
    img = np.full((40, 40, 3), 7, np.uint8)
    out = draw_boxes(img, np.zeros((0, 4)), [])
    assert np.array_equal(np.asarray(out), img)
    torch = pytest.importorskip("torch")
    out = draw_boxes(img, torch.tensor([[10.0, 20.0, 30.0, 30.0]]), ["x"], color_keys=[2], line_width=1)
    assert tuple(np.asarray(out)[30, 20]) == class_color(2)


def test_wrong_lengths_and_shapes_raise() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError):
        draw_boxes(img, [(0, 0, 4, 4)], [])
    with pytest.raises(ValueError):
        draw_boxes(img, [(0, 0, 4)], ["a"])
    with pytest.raises(ValueError):
        draw_boxes(np.zeros((8, 8, 3), np.float32), [], [])


def test_class_color_stable_and_distinct() -> None:
    first = [class_color(i) for i in range(20)]
    assert len(set(first)) == 20
    assert first == [class_color(i) for i in range(20)]
    for c in first + [class_color(i) for i in (20, 57, 1000)]:
        assert len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
        assert max(c) - min(c) >= 50  # saturated, not grey
    assert class_color(57) == class_color(57) and class_color(57) != class_color(58)


SOLIDS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
SIZES = [(10, 10), (100, 30), (20, 80), (64, 64), (16, 200)]


@pytest.mark.parametrize("titles", [None, ["red", "green", "blue", "yellow", "a very long title indeed"]])
def test_image_grid_layout_and_cell_contents(titles: list[str] | None) -> None:
    images = [Image.new("RGB", s, c) for s, c in zip(SIZES, SOLIDS)]
    grid = image_grid(images, columns=3, cell_size=64, titles=titles)
    band = (grid.height - 128) // 2
    assert grid.width == 192
    assert (band == 0) if titles is None else (band > 0 and grid.height == 128 + 2 * band)
    px = np.asarray(grid)
    for i, color in enumerate(SOLIDS):
        cx, cy = (i % 3) * 64 + 32, (i // 3) * (64 + band) + 32
        assert tuple(px[cy, cx]) == color
    assert tuple(px[(64 + band) + 32, 2 * 64 + 32]) == (255, 255, 255)  # sixth cell is empty background
    assert tuple(px[32, 64 + 1]) == SOLIDS[1]  # the 100x30 image fills the cell's width...
    assert tuple(px[2, 64 + 32]) == (255, 255, 255)  # ...and is letterboxed above and below
    assert tuple(px[32, 2 * 64 + 2]) == (255, 255, 255)  # the 20x80 image is pillarboxed
    if titles:
        assert (px[64: 64 + band, :64] < 128).any()  # title text drawn in the band under the first cell


def test_image_grid_default_columns_and_empty() -> None:
    grid = image_grid([np.zeros((5, 5, 3), np.uint8)] * 5, cell_size=10)
    assert grid.size == (30, 20)  # ceil(sqrt(5)) = 3 columns
    with pytest.raises(ValueError):
        image_grid([])


def test_save_png_is_readable_and_leaves_no_temporary(tmp_path: Path) -> None:
    img = Image.new("RGB", (12, 9), (1, 2, 3))
    path = save_png(img, tmp_path / "nested" / "dir" / "out.png")
    assert path == tmp_path / "nested" / "dir" / "out.png"
    with Image.open(path) as loaded:
        assert loaded.format == "PNG" and loaded.size == (12, 9)
        assert loaded.convert("RGB").getpixel((5, 5)) == (1, 2, 3)
    save_png(Image.new("RGB", (4, 4)), path)  # overwrites in place
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]
    with Image.open(path) as loaded:
        assert loaded.size == (4, 4)
