"""data.cache: decode every image once, before training, and keep the pixels in memory.

Small datasets are read many times (one pass per epoch, plus validation), and for PNGs or large photos the
decoding, not the model, can be what limits a GPU. The cache is filled in the main process before the
DataLoaders start, so forked workers share it (copy-on-write: the pixel buffers are never written). Where
workers are spawned instead of forked (macOS, Windows) they start with an empty cache and decode as
usual: slower, never different. Every cached image is exactly what `read_image` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from visiontl.data import images

log = logging.getLogger("visiontl")


def preload_images(files: Iterable[str | Path], max_bytes: float, threads: int = 4, progress: bool = True) -> int:
    """Decode `files` into the process's image cache until `max_bytes` of pixels are held; returns how
    many images are cached. Images beyond the budget are left to be decoded on every read."""
    from tqdm.auto import tqdm

    todo = list(dict.fromkeys(str(f) for f in files if str(f) not in images.CACHE))
    held = cached_bytes()
    full = False
    # Decoders release the GIL, so threads overlap them; results are taken in order, so which images fit
    # the budget does not depend on timing.
    with ThreadPoolExecutor(max(1, threads)) as pool:
        decoded = pool.map(images.decode_image_file, todo)
        for path, array in tqdm(zip(todo, decoded), total=len(todo), desc="cache", disable=not progress, leave=False):
            if held + array.nbytes > max_bytes:
                full = True
                break
            array.setflags(write=False)
            images.CACHE[path] = array
            held += array.nbytes
    cached = sum(1 for f in todo if f in images.CACHE)
    if full:
        log.warning("data.cache: %d of %d images fit in data.cache_max_gb (%.1f GB); the rest are decoded per read",
                    cached, len(todo), max_bytes / 1e9)
    log.info("data.cache: %d images decoded into memory (%.2f GB)", len(images.CACHE), held / 1e9)
    return cached


def clear() -> None:
    images.CACHE.clear()


def cached_bytes() -> int:
    return int(sum(a.nbytes for a in images.CACHE.values())) if images.CACHE else 0
