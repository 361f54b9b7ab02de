"""Decoding images the same way everywhere: EXIF orientation applied, any mode converted to 8-bit RGB.

Every image is opened through `open_image`, which refuses a header claiming more than `MAX_PIXELS` before a
single pixel is decoded (a decompression bomb: a few bytes of PNG can claim 400 million pixels, and Pillow
only warns below twice its own limit). Inference asks for less: `max_pixels`, its pixel budget
(`data.max_pixels`, `--max-pixels`), is checked at the same place, on the header. The EXIF orientation is read without decoding the pixels, so a
header check stays a header check (Pillow's `getexif` decodes a whole PNG looking for an eXIf chunk).

JPEGs are decoded by torchvision.io (libjpeg-turbo, about 3.7x faster than going through PIL here and
bit-identical to it: tools/bench_data.py, tests/test_images_and_metrics.py) once `open_image` has read the
header; anything torchvision declines goes the PIL way, which names the file when it cannot decode it either.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import struct
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from visiontl.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

MAX_SIDE = 16384
MAX_PIXELS = MAX_SIDE * MAX_SIDE  # 268M pixels: far above any photo or scan visiontl trains on
# Pillow's own check stays as a backstop (it errors above twice this, and only warns in between).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# What a broken or hostile file makes Pillow raise while opening or decoding it.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error,
                 Image.DecompressionBombError)

_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the transpose that shows the image upright


# Images that exist only inside an annotation file (labelme's base64 `imageData`, no image file), by the
# normalised absolute path the file would have. Where that file is missing, every function below opens the
# embedded bytes instead, so data check, the image cache and training read the same pixels. Filled by the
# reader that finds such an image; forked DataLoader workers inherit it.
EMBEDDED: dict[str, str] = {}


def embed(path: str | Path, image_data: str) -> None:
    """Register the base64 image `image_data` as the image at `path` (which does not exist)."""
    EMBEDDED[_key(path)] = image_data


def _key(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _source(path: str | Path) -> str | Path | IO[bytes]:
    """What to open for `path`: the file, or the embedded image registered for it when there is no file."""
    if EMBEDDED:
        data = EMBEDDED.get(_key(path))
        if data is not None and not os.path.isfile(path):
            return io.BytesIO(base64.b64decode(data, validate=False))
    return path


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


@contextmanager
def open_image(source: str | Path | IO[bytes], name: str | Path | None = None,
               max_pixels: int | None = None) -> Iterator[Image.Image]:
    """The opened image (header read, nothing decoded). A header claiming more than MAX_PIXELS, or than
    `max_pixels` (a pixel budget) where given, is refused with a DataError calling the file `name` (default:
    `source`); a file that is missing or not an image raises what Pillow raises (FileNotFoundError, one of
    DECODE_ERRORS), for the caller to word."""
    name = source if name is None else name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # sizes are checked below
            im = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name}: refused as a possible decompression bomb ({_reason(exc)})") from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise DataError(f"{name}: {w}x{h} pixels, more than visiontl reads ({MAX_SIDE}x{MAX_SIDE}); refused as a "
                            "possible decompression bomb")
        if max_pixels is not None and w * h > max_pixels:
            raise DataError(f"{name}: {w}x{h} pixels ({w * h / 1e6:.1f} megapixels), over the pixel budget of "
                            f"{max_pixels:,} ({max_pixels / 1e6:g} megapixels; --max-pixels); refused before decoding")
        yield im


def orientation(im: Image.Image) -> int:
    """The EXIF orientation (1: upright) of an opened image, read without decoding its pixels."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1  # an eXIf chunk after the pixel data: Pillow would decode everything to find it
    try:
        value = im.getexif().get(0x0112, 1)
    except DECODE_ERRORS:
        return 1  # unreadable EXIF: shown as stored, as viewers do
    return value if value in _TRANSPOSE else 1


def upright(im: Image.Image, turn: int) -> Image.Image:
    """`im` (decoded) turned as EXIF orientation `turn` says (ImageOps.exif_transpose's rule)."""
    return im.transpose(_TRANSPOSE[turn]) if turn in _TRANSPOSE else im


def check_image(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """Open the header only; return (width, height) as seen after EXIF rotation. Raises DataError (also for
    more pixels than `max_pixels`, where given)."""
    try:
        with open_image(_source(path), path, max_pixels=max_pixels) as im:
            w, h = im.size
            turn = orientation(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except DECODE_ERRORS as exc:
        raise DataError(f"{path}: not a readable image ({_reason(exc)})") from None
    return (h, w) if turn in (5, 6, 7, 8) else (w, h)


def decode_problem(path: str | Path) -> str | None:
    """Why the pixels of `path` cannot be decoded (truncated, corrupt), or None when every byte decodes.
    JPEGs are decoded at 1/8 scale: libjpeg still reads every entropy-coded byte, in a fraction of the time."""
    try:
        with open_image(_source(path), path) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except DECODE_ERRORS as exc:
        return _reason(exc)
    return None


def verify_image(path: str | Path) -> tuple[int, int]:
    """check_image, then decode every byte, so a truncated or corrupt file fails here and not in the middle
    of training. Raises DataError."""
    size = check_image(path)
    reason = decode_problem(path)
    if reason is not None:
        raise DataError(f"{path}: cannot decode image ({reason})")
    return size


def verify_images(paths: list[Path], workers: int | None = None) -> list[tuple[int, int]]:
    """verify_image of every path (in threads: Pillow decodes without the GIL); the first failure in list
    order is raised, so the message does not depend on timing."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 8:
        return [verify_image(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(verify_image, paths))


def image_problems(paths: list[Path], workers: int | None = None) -> list[tuple[int, int] | str]:
    """verify_image of every path, collecting: each path's (width, height), or the one-line reason it fails."""

    def one(path: Path) -> tuple[int, int] | str:
        try:
            return verify_image(path)
        except DataError as exc:
            return str(exc)

    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 8:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))


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
        with open_image(_source(path), path) as im:
            turn = orientation(im)
            im.load()
            return _to_rgb8(upright(im, turn))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except DECODE_ERRORS as exc:
        raise DataError(f"{path}: cannot decode image ({_reason(exc)})") from None


def _read_jpeg(path: Path) -> np.ndarray | None:
    """The fast path for baseline and progressive RGB / grayscale JPEGs; None sends the file the PIL way."""
    try:
        data = path.read_bytes()
        with open_image(io.BytesIO(data), name=path) as im:  # header only: the size limit, and the mode
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
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.zeros_like(arr) if not hi > lo else (np.nan_to_num(arr, nan=lo) - lo) * (255.0 / (hi - lo))
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
