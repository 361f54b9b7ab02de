"""data.augment_on: device gives the model the CPU path's tensors (up to float rounding) where no colour jitter
runs, whatever the worker count; colour jitter stays in its ranges; JPEGs decoded in the training process
equal the workers' decoding; training runs end to end with it; the tasks it does not serve are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import tiny_config
from test_segmentation import seg_config
from visiontl.config import build_config
from visiontl.data import cache
from visiontl.data.augment import classification_transform
from visiontl.data.classification import ClassificationDataset, Sample
from visiontl.data.device_pipeline import IDENTITY, DeviceImages, DeviceItems, JitterRanges, color_jitter
from visiontl.data.masks import MaskSample
from visiontl.data.sampling import EpochSampler
from visiontl.data.segmentation import PadCollate, SegmentationDataset, segmentation_transform
from visiontl.data.synthetic import make_segmentation_folders
from visiontl.engine.seed import worker_init
from visiontl.engine.trainer import train
from visiontl.errors import ConfigError

TOLERANCE = 1e-5  # max abs difference of normalised pixels, device path vs CPU path (float rounding only)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IGNORE = 255


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def _classification_set(tmp_path: Path, preset: str, train: bool) -> ClassificationDataset:
    """Eight photos of different sizes (so the resize matters), as a ClassificationDataset."""
    rng = np.random.default_rng(3)
    samples = []
    for i, (w, h) in enumerate([(40, 30), (33, 51), (64, 64), (20, 28), (47, 35), (32, 32), (70, 41), (25, 60)]):
        path = tmp_path / f"c{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(path, i % 2))
    return ClassificationDataset(samples, classification_transform(preset, 24, MEAN, STD, train))


def _segmentation_set(root: Path, split: str, crop: int | None, preset: str) -> SegmentationDataset:
    images = sorted((root / "images" / split).iterdir())
    samples = [MaskSample(p, root / "masks" / split / f"{p.stem}.png") for p in images]
    return SegmentationDataset(segmentation_transform(preset, crop, MEAN, STD, IGNORE, True, False), IGNORE,
                               samples=samples)


def _batches_cpu(dataset, collate, items):
    return collate([dataset[it] for it in items])


def _batches_device(dataset, items, decode_jpegs=False):
    view = DeviceItems(dataset, decode_jpegs=decode_jpegs)
    images, targets, index = view.collate([view[it] for it in items])
    return images, images.finish(torch.device("cpu")), targets, index


def _items(n: int, epoch: int = 1) -> list[tuple[int, int]]:
    sampler = EpochSampler(n, shuffle=True, seed=5)
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("preset,train", [("light", True), ("none", True), ("standard", False)])
def test_classification_matches_the_cpu_path(tmp_path: Path, preset: str, train: bool) -> None:
    from visiontl.tasks.classification import collate

    dataset = _classification_set(tmp_path, preset, train)
    items = _items(len(dataset))
    cpu_images, cpu_labels, cpu_index = _batches_cpu(dataset, collate, items)
    raw, images, labels, index = _batches_device(dataset, items)
    assert raw.pixels.dtype == torch.uint8 and images.shape == cpu_images.shape == (8, 3, 24, 24)
    assert (images - cpu_images).abs().max().item() <= TOLERANCE
    assert torch.equal(labels, cpu_labels) and torch.equal(index, cpu_index)
    if preset == "light":  # the flips are drawn per sample: some images came out flipped
        unflipped = ClassificationDataset(dataset.samples, classification_transform("none", 24, MEAN, STD, True))
        plain = _batches_cpu(unflipped, collate, items)[0]
        assert any(not torch.allclose(a, b) for a, b in zip(plain, cpu_images))


@pytest.mark.parametrize("crop,preset", [(40, "light"), (48, "none"), (None, "none")])
def test_segmentation_matches_the_cpu_path_padding_included(tmp_path: Path, crop: int | None, preset: str) -> None:
    root = make_segmentation_folders(tmp_path / "a", train=3, val=0, size=(67, 53), seed=1)
    make_segmentation_folders(tmp_path / "b", train=3, val=0, size=(30, 45), seed=2)  # smaller than the crops
    for f in (tmp_path / "b").rglob("*.*"):
        target = root / f.relative_to(tmp_path / "b")
        f.rename(target.with_name("b_" + target.name))
    dataset = _segmentation_set(root, "train", crop, preset)
    items = _items(len(dataset))
    cpu_images, cpu_masks, _ = _batches_cpu(dataset, PadCollate(IGNORE), items)
    raw, images, masks, _ = _batches_device(dataset, items)
    # crop 40 and the val images pad to 64 / 96 x 96: zeros beyond each image, ignore_index in the masks
    assert images.shape == cpu_images.shape and images.shape[-1] % 32 == 0
    if crop is None:
        assert {tuple(s) for s in raw.sizes.tolist()} == {(53, 67), (45, 30)}
    assert (images - cpu_images).abs().max().item() <= TOLERANCE
    assert torch.equal(masks, cpu_masks) and (masks == IGNORE).any()


@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_standard_geometry_is_the_cpu_paths(tmp_path: Path, kind: str) -> None:
    """Random resized crops (classification), random scale + crop (segmentation) and flips: the same per-sample
    seed gives the same geometry. The CPU path's jitter is turned off (it is the last op before Normalize, so
    its draws come after every geometric one); the device path's samples whose jitter was not drawn compare."""
    from visiontl.tasks.classification import collate

    if kind == "classification":
        dataset, pad = _classification_set(tmp_path, "standard", True), collate
    else:
        root = make_segmentation_folders(tmp_path / "s", train=8, val=0, size=(90, 70))
        dataset, pad = _segmentation_set(root, "train", 48, "standard"), PadCollate(IGNORE)
    items = _items(len(dataset), epoch=2)
    raw, images, _, _ = _batches_device(dataset, items)
    jitter = [op for op in dataset.transform.transforms if type(op).__name__ == "ColorJitter"][0]
    jitter.p = 0.0
    cpu_images = _batches_cpu(dataset, pad, items)[0]
    plain = [k for k, j in enumerate(raw.jitter.tolist()) if tuple(j) == IDENTITY]
    assert 0 < len(plain) < len(items)
    assert (images[plain] - cpu_images[plain]).abs().max().item() <= TOLERANCE
    unplain = [k for k in range(len(items)) if k not in plain]
    assert (images[unplain] - cpu_images[unplain]).abs().max().item() > 1e-3  # jittered: another image


