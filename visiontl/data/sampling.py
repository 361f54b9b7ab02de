"""Reproducible sampling: the order of an epoch and the augmentation seed of every sample depend only on
(seed, epoch, position), never on worker count or on what ran before, so a resumed run sees the same
batches as an uninterrupted one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


def sample_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch * 9_973 + position * 31) % (2**31 - 1)


def split_item(item: int | tuple[int, int]) -> tuple[int, int]:
    """A dataset item is (index, augmentation seed) from `EpochSampler`, or a bare index (seed fixed by it)."""
    if isinstance(item, tuple):
        return item
    return item, sample_seed(0, 0, item + 1)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (dataset index, augmentation seed). Call `set_epoch` before each epoch."""

    def __init__(self, size: int, shuffle: bool, seed: int, subset: int | None = None):
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.subset = subset  # use only the first `subset` positions (overfit mode)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size if self.subset is None else min(self.subset, self.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        for position, index in enumerate(order[: len(self)]):
            yield index, sample_seed(self.seed, self.epoch, position + 1)


class GroupedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of one group each (data.group_aspect_ratio: landscape with landscape), taken in the inner
    sampler's order: an item joins its group's open batch, which is emitted when full. What is left in the
    groups at the end is emitted in sampler order, mixed, so there are always ceil(len(sampler) /
    batch_size) batches, the same on every rank of a distributed run (DDP needs equal batch counts)."""

    def __init__(self, sampler: Sampler, groups: list[int], batch_size: int):
        self.sampler, self.groups, self.batch_size = sampler, groups, batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        open_batches: dict[int, list[tuple[int, Any]]] = {}
        for position, item in enumerate(self.sampler):
            group = self.groups[split_item(item)[0]]
            batch = open_batches.setdefault(group, [])
            batch.append((position, item))
            if len(batch) == self.batch_size:
                yield [it for _, it in batch]
                open_batches[group] = []
        rest = [it for _, it in sorted(pair for batch in open_batches.values() for pair in batch)]
        for start in range(0, len(rest), self.batch_size):
            yield rest[start : start + self.batch_size]
