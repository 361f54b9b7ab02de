"""data.cache: decode every image once, before training, and keep the pixels in memory.

Small datasets are read many times (one pass per epoch, plus validation), and for PNGs or large photos the
decoding, not the model, can be what limits a GPU. The cache is filled in the main process before the
DataLoaders start, so forked workers share it (copy-on-write: the pixel buffers are never written). Where
workers are spawned instead of forked (macOS, Windows) they start with an empty cache and decode as
usual: slower, never different. Every cached image is exactly what `read_image` returns.

`data.cache: auto` (the default) caches when the whole decoded set fits the budget: data.cache_max_gb, and
at most AUTO_MEMORY_SHARE of the memory available when training starts, shared by the training processes of
the machine (each holds its own copy). It was measured to help where decoding limits the pipeline (CamVid's
PNGs: 1.58x the img/s of decoding per read, docs/benchmarks.md) and to cost nothing elsewhere. The cache is
emptied when training ends, so a notebook that trains again does not keep the old pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from visiontl.data import images

log = logging.getLogger("visiontl")

AUTO_MEMORY_SHARE = 0.25  # data.cache auto: the share of available memory the cache may take
HEADER_SAMPLE = 64  # data.cache auto: image headers read to estimate the decoded size of a set


def cache_budget(setting: bool | str, files: list[str], max_gb: float, processes: int) -> float | None:
    """The bytes to preload `files` with under `setting` (data.cache), or None to decode per read. `processes`:
    the training processes of this machine (each caches its own copy). auto says when the set does not fit."""
    if setting is False:
        return None
    budget = max_gb * 1e9
    if setting is True:
        return budget
    available = available_memory()
    if available is not None:
        budget = min(budget, AUTO_MEMORY_SHARE * available)
    budget /= max(1, processes)
    needed = estimated_bytes(files)
    if needed > budget:
        log.info("data.cache auto: %d images, about %.2f GB decoded, over the budget of %.2f GB; decoded per read "
                 "(data.cache: true caches what fits)", len(files), needed / 1e9, budget / 1e9)
        return None
    return budget  # preload_images says how many it holds


def estimated_bytes(files: list[str]) -> float:
    """The decoded bytes (RGB, 8 bit) of `files`, from the headers of an even sample of them."""
    if not files:
        return 0.0
    picked = files[::max(1, len(files) // HEADER_SAMPLE)][:HEADER_SAMPLE]
    sizes = []
    for f in picked:
        try:
            w, h = images.check_image(f)
        except Exception:  # noqa: BLE001 (an unreadable header is the checks' to report, not the estimate's)
            continue
        sizes.append(w * h * 3)
    return sum(sizes) / max(1, len(sizes)) * len(files)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


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


def release(files: Iterable[str | Path]) -> None:
    """Drop `files` from the cache (what one training run put there)."""
    for f in files:
        images.CACHE.pop(str(f), None)


def cached_bytes() -> int:
    return int(sum(a.nbytes for a in images.CACHE.values())) if images.CACHE else 0