def test_device_decoding_equals_the_workers_and_honours_exif(tmp_path: Path) -> None:
    """The bytes path (nvjpeg on CUDA) run here on the CPU decoder: the logic (slots, sizes, padding, the files
    that must stay in the workers) is the same."""
    root = make_segmentation_folders(tmp_path / "d", train=0, val=3, size=(67, 53), seed=4)
    turned = root / "images" / "val" / "val_001.jpg"
    with Image.open(turned) as im:  # stored sideways with EXIF 6: upright it is the mask's 67 x 53 again
        exif = Image.Exif()
        exif[0x0112] = 6
        im.transpose(Image.Transpose.ROTATE_90).save(turned, quality=95, exif=exif.tobytes())
    dataset = _segmentation_set(root, "val", None, "none")
    items = _items(len(dataset))
    cpu_images = _batches_cpu(dataset, PadCollate(IGNORE), items)[0]
    raw, images, _, index = _batches_device(dataset, items, decode_jpegs=True)
    sent = {int(index[slot]) for slot, _, _ in raw.encoded}
    assert sent == {0, 2}  # the EXIF-turned file was decoded in the worker
    assert raw.pixels[[slot for slot, _, _ in raw.encoded]].eq(0).all()  # their pixels come from the bytes
    assert (images - cpu_images).abs().max().item() <= TOLERANCE
    assert all(name.endswith(("val_000.jpg", "val_002.jpg")) for _, _, name in raw.encoded)

    cache.preload_images(dataset.image_files(), 1e9, progress=False)  # data.cache: nothing left to decode
    try:
        raw, images, _, _ = _batches_device(dataset, items, decode_jpegs=True)
    finally:
        cache.release(dataset.image_files())
    assert raw.encoded == [] and (images - cpu_images).abs().max().item() <= TOLERANCE


