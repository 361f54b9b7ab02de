"""Semantic segmentation datasets: image + class-id map pairs, from label masks or from COCO polygons/RLE.

Training samples are augmented and cut to a square crop of `data.image_size` (albumentations moves the
mask with the image); validation images keep their own size. A batch is padded to its largest image
(rounded up to the network stride): images with zeros, masks with `ignore_index`, so padding is never
trained on or scored.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset

from visiontl.data.annotations import AnnotationSet, LabelMap
from visiontl.data.images import read_image
from visiontl.data.masks import MaskSample, coco_semantic_mask, read_mask
from visiontl.data.sampling import split_item
from visiontl.errors import ConfigError

SEGMENTATION_PRESETS = ("none", "light", "standard", "strong")


def segmentation_transform(preset: str, crop: int | None, mean: tuple[float, ...], std: tuple[float, ...],
                           ignore_index: int, hflip: bool, vflip: bool) -> A.Compose:
    """Train pipeline (crop given) or eval pipeline (crop None: normalise only)."""
    if preset not in SEGMENTATION_PRESETS:
        raise ConfigError(f"data.augment: unknown preset {preset!r}; choose one of {', '.join(SEGMENTATION_PRESETS)}")
    ops: list[A.BasicTransform] = []
    if crop is not None:
        if preset in ("standard", "strong"):
            ops.append(A.RandomScale(scale_limit=(-0.3, 0.3) if preset == "strong" else (-0.2, 0.2), p=1.0))
        ops += [
            A.PadIfNeeded(min_height=crop, min_width=crop, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
            A.RandomCrop(crop, crop),
        ]
        if preset != "none":
            ops += ([A.HorizontalFlip(p=0.5)] if hflip else []) + ([A.VerticalFlip(p=0.5)] if vflip else [])
        if preset in ("standard", "strong"):
            ops.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5))
        if preset == "strong":
            ops.append(A.GaussianBlur(blur_limit=(3, 5), p=0.2))
    ops += [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(ops)


class SegmentationDataset(Dataset):
    """Items: (image CHW normalised, mask HxW int64, index). From mask files or from a COCO set."""

    def __init__(self, transform: A.Compose, ignore_index: int, samples: list[MaskSample] | None = None,
                 palette: list[tuple[int, int, int]] | None = None, coco: AnnotationSet | None = None,
                 label_map: LabelMap | None = None):
        self.transform = transform
        self.ignore_index = ignore_index
        self.samples = samples
        self.palette = palette
        self.coco = coco
        self.label_of = {c: label_map.label(c) for c in label_map.category_ids} if label_map is not None else {}

    def __len__(self) -> int:
        return len(self.samples) if self.samples is not None else len(self.coco.images)

    def image_files(self) -> list[str]:
        return [self.names(i) for i in range(len(self))]

    def file_of(self, index: int) -> str:
        return self.names(index)

    def names(self, index: int) -> str:
        return str(self.samples[index].image) if self.samples is not None else str(self.coco.image_path(self.coco.images[index]))

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load_image(index), self.load_mask(index)

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.names(index))

    def load_mask(self, index: int) -> np.ndarray:
        if self.samples is not None:
            return read_mask(self.samples[index].mask, self.palette, self.ignore_index)
        return coco_semantic_mask(self.coco, self.coco.images[index].id, self.label_of, self.ignore_index)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, seed = split_item(item)
        image, mask = self.load(index)
        self.transform.set_random_seed(seed)
        out = self.transform(image=image, mask=mask)
        return out["image"], torch.as_tensor(np.asarray(out["mask"]), dtype=torch.int64), index


class PadCollate:
    """Stack a batch padded to its largest image, rounded up to `stride` (masks padded with ignore_index)."""

    def __init__(self, ignore_index: int, stride: int = 32):
        self.ignore_index = ignore_index
        self.stride = stride

    def __call__(self, batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, masks, index = zip(*batch)
        h, w = self.padded_size([im.shape[-2:] for im in images])
        out_images = images[0].new_zeros(len(images), images[0].shape[0], h, w)
        for k, im in enumerate(images):
            out_images[k, :, : im.shape[-2], : im.shape[-1]] = im
        return out_images, self.pad_masks(masks, (h, w)), torch.as_tensor(index)

    def padded_size(self, sizes: Sequence[Sequence[int]]) -> tuple[int, int]:
        """The batch's largest height and width (of `sizes`, (height, width) each), rounded up to the stride."""
        return (math.ceil(max(h for h, _ in sizes) / self.stride) * self.stride,
                math.ceil(max(w for _, w in sizes) / self.stride) * self.stride)

    def pad_masks(self, masks: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The masks stacked at `size`, ignore_index beyond each one's own size."""
        out = torch.full((len(masks), *size), self.ignore_index, dtype=torch.int64)
        for k, m in enumerate(masks):
            out[k, : m.shape[-2], : m.shape[-1]] = m
        return out
