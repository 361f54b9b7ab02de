"""Polygons and RLEs of a COCO file, checked before any decoder sees them, then turned into compressed RLEs.

pycocotools (and hotcoco) trust what they are given: a NaN or ±1e9 coordinate makes the polygon rasteriser
allocate tens of gigabytes, RLE counts that do not add up to the image's pixels send the mask routines past
their arrays or into minutes of work. So every polygon is checked to be numbers, finite, near the image and
of a bounded outline, and every RLE to have the image's size and run lengths that are non-negative integers
adding up to height * width; compressed counts are decoded here, with numpy, all at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from visiontl.data import rle
from visiontl.errors import DataError
from visiontl.text import printable

# An image with a mask has fewer pixels than this (23170 x 23170 does), so that every run and every
# difference of runs fits the 6 characters (30 bits) that pycocotools' C decoder computes without overflow
# in its 32-bit arithmetic: the counts checked here are exactly the counts it and hotcoco will decode.
MAX_MASK_PIXELS = 2**29 - 1
# Rasterising a polygon costs about 50 bytes per pixel of outline (measured: 10 million pixels, 0.5 GB);
# no real annotation comes near, a polygon zigzagging across a huge image does.
MAX_POLYGON_OUTLINE = 10_000_000
# pycocotools' compressed counts: 6 bits a character from '0', 5 of value, 1 "more follows"; 6 characters
# hold any run, or difference of runs, of an image of MAX_MASK_PIXELS.
_MAX_CHARS_PER_COUNT = 6


def show(value: Any) -> str:
    """A value from a file, for a one-line message: repr (control characters escaped), cut short; a huge
    integer by its length (printing it would be a line of thousands of digits, or fail)."""
    if type(value) is int and abs(value) >= 10**30:
        return f"an integer of {int(value.bit_length() * math.log10(2)) + 1} digits"
    return printable(repr(value), limit=60)


def _real_array(values: Any) -> np.ndarray | None:
    """A float array of a flat list of JSON numbers (not strings, not booleans), or None."""
    if not isinstance(values, list) or not {type(v) for v in values} <= {int, float}:
        return None
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        return None


def check_polygons(segmentation: list, size: tuple[int, int], where: str) -> list[list[float]]:
    """The polygons of one record, each checked; a problem is a DataError naming the record and polygon."""
    height, width = size
    if not segmentation:
        raise DataError(f"{where}: segmentation is an empty list (no polygon)")
    out = []
    for j, polygon in enumerate(segmentation):
        name = "segmentation polygon" if len(segmentation) == 1 else f"segmentation polygon {j}"
        xy = _real_array(polygon)
        if xy is None:
            raise DataError(f"{where}: {name} is not a list of numbers")
        if len(xy) < 6 or len(xy) % 2:
            raise DataError(f"{where}: {name} has {len(xy)} coordinates; a polygon has an even number, at least 6")
        if not np.isfinite(xy).all():
            raise DataError(f"{where}: {name} has a non-finite coordinate")
        x, y = xy[0::2], xy[1::2]
        # Up to one image size outside the image is accepted (pycocotools clips); beyond is not a drawing error.
        limit = np.tile([width, height], len(xy) // 2)
        outside = (xy < -limit) | (xy > 2 * limit)
        if outside.any():
            at = int(np.argmax(outside))
            raise DataError(f"{where}: {name} has {'xy'[at % 2]} = {xy[at]:g}, far outside the {width}x{height} image")
        outline = float(np.maximum(np.abs(np.diff(x, append=x[0])), np.abs(np.diff(y, append=y[0]))).sum())
        if outline > MAX_POLYGON_OUTLINE:
            raise DataError(f"{where}: {name} has an outline of {outline:.0f} pixels; at most "
                            f"{MAX_POLYGON_OUTLINE:,} are rasterised")
        out.append(xy.tolist())
    return out


def check_rle_size(rle: dict, size: tuple[int, int], where: str) -> None:
    given = rle["size"]
    if not (isinstance(given, list) and len(given) == 2 and all(type(v) is int for v in given)):
        raise DataError(f"{where}: segmentation RLE 'size' is {show(given)}, not [height, width] as integers")
    if tuple(given) != tuple(size):
        raise DataError(f"{where}: segmentation RLE 'size' {show(given)} is not the image's [height, width] "
                        f"{list(size)}")


def check_uncompressed_counts(counts: list, pixels: int, where: str) -> None:
    if not {type(v) for v in counts} <= {int}:
        raise DataError(f"{where}: segmentation RLE 'counts' holds something other than integers")
    total = 0
    for v in counts:  # Python integers: no overflow, and a negative run is named before the sum is
        if v < 0:
            raise DataError(f"{where}: segmentation RLE 'counts' has a negative run length ({show(v)})")
        total += v
    if total != pixels:
        raise DataError(f"{where}: segmentation RLE 'counts' add up to {total if total < 10**30 else 'more'} pixels, "
                        f"not the image's {pixels}")


def check_compressed_counts(strings: list[bytes], pixels: list[int], wheres: list[str]) -> None:
    """Decode pycocotools' compressed counts strings and check each adds up to its image's pixels with no
    negative run; the first bad one is a DataError naming its record. Vectorised over many strings at a
    time, in slices of about a million characters so the work arrays stay small."""
    start, size = 0, 0
    for end, s in enumerate(strings, 1):
        size += len(s)
        if size >= _CHARS_PER_SLICE or end == len(strings):
            _check_compressed(strings[start:end], pixels[start:end], wheres[start:end])
            start, size = end, 0


_CHARS_PER_SLICE = 1 << 20


def _check_compressed(strings: list[bytes], pixels: list[int], wheres: list[str]) -> None:
    lengths = np.fromiter((len(s) for s in strings), np.int64, count=len(strings))
    for i in np.flatnonzero(lengths == 0)[:1]:
        raise DataError(f"{wheres[i]}: segmentation RLE 'counts' is an empty string")
    chars = np.frombuffer(b"".join(strings), np.uint8).astype(np.int64) - 48
    string_of_char = np.repeat(np.arange(len(strings)), lengths)
    ends_string = np.cumsum(lengths) - 1

    bad = (chars < 0) | (chars > 63)
    if bad.any():
        i = string_of_char[np.argmax(bad)]
        raise DataError(f"{wheres[i]}: segmentation RLE 'counts' has a character outside pycocotools' encoding")
    ends_count = (chars & 0x20) == 0
    if not ends_count[ends_string].all():
        i = int(np.argmin(ends_count[ends_string]))
        raise DataError(f"{wheres[i]}: segmentation RLE 'counts' string is cut short")
    starts = np.flatnonzero(np.r_[True, ends_count[:-1]])
    count_of_char = np.cumsum(np.r_[0, ends_count[:-1]])
    k = np.arange(len(chars)) - starts[count_of_char]  # position of the character within its count
    if (k >= _MAX_CHARS_PER_COUNT).any():
        i = string_of_char[np.argmax(k >= _MAX_CHARS_PER_COUNT)]
        raise DataError(f"{wheres[i]}: segmentation RLE 'counts' has a run longer than any image")
    value = np.add.reduceat((chars & 0x1F) << (5 * k), starts)
    last = np.flatnonzero(ends_count)
    negative = (chars[last] & 0x10) != 0
    value[negative] -= np.int64(1) << (5 * (k[last][negative] + 1))

    # Each count after the second is stored as the difference to the count two before it.
    string = string_of_char[starts]
    first_count = np.cumsum(np.r_[0, lengths[:-1]])  # first character of each string starts its first count
    m = np.arange(len(starts)) - count_of_char[first_count][string]  # index of the count in its string
    group = string * 3 + np.where(m == 0, 0, 1 + m % 2)
    order = np.lexsort((m, group))
    delta = value[order]
    running = np.cumsum(delta)
    group_sorted = group[order]
    first = np.r_[True, group_sorted[1:] != group_sorted[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    running -= (running - delta)[group_start]  # restart the sum at each group
    counts = np.empty_like(value)
    counts[order] = running

    if (counts < 0).any():
        i = string[np.argmax(counts < 0)]
        raise DataError(f"{wheres[i]}: segmentation RLE 'counts' decode to a negative run length")
    totals = np.bincount(string, weights=counts.astype(np.float64), minlength=len(strings))
    expected = np.asarray(pixels, np.float64)
    if (totals != expected).any():
        i = int(np.argmax(totals != expected))
        raise DataError(f"{wheres[i]}: segmentation RLE 'counts' add up to {int(totals[i])} pixels, not the "
                        f"image's {int(expected[i])}")


def to_rles(segmentations: list, sizes: list[tuple[int, int] | None], wheres: list[str]) -> list[dict]:
    """Every segmentation (polygons, uncompressed or compressed RLE) checked, then each one compressed RLE
    (pycocotools' annToRLE, through visiontl.data.rle). `sizes`: each record's image (height, width); `wheres`:
    each record's name."""
    kinds = []
    polygons: dict[int, list[list[float]]] = {}
    compressed: list[tuple[int, bytes]] = []
    for i, (seg, size, where) in enumerate(zip(segmentations, sizes, wheres)):
        if size is None:
            raise DataError(f"{where}: a segmentation needs the image's height and width")
        if isinstance(seg, list):
            polygons[i] = check_polygons(seg, size, where)
            kinds.append("polygons")
        elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
            check_rle_size(seg, size, where)
            counts = seg["counts"]
            if isinstance(counts, list):
                check_uncompressed_counts(counts, size[0] * size[1], where)
                kinds.append("uncompressed")
            elif isinstance(counts, (str, bytes)):
                if isinstance(counts, str) and not counts.isascii():
                    raise DataError(f"{where}: segmentation RLE 'counts' has a character outside pycocotools' "
                                    "encoding")
                compressed.append((i, counts.encode("ascii") if isinstance(counts, str) else counts))
                kinds.append("compressed")
            else:
                raise DataError(f"{where}: segmentation RLE 'counts' is {show(counts)}, neither a list of run "
                                "lengths nor a compressed string")
        else:
            raise DataError(f"{where}: segmentation is neither polygons nor an RLE with 'size' and 'counts'")
    check_compressed_counts([raw for _, raw in compressed], [sizes[i][0] * sizes[i][1] for i, _ in compressed],
                            [wheres[i] for i, _ in compressed])
    raw_of = dict(compressed)
    out = []
    for i, (seg, kind) in enumerate(zip(segmentations, kinds)):
        h, w = sizes[i]
        if kind == "polygons":
            out.append(rle.to_pycocotools(polygons[i], h, w))
        elif kind == "uncompressed":
            out.append(rle.to_pycocotools(seg, h, w))
        else:
            out.append({"size": [h, w], "counts": raw_of[i]})
    return out
