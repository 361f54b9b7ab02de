"""Detection datasets and box-safe augmentation.

Images leave the dataset as float tensors in [0, 1] at their own size: the detector's transform resizes
and normalises them (with the sizes and mean/std stored in the checkpoint), so training, evaluation and
prediction see images the same way. Targets are torchvision's: `boxes` (xyxy pixels) and `labels`
(contiguous, 1..K; 0 is background). Crowd regions are left out of training targets and kept for scoring.
"""

from __future__ import annotations

import difflib
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from visiontl.data.annotations import AnnotationSet, LabelMap
from visiontl.data.images import read_image
from visiontl.data.sampling import split_item
from visiontl.errors import ConfigError

DETECTION_PRESETS = ("none", "light", "standard", "strong")


def _flips(hflip: bool, vflip: bool) -> list[A.BasicTransform]:
    return ([A.HorizontalFlip(p=0.5)] if hflip else []) + ([A.VerticalFlip(p=0.5)] if vflip else [])


def preset_ops(preset: str, hflip: bool, vflip: bool) -> list[A.BasicTransform]:
    if preset not in DETECTION_PRESETS:
        raise ConfigError(f"data.augment: unknown preset {preset!r}; choose one of {', '.join(DETECTION_PRESETS)}")
    if preset == "none":
        return []
    ops = _flips(hflip, vflip)
    if preset == "light":
        return ops
    ops += [
        A.Affine(scale=(0.8, 1.2), translate_percent=(-0.05, 0.05), p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
    ]
    if preset == "strong":
        ops += [
            A.RandomSizedBBoxSafeCrop(height=512, width=512, erosion_rate=0.1, p=0.3),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.2),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.2),
        ]
    return ops


def pipeline_ops(spec: list[dict[str, dict[str, Any]]]) -> list[A.BasicTransform]:
    """`[{HorizontalFlip: {p: 0.5}}, {Affine: {scale: [0.8, 1.2]}}]` -> albumentations transforms, each name
    and argument checked now (one line naming the entry), not at the first batch."""
    ops = []
    for i, entry in enumerate(spec):
        if len(entry) != 1:
            raise ConfigError(f"data.pipeline.{i}: write one transform per entry as {{Name: {{arg: value}}}}, got {entry}")
        (name, kwargs), = entry.items()
        cls = getattr(A, name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            names = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
            hint = difflib.get_close_matches(name, names, n=1)
            raise ConfigError(f"data.pipeline.{i}: unknown albumentations transform {name!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        try:
            ops.append(cls(**(kwargs or {})))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"data.pipeline.{i}: {name}({kwargs}): {first}") from None
    return ops


def detection_transform(ops: list[A.BasicTransform], min_visibility: float) -> A.Compose | None:
    """The box-aware pipeline, or None when there is nothing to do (evaluation, preset none)."""
    if not ops:
        return None
    return A.Compose(ops, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "keep"],
                                                   min_visibility=min_visibility, clip=True))


class DetectionDataset(Dataset):
    """Items: (image CHW float [0, 1], target dict, image id). Indexed by (index, augmentation seed) pairs."""

    def __init__(self, aset: AnnotationSet, label_map: LabelMap, transform: A.Compose | None, masks: bool = False):
        self.aset = aset
        self.label_map = label_map
        self.transform = transform
        self.masks = masks  # also return per-instance binary masks (Mask R-CNN targets)
        groups = aset.by_image()
        self.items = [(img, [i for i in groups[img.id] if not i.iscrowd]) for img in aset.images]

    def __len__(self) -> int:
        return len(self.items)

    def image_files(self) -> list[str]:
        return [str(self.aset.image_path(record)) for record, _ in self.items]

    def file_of(self, image_id: int) -> str:
        """The file of an image id (what batches carry)."""
        record = next(r for r, _ in self.items if r.id == image_id)
        return str(self.aset.image_path(record))

    def aspect_groups(self) -> list[int]:
        """0 for landscape (or square) images, 1 for portrait: what data.group_aspect_ratio batches by."""
        return [int(record.height > record.width) for record, _ in self.items]

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        index, seed = split_item(item)
        record, instances = self.items[index]
        image = read_image(self.aset.image_path(record))
        boxes = np.array([i.xyxy for i in instances], dtype=np.float32).reshape(-1, 4)
        labels = [self.label_map.label(i.category_id) for i in instances]
        masks = None
        if self.masks:
            from visiontl.data.masks import instance_mask

            h, w = image.shape[:2]
            where = f"{self.aset.report.source}: {record.file_name}"
            masks = [instance_mask(i, h, w, f"{where}: annotation {i.id}").astype(np.uint8) for i in instances]
        if self.transform is not None:
            self.transform.set_random_seed(seed)
            extra = {"masks": masks} if masks else {}
            # indices travel as a label so masks of boxes dropped by a crop can be dropped too
            out = self.transform(image=image, bboxes=boxes, labels=labels, keep=list(range(len(labels))), **extra)
            image, boxes, labels = out["image"], np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4), out["labels"]
            if masks:
                masks = [np.asarray(out["masks"][int(k)]) for k in out["keep"]]
        tensor = unit_tensor(image)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.as_tensor(list(labels), dtype=torch.int64)}
        if masks is not None:
            h, w = image.shape[:2]
            target["masks"] = (torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w)).to(torch.uint8)
        return tensor, target, record.id


def unit_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [0, 1]: what torchvision's detectors take (they normalise themselves)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def collate_detection(batch: list[Any]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[int]]:
    images, targets, ids = zip(*batch)
    return list(images), list(targets), list(ids)
