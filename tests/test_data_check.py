"""`data check` finds every problem of a broken dataset in one pass; `data split` is reproducible and
stratified; `data stats` counts what is there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.check import check_annotations
from visiontl.data.formats.coco import read_coco
from visiontl.data.split import class_presence, split_images
from visiontl.data.stats import dataset_stats, stats_png


def _jpg(path: Path, w: int, h: int) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)  # enough scan data to cut
    Image.fromarray(noise).save(path, quality=90)


def broken_coco(root: Path) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    _jpg(images / "good.jpg", 64, 48)
    _jpg(images / "small.jpg", 32, 32)          # annotation will claim 64x48
    _jpg(images / "cut.jpg", 64, 48)
    data = (images / "cut.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (images / "text.jpg").write_text("not an image")
    coco = {
        "images": [
            {"id": 1, "file_name": "good.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "small.jpg", "width": 64, "height": 48},
            {"id": 3, "file_name": "cut.jpg", "width": 64, "height": 48},
            {"id": 4, "file_name": "missing.jpg", "width": 64, "height": 48},
            {"id": 5, "file_name": "text.jpg", "width": 64, "height": 48},
            {"id": 1, "file_name": "again.jpg", "width": 64, "height": 48},
        ],
        "categories": [{"id": 0, "name": "cell"}, {"id": 1, "name": "unused"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [10, 10, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 0, "bbox": [70, 60, 5, 5]},          # outside the image
            {"id": 3, "image_id": 1, "category_id": 0, "bbox": [50, 40, 30, 30]},        # crosses the border
            {"id": 4, "image_id": 1, "category_id": 0, "bbox": [5, 5, 0, 10]},           # zero width
            {"id": 5, "image_id": 1, "category_id": 0, "bbox": [5, 5, float("nan"), 3]},  # NaN
            {"id": 6, "image_id": 9, "category_id": 0, "bbox": [1, 1, 2, 2]},            # unknown image
            {"id": 7, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2]},            # unknown category
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [1, 1, 2, 2]},            # duplicate id
            {"id": 8, "image_id": 1, "category_id": 0, "bbox": [1, 1, 9, 9], "segmentation": [[1, 1, 9, 9]]},
            {"id": 9, "image_id": 1, "category_id": 0, "bbox": [1, 1, 9, 9],
             "segmentation": {"size": [48, 64], "counts": [100, 5]}},                   # RLE of the wrong length
        ],
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def test_check_names_every_problem_in_one_pass(tmp_path: Path) -> None:
    path = broken_coco(tmp_path)
    problems: list[str] = []
    aset = read_coco(path, tmp_path / "images", sanitize=False, problems=problems)
    found = [f"error: {p}" for p in problems] + [str(p) for p in check_annotations(aset)]
    text = "\n".join(found)
    expected = [
        "image id 1 is used twice",
        "annotation 5 (good.jpg): bbox [5, 5, nan, 3] is not 4 finite numbers",
        "annotation 6: image_id 9 is not in 'images'",
        "annotation 7 (good.jpg): category_id 7 is not in 'categories'",
        "annotation id 1 is used twice",
        "small.jpg: the annotation says 64x48, the image is 32x32",
        "cut.jpg: cannot be decoded",
        "missing.jpg: image file not found",
        "text.jpg: not a readable image",
        "annotation 2 (good.jpg): box [70.0, 60.0, 5.0, 5.0] lies outside the 64x48 image",
        "warning: ", "annotation 3 (good.jpg): box [50.0, 40.0, 30.0, 30.0] crosses the border",
        "annotation 4 (good.jpg): box [5.0, 5.0, 0.0, 10.0] has zero or negative size",
        "annotation 8 (good.jpg): polygon 0 has 2 point(s)",
        "annotation 9 (good.jpg): RLE counts add up to 105 pixels, not 48x64 = 3072",
        "category 1 'unused' has no instances",
    ]
    for line in expected:
        assert line in text, line
    assert all("\n" not in p for p in found)  # one line each
    errors = [p for p in found if p.startswith("error")]
    assert len(errors) == 13 and len(found) == 15


def _multilabel_set(n: int = 60) -> AnnotationSet:
    rng = np.random.default_rng(3)
    cats = [Category(i, f"c{i}") for i in range(4)]
    images, instances = [], []
    for i in range(n):
        images.append(ImageRecord(i, f"{i}.jpg", 100, 100))
        present = [0] if rng.random() < 0.7 else []
        present += [c for c, p in ((1, 0.3), (2, 0.15), (3, 0.05)) if rng.random() < p]
        for c in present:
            instances.append(Instance(len(instances), i, c, (1.0, 1.0, 10.0, 20.0)))
    return AnnotationSet(cats, images, instances, Path("."))


def test_split_is_reproducible_complete_and_stratified() -> None:
    aset = _multilabel_set()
    a = split_images(aset, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=0)
    assert a == split_images(aset, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=0)
    assert a != split_images(aset, {"train": 0.7, "val": 0.2, "test": 0.1}, seed=1)
    ids = [i for part in a.values() for i in part]
    assert sorted(ids) == list(range(60))  # every image exactly once
    assert [len(a[s]) for s in ("train", "val", "test")] == [42, 12, 6]
    total = class_presence(aset, ids)
    for split, fraction in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        got = class_presence(aset, a[split])
        for c, n in total.items():
            assert abs(got[c] - fraction * n) <= 1.0, (split, c, got[c], fraction * n)
            if n >= 3:
                assert got[c] >= 1  # every class with enough images reaches every split


def test_split_fractions_must_add_up() -> None:
    from visiontl.errors import DataError

    with pytest.raises(DataError, match="add up to 1"):
        split_images(_multilabel_set(), {"train": 0.7, "val": 0.2})


def test_stats_count_and_draw() -> None:
    aset = _multilabel_set()
    stats = dataset_stats(aset)
    assert stats["images"] == 60 and stats["instances"] == len(aset.instances)
    assert sum(c["instances"] for c in stats["classes"]) == len(aset.instances)
    assert stats["box_size_px"]["median"] == pytest.approx(np.sqrt(200))
    assert stats["box_aspect_w_over_h"]["max"] == pytest.approx(0.5)
    assert stats["coco_area"] == {"small": len(aset.instances), "medium": 0, "large": 0}
    png = stats_png(aset)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(__import__("io").BytesIO(png)).size[0] >= 800
