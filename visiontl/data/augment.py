"""Named augmentation presets, as albumentations pipelines. Normalisation comes from the backbone."""

from __future__ import annotations

import albumentations as A
from albumentations.pytorch import ToTensorV2

PRESETS = ("none", "light", "standard")


def classification_transform(
    preset: str,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    train: bool,
    hflip: bool = True,
    vflip: bool = False,
) -> A.Compose:
    """The train pipeline of `preset`, or the eval pipeline (resize + normalise) when `train` is False."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(PRESETS)}")
    size = (image_size, image_size)
    ops: list[A.BasicTransform] = []
    if not train or preset == "none":
        ops.append(A.Resize(*size))
    elif preset == "light":
        ops += [A.Resize(*size), *_flips(hflip, vflip)]
    else:
        ops += [
            A.RandomResizedCrop(size=size, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3)),
            *_flips(hflip, vflip),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        ]
    ops += [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(ops)


def _flips(hflip: bool, vflip: bool) -> list[A.BasicTransform]:
    return ([A.HorizontalFlip(p=0.5)] if hflip else []) + ([A.VerticalFlip(p=0.5)] if vflip else [])
