"""The data pipeline's speed features keep results unchanged: aspect-ratio batches, the decoded-image
cache, torch.compile (tools/bench_data.py and tools/bench_train.py measure what they gain)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from visiontl.config import build_config
from visiontl.data import cache, images
from visiontl.data.sampling import EpochSampler, GroupedBatchSampler
from visiontl.engine.distributed import ShardSampler
from visiontl.engine.trainer import train
from visiontl.errors import ConfigError


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize("size,batch", [(37, 4), (8, 8), (5, 3), (64, 5)])
def test_grouped_batches_are_single_group_except_the_tail(size: int, batch: int) -> None:
    groups = [int(i % 3 == 0) for i in range(size)]
    sampler = EpochSampler(size, shuffle=True, seed=7)
    batches = list(GroupedBatchSampler(sampler, groups, batch))
    assert len(batches) == len(GroupedBatchSampler(sampler, groups, batch)) == -(-size // batch)
    flat = [item for b in batches for item in b]
    assert sorted(flat) == sorted(sampler)  # every (index, seed) exactly once
    full = [b for b in batches if len(b) == batch]
    mixed = [b for b in batches if len({groups[i] for i, _ in b}) > 1]
    assert len(mixed) <= 1 and all(b in batches[-2:] for b in mixed)  # only the leftovers may mix groups
    assert len(full) >= size // batch - 1
    assert batches == list(GroupedBatchSampler(sampler, groups, batch))  # deterministic


def test_grouped_batches_follow_the_epoch_and_match_across_ranks() -> None:
    groups = [int(i % 4 == 0) for i in range(23)]
    inner = EpochSampler(23, shuffle=True, seed=1)
    first = list(GroupedBatchSampler(inner, groups, 4))
    grouped = GroupedBatchSampler(inner, groups, 4)
    grouped.set_epoch(1)
    assert list(grouped) != first
    counts = []
    for rank in range(3):
        shard = GroupedBatchSampler(ShardSampler(EpochSampler(23, shuffle=True, seed=1), rank, 3), groups, 4)
        counts.append(len(list(shard)))
    assert counts == [2, 2, 2]  # ceil(ceil(23 / 3) / 4) on every rank: DDP needs the same number of steps


def _write_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        path = folder / f"{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


def test_cache_returns_what_decoding_returns_and_respects_its_budget(tmp_path: Path, caplog) -> None:
    files = _write_images(tmp_path, 6)
    expected = [images.decode_image_file(f) for f in files]
    budget = sum(a.nbytes for a in expected[:4])
    with caplog.at_level(logging.WARNING, logger="visiontl"):
        assert cache.preload_images(files, max_bytes=budget, threads=2, progress=False) == 4
    assert "4 of 6 images fit" in caplog.text
    assert cache.cached_bytes() == budget
    for f, want in zip(files, expected):
        got = images.read_image(f)
        np.testing.assert_array_equal(got, want)
        got[:] = 0  # a caller may write into what it gets; the cache must not change
    np.testing.assert_array_equal(images.read_image(files[0]), expected[0])
    files[0].unlink()  # served from memory now
    np.testing.assert_array_equal(images.read_image(files[0]), expected[0])


def test_training_with_cache_equals_training_without(synthetic_root: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    finals = []
    for use_cache in (False, True):
        cache.clear()
        cfg = build_config(tiny_config(synthetic_root, tmp_path / f"cache{use_cache}", train={"epochs": 1},
                                       data={"cache": use_cache}))
        caplog.clear()
        with caplog.at_level("INFO", logger="visiontl"):
            train(cfg)
        finals.append(torch.load(tmp_path / f"cache{use_cache}" / "checkpoints" / "last.pt", weights_only=True)["model"])
        filled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data.cache: ")]
        assert filled == (["data.cache: 36 images decoded into memory (0.00 GB)"] if use_cache else [])
        assert not images.CACHE  # emptied when training ends: a notebook that trains again holds no old pixels
    for name in finals[0]:
        assert torch.equal(finals[0][name], finals[1][name]), name


def test_cache_auto_caches_a_set_that_fits_and_says_when_not(synthetic_root: Path, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted(str(f) for f in synthetic_root.rglob("*.png"))
    assert len(files) == 36 and cache.estimated_bytes(files) == 36 * 32 * 32 * 3  # the synthetic set's 32x32 images
    monkeypatch.setattr(cache, "available_memory", lambda: 4e9)
    with caplog.at_level("INFO", logger="visiontl"):
        assert cache.cache_budget("auto", files, max_gb=8.0, processes=2) == pytest.approx(0.5e9)  # 4 GB / 4 / 2
        assert cache.cache_budget("auto", files, max_gb=100e-9, processes=1) is None  # 100 bytes: does not fit
    assert [r.getMessage() for r in caplog.records] == [
        "data.cache auto: 36 images, about 0.00 GB decoded, over the budget of 0.00 GB; decoded per read "
        "(data.cache: true caches what fits)"]
    assert cache.cache_budget(True, files, max_gb=8.0, processes=2) == 8e9  # true: the budget as given
    assert cache.cache_budget(False, files, max_gb=8.0, processes=1) is None
    assert build_config({}).data.cache == "auto"


def test_compile_is_refused_for_detectors() -> None:
    with pytest.raises(ConfigError, match="train.compile is for classification and segmentation"):
        build_config({"task": "detection", "train": {"compile": True}})


@pytest.mark.slow
def test_compiled_training_matches_eager(synthetic_root: Path, tmp_path: Path) -> None:
    """torch.compile trains the same model as eager PyTorch, to float rounding.

    Compiled and eager code sum in different orders (inductor's own kernels vs oneDNN's), so the two runs
    differ by rounding, and how they round depends on the CPU's vector width. Through a network with ReLUs
    and max pooling that rounding is not small: a pre-activation within ~1e-6 of zero can take the other side
    of the kink, which sends a full-size gradient down another path (measured on an AVX-512 CPU with
    resnet18: one ReLU of 4,096 flipped in the first step, and the gradients then differed by up to 33% of
    their largest value, while eager float32 with oneDNN turned off, and compiled float32, both matched a
    float64 run to 2e-5). Which runs agree is then a property of the CPU, not of compile. So the comparison
    uses a backbone that is smooth everywhere (timm's test_convnext: GELU and LayerNorm, no pooling kinks,
    no stochastic depth), where rounding stays rounding: after two SGD steps every tensor differed by at
    most 3.0e-6 of its largest value, measured with ATen's AVX-512, AVX2 and scalar kernels. The tolerance,
    1e-4 of each tensor's largest value, is 30x that; a real difference (a dropped update, other random
    numbers, a wrong kernel) is orders of magnitude larger.
    """
    pytest.importorskip("torch._inductor")
    pytest.importorskip("timm")
    finals = []
    for compiled in (False, True):
        # SGD: Adam's normalised steps would turn float noise near zero gradients into full-size updates
        settings = {"epochs": 1, "max_steps": 2, "optimizer": "sgd", "compile": compiled}
        raw = tiny_config(synthetic_root, tmp_path / f"c{compiled}", train=settings,
                          model={"backbone": "timm:test_convnext"})
        train(build_config(raw))
        finals.append(torch.load(tmp_path / f"c{compiled}" / "checkpoints" / "last.pt", weights_only=True)["model"])
    assert finals[0].keys() == finals[1].keys()  # saved from the plain model: no _orig_mod. prefix
    for name, eager in finals[0].items():
        if eager.is_floating_point():
            scale = eager.abs().max().item()
            torch.testing.assert_close(finals[1][name], eager, rtol=0, atol=1e-4 * scale, msg=name)
        else:
            assert torch.equal(finals[1][name], eager), name
