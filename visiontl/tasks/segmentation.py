"""Semantic segmentation: mask or COCO data, U-Net / FPN / DeepLabV3+ models, losses, mIoU, prediction."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiontl.backbones import Backbone
from visiontl.config import Config
from visiontl.data import dataset_root, relative_file
from visiontl.data.annotations import AnnotationSet, LabelMap, ReadReport
from visiontl.data.device_pipeline import to_device
from visiontl.data.holdout import Holdout, choose, relative_name
from visiontl.data.masks import MaskSample, check_pairs, find_pairs
from visiontl.data.segmentation import PadCollate, SegmentationDataset, segmentation_transform
from visiontl.engine import distributed as dist
from visiontl.errors import ConfigError, DataError
from visiontl.evaluation.per_image import image_confusions, segmentation_image_scores
from visiontl.evaluation.segmentation import SegmentationMetrics
from visiontl.models.build import build_network
from visiontl.models.segmentation import BACKBONE_PREFIX
from visiontl.tasks.base import ClosedFormFit


@dataclass
class SegmentationData:
    classes: list[str]
    ignore_index: int
    train: list[MaskSample] | AnnotationSet
    val: list[MaskSample] | AnnotationSet
    label_map: LabelMap | None = None
    notes: list[str] = field(default_factory=list)
    holdout: Holdout | None = None  # data.val as a fraction: which train images are val
    left_out: list[str] = field(default_factory=list)  # data.on_bad_image=skip: images that failed the checks

    def summary(self) -> str:
        return (f"{_count(self.train)} train / {_count(self.val)} val images, {len(self.classes)} classes "
                f"({', '.join(self.classes)}), ignore_index {self.ignore_index}" + "".join(f"; {x}" for x in self.notes))


def _count(split: list[MaskSample] | AnnotationSet) -> int:
    return len(split) if isinstance(split, list) else len(split.images)


class SegmentationTask:
    name = "segmentation"
    backbone_prefix = BACKBONE_PREFIX
    fixed_shapes = True  # training crops are data.image_size squares
    log_metrics = ("mIoU", "pixel_accuracy")

    def __init__(self, cfg: Config):
        self.cfg = cfg  # its data.root is what per-image records name files relative to
        self._collate = PadCollate(cfg.data.ignore_index)
        self.loss_fn = SegmentationLoss(cfg.model.loss, cfg.data.ignore_index, cfg.model.class_weights)

    def prepare_data(self, cfg: Config, *, val_files: list[str] | None = None,
                     trained: dict[str, Any] | None = None) -> SegmentationData:
        """Both splits, checked. `val_files`: a run's own val list (data.val as a fraction; resume, evaluate).
        `trained`: a checkpoint whose classes the data must fit; with a named val split, only that split is
        read (evaluate)."""
        d = cfg.data
        root = dataset_root(d)
        val_only = trained is not None and isinstance(d.val, str)
        if d.format == "coco":
            return self._prepare_coco(cfg, root, val_files, trained if val_only else None)
        if not d.classes:
            raise ConfigError("data.classes: name the classes of a masks dataset, in class-id order")
        train = [] if val_only else find_pairs(root, d.train, d.train_masks)
        holdout = None
        if isinstance(d.val, float) and not val_only:
            # stratifying would decode every mask to learn its classes: a seeded shuffle is the split here
            holdout = choose([relative_name(x.image, root) for x in train], [set() for _ in train], d.val,
                             cfg.train.seed, val_files, str(root / d.train))
            val = [x for x, v in zip(train, holdout.is_val) if v]
            train = [x for x, v in zip(train, holdout.is_val) if not v]
        else:
            val = find_pairs(root, str(d.val), d.val_masks)
        train, left_train = check_pairs(train, len(d.classes), d.ignore_index, d.palette, d.on_bad_image)
        val, left_val = check_pairs(val, len(d.classes), d.ignore_index, d.palette, d.on_bad_image)
        if not val:
            raise DataError(f"{root / str(d.val)}: no val images left")
        return SegmentationData(list(d.classes), d.ignore_index, train, val, holdout=holdout,
                                left_out=left_train + left_val)

    def _prepare_coco(self, cfg: Config, root: Path, val_files: list[str] | None,
                      trained: dict[str, Any] | None) -> SegmentationData:
        from visiontl.data import read_annotation_split
        from visiontl.data.check import check_images
        from visiontl.tasks.detection import _holdout, subset

        d = cfg.data
        holdout = None
        if trained is not None:
            label_map = LabelMap.from_dict(trained["label_map"])
            train = AnnotationSet([], [], [], None, ReadReport(source="the checkpoint's classes"))
            val = read_annotation_split(d, "val")
        else:
            train = read_annotation_split(d, "train")
            if isinstance(d.val, float):
                holdout = _holdout(train, root, d.val, cfg.train.seed, val_files)
                val = subset(train, {img.id for img, v in zip(train.images, holdout.is_val) if v})
                train = subset(train, {img.id for img, v in zip(train.images, holdout.is_val) if not v})
            else:
                val = read_annotation_split(d, "val")
            label_map = LabelMap.from_set(train)
        # masks are painted in the annotation's pixels: the sizes must agree
        train, left_train = check_images(train, d.on_bad_image)
        val, left_val = check_images(val, d.on_bad_image)
        return SegmentationData(["background", *label_map.names], d.ignore_index, train, val, label_map, holdout=holdout,
                                left_out=left_train + left_val)

    def build_model(self, cfg: Config, backbone: Backbone, classes: list[str]) -> nn.Module:
        if cfg.model.class_weights is not None and len(cfg.model.class_weights) != len(classes):
            raise ConfigError(f"model.class_weights: {len(classes)} classes need {len(classes)} weights, "
                              f"got {len(cfg.model.class_weights)}")
        return build_network(cfg.model, backbone, len(classes))

    def datasets(self, cfg: Config, data: SegmentationData, backbone: Backbone, augment: bool) -> tuple[Dataset, Dataset]:
        d = cfg.data
        train_tf = segmentation_transform(d.augment if augment else "none", d.image_size, backbone.mean, backbone.std,
                                          d.ignore_index, d.hflip, d.vflip)
        val_tf = segmentation_transform("none", None, backbone.mean, backbone.std, d.ignore_index, d.hflip, d.vflip)

        def make(split: Any, tf: Any) -> SegmentationDataset:
            if isinstance(split, AnnotationSet):
                return SegmentationDataset(tf, d.ignore_index, coco=split, label_map=data.label_map)
            return SegmentationDataset(tf, d.ignore_index, samples=split, palette=d.palette)

        return make(data.train, train_tf), make(data.val, val_tf)

    def collate(self, batch: list[Any]) -> Any:
        return self._collate(batch)

    def batch_groups(self, dataset: Dataset) -> None:
        return None  # training crops are one size: nothing to group

    def checkpoint_extras(self, data: SegmentationData) -> dict[str, Any]:
        return {"label_map": data.label_map.to_dict()} if data.label_map is not None else {}

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, masks, _ = batch
        images = to_device(images, device)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images).float()
        return self.loss_fn(logits, masks.to(device, non_blocking=True)), images.shape[0]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device, classes: list[str],
                 autocast: AbstractContextManager, sharded: bool = False) -> dict[str, Any]:
        model.eval()
        ignore = loader.dataset.ignore_index
        metrics = SegmentationMetrics(classes, ignore)
        losses, pixels = [], []  # per batch with labelled pixels: added up once, in batch order, whoever scored them
        records = []
        for images, masks, index in loader:
            images, masks = to_device(images, device), masks.to(device, non_blocking=True)
            with autocast:
                logits = model(images).float()
            labelled = (masks != ignore).sum()
            if labelled:
                losses.append(F.cross_entropy(logits, masks, ignore_index=ignore, reduction="sum"))
                pixels.append(int(labelled))
            metrics.update(logits, masks)  # checks the labels, so the per-image counts below may trust them
            confusions = image_confusions(logits.argmax(dim=1), masks, len(classes), ignore).cpu()
            records += self._image_records(loader.dataset, index, confusions)
        loss_sums = torch.stack(losses).double().tolist() if losses else []
        if sharded:  # this rank's shard of the val set: counts summed over the ranks, the rest joined on rank 0
            metrics.matrix = dist.summed(metrics.counts())
            whole = dist.joined((loss_sums, pixels, records))
            if whole is None:
                return {}  # rank 0 has the whole set's metrics
            loss_sums, pixels, records = whole
        out = metrics.compute()
        out["loss"] = math.fsum(loss_sums) / max(1, sum(pixels))
        out["protocol"] = {
            "counting": "confusion matrix over every labelled pixel of the split",
            "ignore_index": f"{ignore} (pixels with this label, and batch padding, are not scored)",
            "averaging": "class mean over classes present in ground truth or prediction",
            "eval_image_size": "each image at its own size (batches padded to a multiple of 32, padding not scored)",
        }
        out["per_image"] = {"metric": "the image's own mean IoU over the classes present in its ground truth or "
                                      "prediction (labelled pixels only; 1.0 when none is labelled)",
                            "higher_is_better": True, "images": records}
        return out

    def _image_records(self, dataset: SegmentationDataset, index: torch.Tensor,
                       confusions: torch.Tensor) -> list[dict[str, Any]]:
        miou, accuracy = segmentation_image_scores(confusions.numpy())
        return [{"file": relative_file(dataset.names(i), self.cfg.data.root), "score": m, "index": i,
                 "pixel_accuracy": a}
                for i, m, a in zip(index.tolist(), miou.tolist(), accuracy.tolist())]

    @torch.no_grad()
    def render_examples(self, model: nn.Module, dataset: SegmentationDataset, indices: list[int], device: torch.device,
                        autocast: AbstractContextManager, classes: list[str]) -> list[Image.Image]:
        """Ground truth and predicted label maps as colour overlays side by side, with a legend of the classes
        shown. The whole image is predicted as validation does (own size, padded), also in overfit mode, where
        the scored items were training crops."""
        from visiontl.visualize import (class_color, color_legend, label_overlay, panel_scale, resize_labels,
                                        resize_panel, side_by_side, stack)

        model.eval()
        ignore = dataset.ignore_index
        transform = segmentation_transform("none", None, model.backbone.mean, model.backbone.std, ignore, False, False)
        pad = PadCollate(ignore)
        pictures = []
        for index in indices:
            array, mask = dataset.load(index)
            image = pad([(transform(image=array)["image"], torch.from_numpy(mask), index)])[0]
            with autocast:
                logits = model(image.to(device)).float()
            h, w = mask.shape
            pred = logits.argmax(dim=1)[0, :h, :w].cpu().numpy()
            base = resize_panel(array, panel_scale(w, h))
            size = base.size
            truth = label_overlay(np.asarray(base), resize_labels(mask, size), ignore_index=ignore)
            guess = label_overlay(np.asarray(base), resize_labels(pred, size))
            pair = side_by_side([Image.fromarray(truth), Image.fromarray(guess)], ["ground truth", "prediction"])
            shown = sorted(set(np.unique(mask).tolist()) - {ignore} | set(np.unique(pred).tolist()))
            legend = color_legend([(classes[c], class_color(c)) for c in shown if 0 <= c < len(classes)], pair.width)
            pictures.append(stack([pair, legend]))
        return pictures

    def fits_in_closed_form(self, cfg: Config) -> bool:
        return False

    def fit_closed_form(self, *args: Any) -> ClosedFormFit:
        raise NotImplementedError("segmentation heads train with gradient steps")


class SegmentationLoss(nn.Module):
    """Cross-entropy, Dice, focal, or the sum of cross-entropy and one of the others; ignore_index skipped."""

    def __init__(self, kind: str, ignore_index: int, class_weights: list[float] | None = None):
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

        self.terms = kind.split("+")
        self.ignore_index = ignore_index
        self.register_buffer("weight", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None)
        self.dice = DiceLoss("multiclass", ignore_index=ignore_index, class_weights=class_weights) if "dice" in self.terms else None
        self.focal = FocalLoss("multiclass", ignore_index=ignore_index, class_weights=class_weights) if "focal" in self.terms else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        if "ce" in self.terms:
            weight = self.weight.to(logits.device) if self.weight is not None else None
            total = total + F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index)
        if self.dice is not None:
            total = total + self.dice(logits, target)
        if self.focal is not None:
            total = total + self.focal(logits, target)
        return total

