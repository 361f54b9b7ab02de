"""Decoding images the same way everywhere: EXIF orientation applied, any mode converted to 8-bit RGB.

JPEGs are decoded by torchvision.io (libjpeg-turbo, about 3.7x faster than going through PIL here and
bit-identical to it: tools/bench_data.py, tests/test_images_and_metrics.py); PIL reads the header first,
so the size limit below holds for them too, and anything torchvision declines goes the PIL way, which
names the file when it cannot decode it either.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visiontl.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# Refuse decompression bombs with a clear message instead of PIL's warning-then-error.
MAX_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def check_image(path: Path) -> tuple[int, int]:
    """Open the header only; return (width, height) as seen after EXIF rotation. Raises DataError."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({_reason(exc)})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# data.cache (visiontl/data/cache.py): path -> decoded pixels, filled before training, read-only.
CACHE: dict[str, np.ndarray] = {}


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB, EXIF orientation applied. Raises DataError naming the file."""
    if CACHE:
        cached = CACHE.get(str(path))
        if cached is not None:
            return cached.copy()  # augmentations may write into what they are given
    return decode_image_file(path)


def decode_image_file(path: str | Path) -> np.ndarray:
    """read_image without the cache."""
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        decoded = _read_jpeg(path)
        if decoded is not None:
            return decoded
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return _to_rgb8(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode image ({_reason(exc)})") from None


def _read_jpeg(path: Path) -> np.ndarray | None:
    """The fast path for baseline and progressive RGB / grayscale JPEGs; None sends the file the PIL way."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:  # header only: the decompression-bomb limit, and the mode
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
        decoder = _jpeg_decoder()
        if decoder is None:
            return None
        tensor = decoder(data)
    except Exception:  # noqa: BLE001 (the PIL path decides what is wrong and says it in one line)
        return None
    return tensor.permute(1, 2, 0).numpy().copy()


@functools.cache
def _jpeg_decoder() -> Callable[[bytes], Any] | None:
    """torchvision.io's decode_jpeg, or None where this torchvision no longer has it (deprecated in 0.29
    in favour of TorchCodec); then every JPEG goes the PIL way."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(data: bytes) -> Any:
        with warnings.catch_warnings():  # said on every call; we know, and fall back to PIL the day it is gone
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                               apply_exif_orientation=True)

    return decode


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: scale the full range to 8 bits rather than clipping.
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        gray = arr.round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