def test_an_image_embedded_in_an_annotation_file_is_decoded_by_the_workers(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """labelme's imageData has no file for the device to read; another set's embedded images change nothing."""
    import base64

    from visiontl.data import images as image_files

    root = make_segmentation_folders(tmp_path / "d", train=0, val=3, seed=4)
    embedded = root / "images" / "val" / "val_001.jpg"
    monkeypatch.setattr(image_files, "EMBEDDED", {})
    image_files.embed(tmp_path / "elsewhere" / "other.jpg", base64.b64encode(b"not read").decode())
    dataset = _segmentation_set(root, "val", None, "none")
    items = _items(len(dataset))
    cpu_images = _batches_cpu(dataset, PadCollate(IGNORE), items)[0]
    image_files.embed(embedded, base64.b64encode(embedded.read_bytes()).decode())
    embedded.unlink()
    raw, images, _, index = _batches_device(dataset, items, decode_jpegs=True)
    assert {int(index[slot]) for slot, _, _ in raw.encoded} == {0, 2}
    assert (images - cpu_images).abs().max().item() <= TOLERANCE


def test_a_file_the_device_decoder_refuses_is_decoded_as_the_workers_do(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from visiontl.data import device_pipeline

    def refuse(data, device):
        raise RuntimeError("nvjpeg: unsupported")

    root = make_segmentation_folders(tmp_path / "d", train=0, val=2, seed=4)
    dataset = _segmentation_set(root, "val", None, "none")
    items = _items(len(dataset))
    cpu_images = _batches_cpu(dataset, PadCollate(IGNORE), items)[0]
    monkeypatch.setattr(device_pipeline, "decode_jpegs", refuse)
    raw, images, _, _ = _batches_device(dataset, items, decode_jpegs=True)
    assert len(raw.encoded) == 2 and (images - cpu_images).abs().max().item() <= TOLERANCE


def test_no_device_decoding_where_geometry_comes_first(tmp_path: Path) -> None:
    root = make_segmentation_folders(tmp_path / "d", train=2, val=0, seed=4)
    view = DeviceItems(_segmentation_set(root, "train", 32, "light"), decode_jpegs=True)
    assert not view.decode_jpegs and view[(0, 1)][0].dim() == 3


@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_same_batches_with_0_and_2_workers(tmp_path: Path, kind: str) -> None:
    if kind == "classification":
        view = DeviceItems(_classification_set(tmp_path, "standard", True))
    else:
        view = DeviceItems(_segmentation_set(make_segmentation_folders(tmp_path / "s", train=6, val=0), "train", 40,
                                             "standard"))
    runs = []
    for workers in (0, 2):
        sampler = EpochSampler(len(view), shuffle=True, seed=2)
        sampler.set_epoch(3)
        loader = DataLoader(view, batch_size=3, sampler=sampler, num_workers=workers, collate_fn=view.collate,
                            worker_init_fn=worker_init)
        runs.append([(b[0].finish(torch.device("cpu")), b[0].jitter, b[1]) for b in loader])
    assert len(runs[0]) == len(runs[1]) == -(-len(view) // 3)
    jittered = 0
    for (a, ja, ta), (b, jb, tb) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(ja, jb) and torch.equal(ta, tb)
        jittered += sum(tuple(j) != IDENTITY for j in ja.tolist())
    assert jittered > 0  # the standard preset's jitter ran on some of them


def test_color_jitter_ranges_and_identity() -> None:
    ranges = JitterRanges((0.8, 1.2), (0.8, 1.2), (0.8, 1.2), (-0.02, 0.02), 0.5)
    draws = [ranges.draw(seed) for seed in range(2000)]
    applied = [d for d in draws if d != IDENTITY]
    assert 0.45 < len(applied) / len(draws) < 0.55
    for b, c, s, h in applied:
        assert 0.8 <= b <= 1.2 and 0.8 <= c <= 1.2 and 0.8 <= s <= 1.2 and -0.02 <= h <= 0.02
    assert draws == [ranges.draw(seed) for seed in range(2000)]  # a function of the seed alone

    images = torch.rand(4, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    assert torch.equal(color_jitter(images, torch.tensor([IDENTITY] * 4)), images)
    brighter = color_jitter(images, torch.tensor([(1.2, 1.0, 1.0, 0.0)] * 4))
    assert torch.equal(brighter, (images * 1.2).clamp(0, 1))
    factors = torch.tensor(applied[:4])
    out = color_jitter(images, factors)
    assert out.min() >= 0 and out.max() <= 1
    assert (out - images).abs().max() <= 0.5  # +-20 % factors and a 2 % hue turn move no pixel further
    for k in range(4):  # batched, each image gets torchvision's own adjust_* with its factors, in that order
        assert (out[k] - _torchvision_jitter(images[k], *applied[k])).abs().max() <= 1e-5


def _torchvision_jitter(image: torch.Tensor, brightness: float, contrast: float, saturation: float,
                        hue: float) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    image = F.adjust_contrast(F.adjust_brightness(image, brightness), contrast)
    return F.adjust_hue(F.adjust_saturation(image, saturation), hue)


def test_contrast_takes_its_mean_over_the_image_not_the_padding() -> None:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    region = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    region[0, :, :20, :25] = True
    region[1] = True
    factors = [(1.1, 0.85, 1.15, 0.01), (0.9, 1.2, 0.8, -0.015)]
    out = color_jitter(images, torch.tensor(factors), region)
    assert (out[0, :, :20, :25] - _torchvision_jitter(images[0, :, :20, :25], *factors[0])).abs().max() <= 1e-5
    assert (out[1] - _torchvision_jitter(images[1], *factors[1])).abs().max() <= 1e-5


def test_finish_jitters_only_the_image_not_the_padding() -> None:
    pixels = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    pixels[0, :, :40, :50] = 100
    pixels[1, :, :64, :64] = 100
    batch = DeviceImages(pixels, torch.tensor([[40, 50], [64, 64]]),
                         torch.tensor([[1.2, 0.8, 1.1, 0.01], list(IDENTITY)]), MEAN, STD)
    out = batch.finish(torch.device("cpu"))
    assert out[0, :, 40:].eq(0).all() and out[0, :, :, 50:].eq(0).all()
    plain = (100 / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(out[1], plain.expand(3, 64, 64), atol=TOLERANCE)
    assert not torch.allclose(out[0, :, :40, :50], plain.expand(3, 40, 50), atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvjpeg)")
def test_nvjpeg_decoding_is_close_to_the_cpu_decoder(tmp_path: Path) -> None:
    from visiontl.data.device_pipeline import decode_jpegs
    from visiontl.data.images import read_image

    root = make_segmentation_folders(tmp_path / "g", train=0, val=3, size=(67, 53), seed=6)
    files = sorted((root / "images" / "val").iterdir())
    decoded = decode_jpegs([torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files],
                           torch.device("cuda"))
    for f, image in zip(files, decoded):
        reference = torch.from_numpy(read_image(f)).permute(2, 0, 1).int()
        diff = (image.cpu().int() - reference).abs()
        # nvjpeg and libjpeg-turbo differ in their IDCT and chroma upsampling, not in what the image shows
        assert diff.float().mean() <= 2.0 and diff.max() <= 40, f"{f}: {diff.float().mean()}, {diff.max()}"


def test_training_runs_with_the_device_pipeline(tmp_path: Path, synthetic_root: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="visiontl")
    cfg = build_config(tiny_config(synthetic_root, tmp_path / "cls", data={"augment_on": "device", "augment": "standard"},
                                   train={"epochs": 1}))
    metrics = train(cfg)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert "accuracy" in json.loads((tmp_path / "cls" / "metrics.json").read_text())
    assert any(r.getMessage().startswith("data.augment_on device:") for r in caplog.records)

    root = make_segmentation_folders(tmp_path / "seg")
    cfg = build_config(seg_config(root, tmp_path / "segrun", data={"augment_on": "device", "on_bad_image": "skip"},
                                  train={"epochs": 1, "workers": 2}))
    metrics = train(cfg)
    assert 0.0 <= metrics["mIoU"] <= 1.0 and (tmp_path / "segrun" / "metrics.json").is_file()


def test_the_same_segmentation_run_with_either_pipeline_without_jitter(tmp_path: Path) -> None:
    root = make_segmentation_folders(tmp_path / "seg")
    losses = {}
    for pipeline in ("cpu", "device"):
        run = tmp_path / pipeline
        train(build_config(seg_config(root, run, data={"augment_on": pipeline, "augment": "light"},
                                      train={"epochs": 1, "max_steps": 2})))
        losses[pipeline] = json.loads((run / "metrics.json").read_text())["loss"]
    assert losses["device"] == pytest.approx(losses["cpu"], rel=1e-4)


@pytest.mark.parametrize("task,extra,words", [
    ("detection", {}, "data.augment_on 'device' is for classification and segmentation"),
    ("segmentation", {"augment": "strong"}, "no device version of the 'strong' preset"),
])
def test_refused_where_it_does_not_apply(task: str, extra: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_config({"task": task, "data": {"augment_on": "device", **extra}})


def test_sharded_validation_under_torchrun_equals_one_cpu_path_evaluation(tmp_path: Path) -> None:
    """Two ranks (gloo) train and validate through the device path, each scoring its shard of val images of
    their own size; one process evaluating the saved model through the CPU path gets the same metrics, up to
    float rounding."""
    from test_distributed import evaluate_in_one_process, torchrun

    root = make_segmentation_folders(tmp_path / "data", train=6, val=5)
    run = tmp_path / "run"
    proc, _ = torchrun(seg_config(root, run, data={"augment_on": "device", "augment": "light"},
                                  train={"epochs": 1, "batch_size": 2}), tmp_path)
    assert "data.augment_on device:" in (run / "train.log").read_text()
    ranks, one = evaluate_in_one_process(run, tmp_path / "one_process")
    assert ranks["confusion_matrix"] == one["confusion_matrix"]
    assert ranks["mIoU"] == pytest.approx(one["mIoU"], abs=1e-9) and ranks["loss"] == pytest.approx(one["loss"], rel=1e-5)
