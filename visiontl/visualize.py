"""Pictures to look at instead of numbers: boxes drawn on images, and grids of images saved as one PNG.

Pillow only. Images come in as PIL images or numpy arrays (HxWx3 uint8 RGB, or HxW grayscale); boxes
are pixel xyxy, as a list of 4-tuples, a numpy array or a torch tensor of shape [N, 4].
"""

from __future__ import annotations

import colorsys
import math
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from visiontl.atomic import atomic_write

# Saturated colours that stay distinguishable from each other on photos and on black or white.
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 99, 71),
]


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable, saturated RGB colour per class index: a fixed palette, then a hash-based hue."""
    if 0 <= index < len(_PALETTE):
        return _PALETTE[index]
    # crc32 rather than hash(): Python salts hash() per process, and colours must not change between runs.
    hue = (zlib.crc32(str(index).encode()) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def _to_rgb(image: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")  # convert always returns a new image, so callers never see edits
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected an HxWx3 or HxW uint8 array, got shape {arr.shape} dtype {arr.dtype}")
    return Image.fromarray(arr).convert("RGB")


def _as_boxes(boxes) -> np.ndarray:
    if hasattr(boxes, "detach"):  # a torch tensor, possibly on the GPU or requiring grad
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {arr.shape}")
    return arr


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def draw_boxes(image, boxes_xyxy, labels: list[str], scores: list[float] | None = None,
               color_keys: list[int] | None = None, line_width: int | None = None) -> Image.Image:
    """Return an RGB copy with each box outlined in its class colour and a label tag at its top-left."""
    out = _to_rgb(image)
    boxes = _as_boxes(boxes_xyxy)
    n = len(boxes)
    for name, seq in (("labels", labels), ("scores", scores), ("color_keys", color_keys)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} boxes")
    w, h = out.size
    width = line_width if line_width is not None else max(1, round(min(w, h) / 200))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
            continue  # wholly outside: nothing of it can be shown
        x0, x1 = max(0.0, x0), min(w - 1.0, x1)
        y0, y1 = max(0.0, y0), min(h - 1.0, y1)
        key = color_keys[i] if color_keys is not None else zlib.crc32(labels[i].encode())
        color = class_color(key)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)

        text = labels[i] if scores is None else f"{labels[i]} {float(scores[i]):.2f}"
        tw, th = _text_size(draw, text, font)
        tag_w, tag_h = tw + 4, th + 4
        tx = min(max(0, int(x0)), max(0, w - tag_w))
        # Above the box when there is room; otherwise inside it, so the tag never leaves the picture.
        ty = int(y0) - tag_h if y0 - tag_h >= 0 else int(y0)
        ty = min(ty, max(0, h - tag_h))
        draw.rectangle((tx, ty, tx + tag_w - 1, ty + tag_h - 1), fill=color)
        # Dark text on light colours, white on dark ones (ITU-R BT.601 luma).
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((tx + 2 - left, ty + 2 - top), text, fill=ink, font=font)
    return out


def image_grid(images: list, columns: int | None = None, cell_size: int = 256,
               titles: list[str] | None = None, background=(255, 255, 255)) -> Image.Image:
    """Tile images into one picture, each scaled to fit a cell_size square and centred; titles go under."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    n = len(images)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = _text_size(probe, "Ag", font)[1] + 6 if titles else 0
    grid = Image.new("RGB", (columns * cell_size, rows * (cell_size + title_h)), background)
    draw = ImageDraw.Draw(grid)
    ink = (0, 0, 0) if sum(background) > 382 else (255, 255, 255)
    for i, img in enumerate(images):
        img = _to_rgb(img)
        scale = min(cell_size / img.width, cell_size / img.height)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
        cx, cy = (i % columns) * cell_size, (i // columns) * (cell_size + title_h)
        grid.paste(img, (cx + (cell_size - img.width) // 2, cy + (cell_size - img.height) // 2))
        if titles:
            text = titles[i]
            # Shorten long titles so they do not run into the neighbouring cell.
            while len(text) > 1 and draw.textlength(text, font=font) > cell_size - 4:
                text = text[:-4] + "..." if len(text) > 4 else text[:-1]
            tw = draw.textlength(text, font=font)
            draw.text((cx + (cell_size - tw) / 2, cy + cell_size + 2), text, fill=ink, font=font)
    return grid


def save_png(image: Image.Image, path: Path) -> Path:
    """Write a PNG atomically (`visiontl.atomic`: a temporary beside it, then renamed); create parent folders."""
    path = Path(path)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
    return path


# -- example pictures for run reports: panels side by side, with titles, captions and legends ---------------

PANEL_LONGEST = 480  # px: the longer side of a panel is at most this
PANEL_SMALLEST = 240  # px: smaller images are enlarged by a whole factor towards this


def panel_scale(width: int, height: int, longest: int = PANEL_LONGEST, smallest: int = PANEL_SMALLEST) -> float:
    """Shrink so the longer side is at most `longest`; enlarge a small image by a whole factor until its
    longer side is about `smallest`, since a 32 px image would be hidden under its own labels."""
    side = max(width, height)
    if side > longest:
        return longest / side
    return float(max(1, smallest // side))


def resize_panel(image, scale: float) -> Image.Image:
    """An RGB copy scaled by `scale`: nearest neighbour when enlarging (pixels stay pixels), Lanczos when shrinking."""
    out = _to_rgb(image)
    if scale == 1:
        return out
    size = (max(1, round(out.width * scale)), max(1, round(out.height * scale)))
    return out.resize(size, Image.NEAREST if scale > 1 else Image.LANCZOS)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map resized to (width, height) by nearest neighbour: ids are never blended."""
    labels = np.asarray(labels)
    if (labels.shape[1], labels.shape[0]) == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.NEAREST)).astype(labels.dtype)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45, ignore_index: int | None = None) -> np.ndarray:
    """HxWx3 uint8: each pixel blended with its class colour (`class_color`); `ignore_index` pixels untouched."""
    image = np.asarray(image)
    labels = np.asarray(labels).astype(np.int64)
    valid = labels >= 0 if ignore_index is None else (labels != ignore_index) & (labels >= 0)
    top = int(labels[valid].max()) + 1 if valid.any() else 0
    colours = np.array([class_color(i) for i in range(top)] or [(0, 0, 0)], dtype=np.float64)
    blended = (1 - alpha) * image + alpha * colours[np.where(valid, labels, 0)]
    return np.where(valid[..., None], blended, image).astype(np.uint8)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text` cut from the left ("...tail") to fit `width` pixels: the end of a file name tells most."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def text_strip(lines: list[str], width: int, background=(255, 255, 255), ink=(0, 0, 0)) -> Image.Image:
    """A strip `width` pixels wide holding `lines` of text, each cut to fit."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_size(probe, "Ag", font)[1] + 4
    strip = Image.new("RGB", (width, line_h * len(lines) + 4), background)
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((3, 2 + i * line_h), _fit_text(draw, line, font, width - 6), fill=ink, font=font)
    return strip


def stack(images: list[Image.Image], background=(255, 255, 255)) -> Image.Image:
    """Images one below the other, left-aligned, on a background as wide as the widest."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), background)
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height
    return out


def side_by_side(panels: list[Image.Image], titles: list[str], gap: int = 8, background=(255, 255, 255)) -> Image.Image:
    """Panels in a row, each with its title above it, tops aligned, `gap` pixels apart."""
    if len(titles) != len(panels):
        raise ValueError(f"{len(titles)} titles for {len(panels)} panels")
    columns = [stack([text_strip([t], p.width, background), p], background) for p, t in zip(panels, titles)]
    out = Image.new("RGB", (sum(c.width for c in columns) + gap * (len(columns) - 1), max(c.height for c in columns)),
                    background)
    x = 0
    for c in columns:
        out.paste(c, (x, 0))
        x += c.width + gap
    return out


def color_legend(entries: list[tuple[str, tuple[int, int, int]]], width: int, background=(255, 255, 255)) -> Image.Image:
    """Colour swatches with their names, wrapped into rows `width` pixels wide."""
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_h = _text_size(probe, "Ag", font)[1] + 8
    swatch = row_h - 6
    placed, x, y = [], 3, 3
    for name, colour in entries:
        item_w = swatch + 4 + round(probe.textlength(name, font=font)) + 12
        if x > 3 and x + item_w > width:
            x, y = 3, y + row_h
        placed.append((x, y, name, colour))
        x += item_w
    out = Image.new("RGB", (width, y + row_h + 3), background)
    draw = ImageDraw.Draw(out)
    for x, y, name, colour in placed:
        draw.rectangle((x, y + 3, x + swatch, y + 3 + swatch), fill=colour, outline=(0, 0, 0))
        draw.text((x + swatch + 4, y + 2), name, fill=(0, 0, 0), font=font)
    return out


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG (for atomic writers that take bytes)."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
