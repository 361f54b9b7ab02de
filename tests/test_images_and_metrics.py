"""Decoding (EXIF, odd modes, broken files), dataset checks, and metrics against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontl.config import DataConfig
from visiontl.data.classification import discover_classes, load_split
from visiontl.data.images import check_image, read_image
from visiontl.errors import DataError
from visiontl.evaluation.classification import ClassificationMetrics, metrics_from_confusion


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now at the top
    assert check_image(tmp_path / "r.jpg") == (20, 40)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "I;16", "LA"])
def test_any_mode_becomes_rgb8(tmp_path: Path, mode: str) -> None:
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.arange(72).reshape(8, 9) * 900).astype(np.uint16))
    else:
        img = base.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    out = read_image(path)
    assert out.shape == (8, 9, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out.min() == 0 and out.max() == 255  # full range kept, not clipped


def _pil_decode(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize("kind", ["baseline", "progressive", "gray", "cmyk", "subsampled"] + [f"exif{o}" for o in range(2, 9)])
def test_fast_jpeg_path_is_bit_identical_to_pil(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import visiontl.data.images as images

    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    arr[5:20, 10:30] = (250, 10, 10)
    img = Image.fromarray(arr)
    path = tmp_path / "x.jpeg"
    kwargs: dict = {"quality": 90}
    if kind == "progressive":
        kwargs["progressive"] = True
    if kind == "gray":
        img = img.convert("L")
    if kind == "cmyk":
        img = img.convert("CMYK")
    if kind == "subsampled":
        kwargs["subsampling"] = 2
    if kind.startswith("exif"):
        exif = Image.Exif()
        exif[0x0112] = int(kind[4:])
        kwargs["exif"] = exif.tobytes()
    img.save(path, **kwargs)
    used = []
    real = images._read_jpeg
    monkeypatch.setattr(images, "_read_jpeg", lambda p: used.append(real(p) is not None) or real(p))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _pil_decode(path))
    assert used == [kind != "cmyk"]  # CMYK JPEGs go the PIL way (Adobe's inverted CMYK)


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_broken_files_name_the_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.jpg"
    if content is None:  # a truncated JPEG
        Image.new("RGB", (64, 64), "red").save(path, quality=95)
        path.write_bytes(path.read_bytes()[:200])
        with pytest.raises(DataError, match=rf"{path}: cannot decode image"):
            read_image(path)
        return
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{path}: not a readable image"):
        check_image(path)


def test_dataset_checks_before_training(synthetic_root: Path, tmp_path: Path) -> None:
    data = DataConfig(root=synthetic_root, image_size=32)
    classes = discover_classes(data)
    assert classes == ["class_0", "class_1", "class_2"]
    samples, left_out = load_split(data, "train", classes)
    assert len(samples) == 24 and left_out == []
    with pytest.raises(DataError, match="class folder 'class_2' is not in the class list"):
        load_split(data, "val", ["class_0", "class_1"])
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\ntrain/class_0/train_0_000.png,class_0\ntrain/class_1/train_1_000.png,dog\n")
    with pytest.raises(DataError, match=r"list.csv:3: unknown label 'dog'"):
        load_split(DataConfig(root=synthetic_root, format="csv", train=str(csv)), "train", classes)
    (tmp_path / "one" / "train" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match=r"found 1 class\(es\)"):
        discover_classes(DataConfig(root=tmp_path / "one"))


def test_metrics_match_scikit_learn() -> None:
    import torch
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    y[y == 3] = 2  # class 3 never occurs in the truth...
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))  # ...but is predicted sometimes
    metrics = ClassificationMetrics(["a", "b", "c", "d"])
    for chunk in np.array_split(np.arange(200), 7):
        logits = torch.nn.functional.one_hot(torch.from_numpy(pred[chunk]), 4).float()
        metrics.update(logits, torch.from_numpy(y[chunk]))
    out = metrics.compute()
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert out["precision/b"] == pytest.approx(precision_score(y, pred, labels=[1], average="macro"))
    assert out["confusion_matrix"] == confusion_matrix(y, pred, labels=[0, 1, 2, 3]).tolist()
    assert metrics_from_confusion(np.zeros((2, 2)), ["x", "y"])["accuracy"] == 0.0
