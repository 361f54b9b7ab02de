"""The COCO RLE / mask codec (visiontl/data/rle.py): what every reader, writer, task and evaluation encodes
and decodes masks with."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from visiontl.data import rle

# A 3x4 mask: pixel (1, 1) and the top two pixels of the last column. Column-major it is
# 0000 1 0000 11 0: runs 4, 1, 4, 2, 1 (background first). Compressed, from the fourth run on each is stored
# as its difference from the run two before (2-1=1, 1-4=-3, written 'M'): "4141M".
SMALL = np.zeros((3, 4), dtype=bool)
SMALL[1, 1] = True
SMALL[0:2, 3] = True
SMALL_RUNS = [4, 1, 4, 2, 1]


def _random_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [rng.random((h, w)) < p for h, w, p in [(1, 1, 0.5), (7, 5, 0.3), (40, 64, 0.5), (33, 17, 0.9)]]
    blob = np.zeros((50, 70), dtype=bool)
    blob[10:30, 20:45] = True
    return [*masks, blob, np.ones((6, 9), dtype=bool)]


def test_encode_is_a_json_ready_rle_with_counts_as_str() -> None:
    out = rle.encode(SMALL)
    assert out == {"size": [3, 4], "counts": "4141M"}
    assert type(out["counts"]) is str and all(type(v) is int for v in out["size"])
    assert json.loads(json.dumps(out)) == out


@pytest.mark.parametrize("k", range(6))
def test_encode_is_byte_identical_to_pycocotools(k: int) -> None:
    mask = _random_masks()[k]
    expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    out = rle.encode(mask)
    assert out["counts"].encode("ascii") == expected["counts"]
    assert out["size"] == [int(v) for v in expected["size"]] == list(mask.shape)


def test_memory_order_and_dtype_do_not_change_the_encoding() -> None:
    mask = _random_masks()[2]
    wide = np.zeros((40, 128), dtype=bool)
    wide[:, ::2] = mask
    same = [mask, np.asfortranarray(mask), np.ascontiguousarray(mask), mask.astype(np.uint8), wide[:, ::2],
            mask.T.copy().T]  # the last two are views / Fortran-ordered copies
    assert not wide[:, ::2].flags.c_contiguous and mask.T.copy().T.flags.f_contiguous
    assert len({json.dumps(rle.encode(m)) for m in same}) == 1


@pytest.mark.parametrize("k", range(6))
def test_round_trip(k: int) -> None:
    mask = _random_masks()[k]
    h, w = mask.shape
    encoded = rle.encode(mask)
    decoded = rle.decode(encoded, h, w)
    assert decoded.dtype == bool and decoded.shape == (h, w)
    np.testing.assert_array_equal(decoded, mask)
    assert rle.area(encoded, h, w) == float(mask.sum())
    assert rle.encode(decoded) == encoded


def test_uncompressed_and_compressed_counts_decode_alike() -> None:
    assert rle.compressed_runs("4141M") == SMALL_RUNS
    np.testing.assert_array_equal(rle.decode({"size": [3, 4], "counts": SMALL_RUNS}, 3, 4), SMALL)
    np.testing.assert_array_equal(rle.decode({"size": [3, 4], "counts": b"4141M"}, 3, 4), SMALL)
    assert rle.to_pycocotools({"size": [3, 4], "counts": SMALL_RUNS}, 3, 4)["counts"] == b"4141M"
    assert rle.to_pycocotools({"size": [3, 4], "counts": "4141M"}, 3, 4) == {"size": [3, 4], "counts": b"4141M"}


def test_as_json_turns_pycocotools_bytes_into_str() -> None:
    raw = mask_utils.encode(np.asfortranarray(SMALL.astype(np.uint8)))
    assert type(raw["counts"]) is bytes
    assert rle.as_json(raw) == {"size": [3, 4], "counts": "4141M"}
    assert rle.as_json({"size": (3, 4), "counts": "4141M"}) == {"size": [3, 4], "counts": "4141M"}


def test_empty_mask() -> None:
    empty = np.zeros((3, 4), dtype=bool)
    encoded = rle.encode(empty)
    assert encoded == {"size": [3, 4], "counts": "<"}  # one run of 12 background pixels
    assert not rle.decode(encoded, 3, 4).any()
    assert rle.area(encoded, 3, 4) == 0.0
    assert rle.box(encoded, 3, 4) == (0.0, 0.0, 0.0, 0.0)
    # no polygon at all is an empty mask too (pycocotools' frPyObjects fails on an empty list)
    assert not rle.decode([], 3, 4).any() and rle.area([], 3, 4) == 0.0


def test_box_is_the_tight_box_of_the_pixels() -> None:
    assert rle.box(rle.encode(SMALL), 3, 4) == (1.0, 0.0, 3.0, 2.0)
    mask = _random_masks()[4]  # the 20 x 25 blob at (20, 10)
    assert rle.box(rle.encode(mask), *mask.shape) == (20.0, 10.0, 25.0, 20.0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own decode, for the expected mask
def test_polygons_decode_to_their_union() -> None:
    square = [2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]
    other = [10, 10, 14, 10, 14, 14, 10, 14]  # integers are taken as they are
    one = rle.decode([square], 20, 20)
    both = rle.decode([square, other], 20, 20)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([square, [float(v) for v in other]], 20,
                                                                         20))).astype(bool)
    np.testing.assert_array_equal(both, expected)
    assert one.sum() == 16 and both.sum() == 32 and (both & one).sum() == 16
    assert rle.area([square, other], 20, 20) == 32.0
    assert rle.box([square, other], 20, 20) == (2.0, 2.0, 12.0, 12.0)
    assert rle.encode(both) == rle.as_json(rle.to_pycocotools([square, other], 20, 20))


@pytest.mark.parametrize("seg, message", [
    ({"size": [3, 5], "counts": "4141M"}, "mask size [3, 5] differs from the image's [3, 4]"),
    ({"size": [3, 4], "counts": [4, 1, 4]}, "RLE counts add up to 9 pixels, not 3x4 = 12"),
    ({"size": [3, 4], "counts": [4, -1, 9]}, "RLE counts are not all non-negative integers"),
    ({"size": [3, 4], "counts": "4141\x7f"}, "RLE counts string is not a COCO compressed RLE"),
    ({"size": [3, 4], "counts": None}, "RLE counts are neither a list nor a string"),
])
def test_decode_refuses_an_rle_that_is_not_the_image_s_mask(seg: dict, message: str) -> None:
    assert rle.rle_problem(seg, 3, 4) == message
    with pytest.raises(rle.RLEError, match=f"^{message}$".replace("[", r"\[").replace("]", r"\]")):
        rle.decode(seg, 3, 4)
