"""Label Studio's brush RLE <-> masks, and the box of a mask (its COCO RLE: visiontl.data.rle)."""

from __future__ import annotations

from typing import Any

import numpy as np

_RLE_SIZES = (3, 4, 8, 16)


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0]))


# --- Label Studio brush RLE -------------------------------------------------------------------------------
#
# The bit stream (thi.ng rle-pack, as Label Studio's editor and label-studio-converter use it), MSB first:
# 32 bits: number of values; 5 bits: word size - 1; 4 x 4 bits: the four run-length field sizes - 1; then
# chunks until all values are out: 1 bit repeat flag, 2 bits choosing a field size, that many bits: run
# length - 1, then one word (repeat: the value repeated) or run-length words (literal values).


def brush_decode(rle: list[int] | bytes, expected: int | None = None) -> np.ndarray:
    """The flat values (uint32) of a Label Studio brush RLE. Raises ValueError on a malformed stream."""
    buf = bytes(rle)
    nbits = len(buf) * 8
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        end = pos + n
        if end > nbits:
            raise ValueError(f"the stream ends after {len(buf)} bytes, in the middle of a run")
        first, last = pos >> 3, (end + 7) >> 3
        chunk = int.from_bytes(buf[first:last], "big")
        pos = end
        return (chunk >> ((last << 3) - end)) & ((1 << n) - 1)

    if nbits < 53:
        raise ValueError(f"{len(buf)} bytes are too few for the header")
    num = read(32)
    if expected is not None and num != expected:
        raise ValueError(f"it holds {num} values, not width x height x 4 = {expected}")
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise ValueError(f"a run of {j - i} values at value {i} passes the end ({num})")
        if repeat:
            out[i:j] = read(word)
        else:
            out[i:j] = [read(word) for _ in range(j - i)]
        i = j
    return out


def brush_encode(values: Any) -> list[int]:
    """Encode flat values 0..255 as a Label Studio brush RLE (word size 8, run-length fields 3/4/8/16 bits),
    byte for byte what label-studio-converter's `encode_rle` writes."""
    arr = np.asarray(values).ravel()
    if arr.size and (arr.min() < 0 or arr.max() > 255 or not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError("brush values must be integers 0..255")
    n = int(arr.size)
    pieces = [f"{n:032b}", f"{7:05b}", "".join(f"{s - 1:04b}" for s in _RLE_SIZES)]
    if n:
        starts = np.concatenate(([0], np.flatnonzero(arr[1:] != arr[:-1]) + 1))
        lengths = np.diff(np.concatenate((starts, [n])))
        for length, value in zip(lengths.tolist(), arr[starts].tolist()):
            v = f"{value:08b}"
            if length == 1:
                pieces.append("000000" + v)  # a literal run of one value
            elif length <= 8:
                pieces.append(f"100{length - 1:03b}{v}")
            elif length <= 16:
                pieces.append(f"101{length - 1:04b}{v}")
            elif length <= 256:
                pieces.append(f"110{length - 1:08b}{v}")
            else:
                while length > 1 << 16:
                    pieces.append(f"111{(1 << 16) - 1:016b}{v}")
                    length -= 1 << 16
                pieces.append(f"111{length - 1:016b}{v}")
    bits = "".join(pieces)
    bits += "0" * (8 - len(bits) % 8)  # as the converter pads: always 1..8 zero bits
    return np.packbits(np.frombuffer(bits.encode("ascii"), dtype=np.uint8) - 48).tolist()


def brush_to_mask(rle: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """HxW bool mask of a brush RLE: its H*W*4 RGBA values, foreground where alpha > 0 (as the converter)."""
    values = brush_decode(rle, expected=height * width * 4)
    return values.reshape(height, width, 4)[:, :, 3] > 0


def mask_to_brush(mask: np.ndarray) -> list[int]:
    """Brush RLE of an HxW mask: RGBA (255, 255, 255, 255) on the foreground, 0 elsewhere."""
    pixels = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8).ravel()
    return brush_encode(np.repeat(pixels, 4))
