"""Segmentation pairs and masks: list files with foreign prefixes, folder pairing, mask decoding, checks, COCO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.masks import MaskSample, check_pairs, coco_semantic_mask, find_pairs, read_mask
from visiontl.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _camvid() -> Path:
    root = SHARED / "camvid"
    if not root.is_dir():
        pytest.skip(f"real dataset {root} is absent (the shared datasets sit beside the repository)")
    return root


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def _rgb(path: Path, w: int = 8, h: int = 6) -> Path:
    return _save(path, np.full((h, w, 3), 128, np.uint8))


def _ids(path: Path, values: np.ndarray) -> Path:
    return _save(path, values.astype(np.uint8))


# --- list files ---------------------------------------------------------------------------------------------------


def test_list_file_remaps_a_foreign_prefix(tmp_path: Path) -> None:
    img, mask = _rgb(tmp_path / "imgs" / "a.png"), _ids(tmp_path / "masks" / "a.png", np.zeros((6, 8)))
    _rgb(tmp_path / "imgs" / "b.png"), _ids(tmp_path / "masks" / "b.png", np.zeros((6, 8)))
    (tmp_path / "list.txt").write_text(
        "/some/foreign/prefix/imgs/a.png /some/foreign/prefix/masks/a.png\n"
        "\n"
        f"imgs/b.png,  {tmp_path / 'masks' / 'b.png'}\n"
    )
    samples = find_pairs(tmp_path, "list.txt", None)
    assert samples == [MaskSample(img, mask), MaskSample(tmp_path / "imgs" / "b.png", tmp_path / "masks" / "b.png")]
    # A CSV header is skipped, a Windows-style foreign path is split on backslashes, an absolute list path works.
    (tmp_path / "win.csv").write_text("image,mask\nC:\\data\\set\\imgs\\a.png,C:\\data\\set\\masks\\a.png\n")
    assert find_pairs(tmp_path, str(tmp_path / "win.csv"), None) == [MaskSample(img, mask)]


def test_list_file_path_that_resolves_nowhere_names_file_line_and_path(tmp_path: Path) -> None:
    _rgb(tmp_path / "imgs" / "a.png"), _ids(tmp_path / "masks" / "a.png", np.zeros((6, 8)))
    (tmp_path / "list.txt").write_text("/x/imgs/a.png /x/masks/a.png\n/x/imgs/missing.png /x/masks/a.png\n")
    with pytest.raises(DataError, match=r"list\.txt:2: /x/imgs/missing\.png not found"):
        find_pairs(tmp_path, "list.txt", None)


def test_list_file_line_with_wrong_field_count(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a.png b.png c.png\n")
    with pytest.raises(DataError, match=r"list\.txt:1: expected an image path and a mask path"):
        find_pairs(tmp_path, "list.txt", None)


def test_empty_list_or_missing_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no image/mask pairs"):
        find_pairs(tmp_path, "empty.txt", None)
    with pytest.raises(DataError, match="no such list file or image folder"):
        find_pairs(tmp_path, "nope.txt", None)


# --- folder pairing -----------------------------------------------------------------------------------------------


def test_folder_pairing_by_stem_with_other_extension_suffix_and_subfolders(tmp_path: Path) -> None:
    x, y = _rgb(tmp_path / "images" / "x.jpg"), _rgb(tmp_path / "images" / "sub" / "y.jpg")
    mx = _ids(tmp_path / "labels" / "x.png", np.zeros((6, 8)))
    my = _ids(tmp_path / "labels" / "sub" / "y_mask.png", np.zeros((6, 8)))
    _ids(tmp_path / "labels" / "orphan.png", np.zeros((6, 8)))  # a mask without an image is ignored
    _ids(tmp_path / "labels" / "y.png", np.zeros((6, 8)))  # same stem, other folder: not y's mask
    assert find_pairs(tmp_path, "images", "labels") == [MaskSample(y, my), MaskSample(x, mx)]


def test_folder_pairing_exact_stem_wins_over_suffix(tmp_path: Path) -> None:
    x = _rgb(tmp_path / "images" / "x.jpg")
    exact = _ids(tmp_path / "masks" / "x.png", np.zeros((6, 8)))
    _ids(tmp_path / "masks" / "x_L.png", np.zeros((6, 8)))
    assert find_pairs(tmp_path, "images", "masks") == [MaskSample(x, exact)]


def test_folder_pairing_in_one_folder(tmp_path: Path) -> None:
    x = _rgb(tmp_path / "data" / "x.jpg")
    mx = _ids(tmp_path / "data" / "x_mask.png", np.zeros((6, 8)))
    assert find_pairs(tmp_path, "data", "data") == [MaskSample(x, mx)]


def test_image_without_mask_is_named(tmp_path: Path) -> None:
    _rgb(tmp_path / "images" / "x.jpg"), _ids(tmp_path / "masks" / "x.png", np.zeros((6, 8)))
    _rgb(tmp_path / "images" / "sub" / "lonely.jpg")
    _ids(tmp_path / "masks" / "lonely.png", np.zeros((6, 8)))  # wrong sub-folder
    with pytest.raises(DataError, match=r"sub/lonely\.jpg: no mask"):
        find_pairs(tmp_path, "images", "masks")


def test_folder_needs_masks_and_some_images(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="needs a mask folder"):
        find_pairs(tmp_path, "images", None)
    with pytest.raises(DataError, match="no image/mask pairs"):
        find_pairs(tmp_path, "images", "masks")


# --- read_mask ----------------------------------------------------------------------------------------------------

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]


def test_palette_decoding_maps_colours_and_ignores_unknown(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (255, 0, 0)
    rgb[1, 0] = (0, 255, 0)
    rgb[1, 2] = (1, 2, 3)  # not in the palette
    m = read_mask(_save(tmp_path / "m.png", rgb), palette=PALETTE, ignore_index=7)
    assert m.dtype == np.int64 and m.tolist() == [[0, 1, 0], [2, 0, 7]]
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 255, np.uint8)], axis=2)
    assert read_mask(_save(tmp_path / "a.png", rgba), palette=PALETTE, ignore_index=7).tolist() == m.tolist()
    with pytest.raises(DataError, match=r"colour \[0, 0, 0\] is listed twice \(class ids 0 and 1\)"):
        read_mask(tmp_path / "m.png", palette=[(0, 0, 0), (0, 0, 0)])
    with pytest.raises(DataError, match="expected a list of \\[r, g, b\\] triplets"):
        read_mask(tmp_path / "m.png", palette=[(0, 0), (1, 2, 3)])


def test_p_mode_reads_indices_not_colours(tmp_path: Path) -> None:
    im = Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), "L").convert("P")
    im.putpalette([9, 9, 9, 200, 10, 10, 10, 200, 10] + [0] * (256 * 3 - 9))
    im.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == [[0, 1], [2, 255]]
    # With a palette set, a P mask is matched by colour.
    palette = [(9, 9, 9), (200, 10, 10), (10, 200, 10)]
    assert read_mask(tmp_path / "p.png", palette=palette, ignore_index=99).tolist() == [[0, 1], [2, 99]]


def test_single_channel_modes_and_grey_rgb(tmp_path: Path) -> None:
    ids = np.array([[0, 3], [11, 255]])
    assert read_mask(_save(tmp_path / "l.png", ids.astype(np.uint8), "L")).tolist() == ids.tolist()
    big = np.array([[0, 300], [1000, 5]], np.uint16)
    assert read_mask(_save(tmp_path / "i16.png", big)).tolist() == big.tolist()
    grey = np.repeat(ids.astype(np.uint8)[..., None], 3, axis=2)
    assert read_mask(_save(tmp_path / "grey.png", grey)).tolist() == ids.tolist()
    # A palette does not change how a single-channel mask is read.
    assert read_mask(tmp_path / "l.png", palette=PALETTE).tolist() == ids.tolist()


def test_colour_mask_without_palette_is_an_error(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    with pytest.raises(DataError, match=r"c\.png: is a colour image: set data\.palette"):
        read_mask(_save(tmp_path / "c.png", rgb))


def test_undecodable_mask_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png: cannot decode mask"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"gone\.png: mask file not found"):
        read_mask(tmp_path / "gone.png")


# --- check_pairs --------------------------------------------------------------------------------------------------


def test_check_pairs_accepts_ids_and_ignore_index(tmp_path: Path) -> None:
    values = np.zeros((6, 8))
    values[0, :3] = (1, 2, 255)
    s = MaskSample(_rgb(tmp_path / "a.jpg"), _ids(tmp_path / "a.png", values))
    check_pairs([s], num_classes=3, ignore_index=255)


def test_check_pairs_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    s = MaskSample(_rgb(tmp_path / "a.jpg", 8, 6), _ids(tmp_path / "a.png", np.zeros((5, 8))))
    with pytest.raises(DataError, match=r"a\.jpg is 8x6 but its mask .*a\.png is 8x5"):
        check_pairs([s], num_classes=3, ignore_index=255)


def test_check_pairs_out_of_range_values(tmp_path: Path) -> None:
    values = np.zeros((6, 8))
    values[0, :7] = (1, 3, 4, 5, 6, 7, 8)
    s = MaskSample(_rgb(tmp_path / "a.jpg"), _ids(tmp_path / "a.png", values))
    message = r"a\.png: values 3, 4, 5, 6, 7 and 1 more are not class ids 0\.\.2 nor ignore_index 255"
    with pytest.raises(DataError, match=message):
        check_pairs([s], num_classes=3, ignore_index=255)


def test_check_pairs_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    s = MaskSample(tmp_path / "a.jpg", _ids(tmp_path / "a.png", np.zeros((6, 8))))
    with pytest.raises(DataError, match=r"a\.jpg: not a readable image"):
        check_pairs([s], num_classes=3, ignore_index=255)


# --- COCO ---------------------------------------------------------------------------------------------------------


def _square(x: float, y: float, size: float) -> list[list[float]]:
    return [[x, y, x + size, y, x + size, y + size, x, y + size]]


def test_coco_rasterisation_overlaps_crowd_and_boxes() -> None:
    from pycocotools import mask as mask_utils

    h, w = 20, 30
    crowd = np.zeros((h, w), np.uint8, order="F")
    crowd[15:20, 20:30] = 1
    crowd_rle = mask_utils.encode(crowd)
    crowd_rle["counts"] = crowd_rle["counts"].decode("ascii")
    instances = [
        Instance(1, 1, category_id=7, bbox=(2, 2, 4, 4), segmentation=_square(2, 2, 4)),  # small, listed first
        Instance(2, 1, category_id=5, bbox=(0, 0, 12, 12), segmentation=_square(0, 0, 12)),  # large, covers #1
        Instance(3, 1, category_id=5, bbox=(20, 15, 10, 5), iscrowd=True, segmentation=crowd_rle),
        Instance(4, 1, category_id=7, bbox=(22, 2, 4, 3)),  # no segmentation: its box
        Instance(5, 2, category_id=5, bbox=(0, 0, 30, 20), segmentation=_square(0, 0, 30)),  # another image
    ]
    aset = AnnotationSet(
        categories=[Category(5, "big"), Category(7, "small")],
        images=[ImageRecord(1, "a.jpg", w, h), ImageRecord(2, "b.jpg", w, h)],
        instances=instances,
        image_root=Path("."),
    )
    m = coco_semantic_mask(aset, 1, {5: 1, 7: 2}, ignore_index=255)
    assert m.shape == (h, w) and m.dtype == np.int64
    assert (m[3:5, 3:5] == 2).all()  # the small square survives on top of the large one
    assert m[0, 0] == 1 and m[10, 10] == 1
    assert (m[15:20, 20:30] == 255).all()  # crowd region ignored
    assert (m[2:5, 22:26] == 2).all() and m[6, 23] == 0  # the box
    assert m[19, 0] == 0 and m[0, 29] == 0  # background
    assert set(np.unique(m).tolist()) == {0, 1, 2, 255}
    with pytest.raises(DataError, match="category id 7 has no label"):
        coco_semantic_mask(aset, 1, {5: 1})
    with pytest.raises(DataError, match="no image with id 9"):
        coco_semantic_mask(aset, 9, {5: 1, 7: 2})


def test_coco_uncompressed_rle_and_size_check() -> None:
    # Uncompressed RLE, column-major: 2 background pixels, 3 object pixels, 1 background, in a 3x2 image.
    rle = {"size": [3, 2], "counts": [2, 3, 1]}
    aset = AnnotationSet([Category(1, "a")], [ImageRecord(1, "a.jpg", 2, 3)],
                         [Instance(1, 1, 1, bbox=(0, 0, 2, 3), segmentation=rle)], Path("."))
    assert coco_semantic_mask(aset, 1, {1: 4}).tolist() == [[0, 4], [0, 4], [4, 0]]
    aset.images[0] = ImageRecord(1, "a.jpg", 3, 3)
    with pytest.raises(DataError, match=r"annotation 1 \(a\.jpg\): RLE size \[3, 2\] differs"):
        coco_semantic_mask(aset, 1, {1: 4})


# --- real data: CamVid --------------------------------------------------------------------------------------------


def test_camvid_list_files_remap_to_existing_pairs() -> None:
    root = _camvid()
    train = find_pairs(root, "train.txt", None)
    val = find_pairs(root, "val.txt", None)
    assert len(train) == 367 and len(val) == 101
    for s in train + val:
        assert s.image.is_file() and s.mask.is_file()
        assert s.image.parent.name in ("train", "val") and s.mask.parent.name == s.image.parent.name + "annot"
        assert s.image.name == s.mask.name
    m = read_mask(train[0].mask)
    assert m.shape == (360, 480) and m.min() >= 0 and m.max() <= 11


def test_camvid_check_pairs_on_val() -> None:
    root = _camvid()
    check_pairs(find_pairs(root, "val.txt", None)[:10], num_classes=11, ignore_index=11)
    # The folder layout pairs the same files.
    assert find_pairs(root, "val", "valannot") == sorted(find_pairs(root, "val.txt", None), key=lambda s: s.image)
