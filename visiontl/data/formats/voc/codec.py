"""VOC's segmentation PNGs: the devkit palette, decoding a SegmentationObject PNG into each object's mask
(a full-image COCO RLE) and encoding index images as 8-bit palette PNGs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visiontl.data import rle
from visiontl.data.formats.common import note_input
from visiontl.data.images import DECODE_ERRORS, open_image
from visiontl.errors import DataError

MAX_INDEX = 254  # VOC segmentation PNGs are 8-bit: 0 background, 255 void
VOID = 255


def object_masks(png: Path, xml_path: Path, width: int, height: int, count: int,
                  unpaired: list[str]) -> dict[int, tuple[dict[str, Any], int]]:
    """Object position in the XML (1-based) -> its mask as a full-image COCO RLE and its pixel count (the
    object's area), for the objects that have pixels in the SegmentationObject PNG (0 background, 255 void).
    A PNG with more objects than its XML
    (some exporters list only the boxed objects) cannot be paired: its masks are left out, and said so."""
    index = _png_indices(png)
    h, w = index.shape
    if (w, h) != (width, height):
        raise DataError(f"{png}: {w}x{h} pixels, but {xml_path} gives the image as {width}x{height}")
    present = [int(v) for v in np.unique(index) if v not in (0, VOID)]
    if present and present[-1] > count:
        unpaired.append(f"{png}: object index {present[-1]}, but {xml_path.name} has {count} object(s); the masks "
                        "of this image are not read (an object's index is its position in the XML)")
        return {}
    out = {}
    for k in present:
        binary = index == k
        out[k] = rle.encode(binary), int(binary.sum())
    return out


def _png_indices(png: Path) -> np.ndarray:
    """HxW uint8 object indices of a SegmentationObject PNG: 8-bit indexed (P) or grey (L) as they are,
    RGB matched against the VOC colours."""
    note_input(png)
    try:
        with open_image(png) as im:
            mode = im.mode
            if mode in ("P", "L"):
                return np.asarray(im, dtype=np.uint8)
            if mode not in ("RGB", "RGBA"):
                raise DataError(f"{png}: image mode {mode}; a SegmentationObject PNG holds 8-bit object indices "
                                "(palette or grey) or the VOC colours (RGB)")
            rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    except DECODE_ERRORS as exc:
        text = str(exc).strip().splitlines()
        raise DataError(f"{png}: cannot decode ({text[0] if text else type(exc).__name__})") from None
    colours = np.array(PALETTE, dtype=np.int64).reshape(256, 3)
    keys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]  # 256 distinct colours
    order = np.argsort(keys)
    pix = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(keys[order], pix), 0, 255)
    unknown = keys[order][pos] != pix
    if unknown.any():
        y, x = (int(v[0]) for v in np.nonzero(unknown))
        raise DataError(f"{png}: colour {rgb[y, x].tolist()} at x={x}, y={y} is not a VOC palette colour")
    return order[pos].astype(np.uint8)


def _voc_palette() -> list[int]:
    """The VOC devkit colour map: the bits of the index spread over r, g, b from the high bit down."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


PALETTE = _voc_palette()


def palette_png(indices: np.ndarray) -> bytes:
    h, w = indices.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(indices, dtype=np.uint8).tobytes())
    im.putpalette(PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()

