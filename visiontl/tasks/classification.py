"""Image classification: data, model, loss, metrics, and the scikit-learn heads on frozen features."""

from __future__ import annotations

import hashlib
import logging
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
from visiontl.data.augment import classification_transform
from visiontl.data.classification import (ClassificationDataset, Sample, check_every_class, class_counts,
                                          discover_classes, load_split)
from visiontl.data.device_pipeline import DeviceImages, to_device
from visiontl.data.holdout import Holdout, choose, relative_name
from visiontl.engine import distributed as dist
from visiontl.evaluation.classification import ClassificationMetrics
from visiontl.models.build import build_network
from visiontl.models.classifier import BACKBONE_PREFIX, Classifier
from visiontl.tasks.base import ClosedFormFit

log = logging.getLogger("visiontl")

SKLEARN_HEADS = ("logistic_regression", "linear_svm")


@dataclass
class ClassificationData:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    holdout: Holdout | None = None  # data.val as a fraction: which train images are val
    left_out: list[str] = field(default_factory=list)  # data.on_bad_image=skip: images that failed the checks

    def summary(self) -> str:
        k = len(self.classes)
        tr, va = class_counts(self.train, k), class_counts(self.val, k)
        per_class = ", ".join(f"{c} {a}/{b}" for c, a, b in zip(self.classes, tr, va))
        return f"{len(self.train)} train / {len(self.val)} val images, {k} classes (train/val: {per_class})"


class ClassificationTask:
    name = "classification"
    backbone_prefix = BACKBONE_PREFIX
    fixed_shapes = True  # every image is resized to data.image_size
    log_metrics = ("accuracy", "macro_f1")

    def __init__(self, cfg: Config):
        self.cfg = cfg  # its data.root is what per-image records name files relative to

    def prepare_data(self, cfg: Config, *, val_files: list[str] | None = None,
                     trained: dict[str, Any] | None = None) -> ClassificationData:
        """Both splits, every image checked. `val_files`: a run's own val list (data.val as a fraction;
        resume, evaluate). `trained`: a checkpoint whose classes the data must have; with a named val split,
        only that split is read (evaluate)."""
        d = cfg.data
        if trained is not None and isinstance(d.val, str):
            classes = list(trained["classes"])
            val, left_out = load_split(d, "val", classes)
            return ClassificationData(classes, [], val, left_out=left_out)
        classes = list(trained["classes"]) if trained is not None else discover_classes(d)
        train, left_out = load_split(d, "train", classes)
        holdout = None
        if isinstance(d.val, float):
            root = dataset_root(d)
            holdout = choose([relative_name(s.path, root) for s in train], [{s.label} for s in train], d.val,
                             cfg.train.seed, val_files, str(root / d.train))
            val = [s for s, v in zip(train, holdout.is_val) if v]
            train = [s for s, v in zip(train, holdout.is_val) if not v]
        else:
            val, left_val = load_split(d, "val", classes)
            left_out += left_val
        check_every_class(train, classes, str(dataset_root(d) / d.train))
        return ClassificationData(classes, train, val, holdout, left_out)

    def build_model(self, cfg: Config, backbone: Backbone, classes: list[str]) -> Classifier:
        m = cfg.model
        return build_network(m, backbone, len(classes))

    def datasets(self, cfg: Config, data: ClassificationData, backbone: Backbone, augment: bool) -> tuple[Dataset, Dataset]:
        d = cfg.data

        def transform(train: bool) -> Any:
            return classification_transform(d.augment, d.image_size, backbone.mean, backbone.std, train, d.hflip, d.vflip)

        return ClassificationDataset(data.train, transform(augment)), ClassificationDataset(data.val, transform(False))

    def collate(self, batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return collate(batch)

    def batch_groups(self, dataset: Dataset) -> None:
        return None  # every image is resized to one size: nothing to group

    def checkpoint_extras(self, data: ClassificationData) -> dict[str, Any]:
        return {}

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, labels, _ = batch
        images = _to_device(images, device)
        logits = model(images)
        return F.cross_entropy(logits.float(), labels.to(device, non_blocking=True)), images.shape[0]

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, classes: list[str], autocast: AbstractContextManager,
        sharded: bool = False,
    ) -> dict[str, Any]:
        model.eval()
        metrics = ClassificationMetrics(classes)
        losses = []  # per batch, summed over its images: added up once, in batch order, whoever scored them
        per_batch = []
        sizes = []  # the first batch's image size (none on an empty shard)
        for images, labels, index in loader:
            if not sizes:
                sizes.append(tuple(images.shape[-2:]))
            images = _to_device(images, device)
            labels = labels.to(device, non_blocking=True)
            with autocast:
                logits = model(images).float()
            losses.append(F.cross_entropy(logits, labels, reduction="sum"))
            metrics.update(logits, labels)
            probs = logits.softmax(dim=1)
            per_batch.append((index, labels, probs.gather(1, labels[:, None])[:, 0], probs.argmax(dim=1)))
        loss_sums = torch.stack(losses).double().tolist() if losses else []
        records = self._per_image(loader.dataset, per_batch, classes)
        if sharded:  # this rank's shard of the val set: counts summed over the ranks, the rest joined on rank 0
            metrics.matrix = dist.summed(torch.from_numpy(metrics.matrix)).numpy()
            whole = dist.joined((loss_sums, records, sizes))
            if whole is None:
                return {}  # rank 0 has the whole set's metrics
            loss_sums, records, sizes = whole
        out = metrics.compute()
        out["loss"] = math.fsum(loss_sums) / max(1, len(records))
        size = sizes[0] if sizes else None
        out["protocol"] = {
            "prediction": "argmax over the whole val split (every evaluated image counted once)",
            "averaging": "macro F1: class mean over classes present in ground truth or prediction",
            "eval_image_size": f"{size[0]}x{size[1]} (every image resized to it, aspect ratio not kept)" if size else "no images",
        }
        out["per_image"] = {"metric": "probability the model gives the true class (softmax)", "higher_is_better": True,
                            "images": records}
        return out

    def _per_image(self, dataset: ClassificationDataset, per_batch: list, classes: list[str]) -> list[dict[str, Any]]:
        images = []
        for index, labels, p_true, predicted in per_batch:
            for i, y, p, k in zip(index.tolist(), labels.tolist(), p_true.tolist(), predicted.tolist()):
                images.append({"file": relative_file(dataset.samples[i].path, self.cfg.data.root), "score": p, "index": i,
                               "true": classes[y], "predicted": classes[k], "correct": y == k})
        return images

    @torch.no_grad()
    def render_examples(self, model: nn.Module, dataset: ClassificationDataset, indices: list[int], device: torch.device,
                        autocast: AbstractContextManager, classes: list[str]) -> list[Image.Image]:
        """The image at its own aspect ratio, with "true: X / predicted: Y (p)" under it."""
        from visiontl.data.images import read_image
        from visiontl.visualize import panel_scale, resize_panel, stack, text_strip

        if not indices:
            return []
        model.eval()
        items = [dataset[i] for i in indices]
        with autocast:
            probs = model(_to_device(torch.stack([im for im, _, _ in items]), device)).float().softmax(dim=1).cpu()
        pictures = []
        for (_, label, _), p, index in zip(items, probs, indices):
            array = read_image(dataset.samples[index].path)
            panel = resize_panel(array, panel_scale(array.shape[1], array.shape[0]))
            k = int(p.argmax())
            text = f"true: {classes[label]} / predicted: {classes[k]} ({float(p[k]):.2f})"
            pictures.append(stack([panel, text_strip([text], max(panel.width, 320))]))
        return pictures

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of the logits)."""
        model.eval()
        return model(images).float().softmax(dim=1)

    # -- scikit-learn heads ------------------------------------------------------------------------------

    def fits_in_closed_form(self, cfg: Config) -> bool:
        return cfg.model.head in SKLEARN_HEADS

    def fit_closed_form(self, cfg: Config, model: nn.Module, train: Dataset, run_dir: Path, device: torch.device) -> ClosedFormFit:
        """Extract pooled backbone features once (cached in the run dir), fit the scikit-learn model, and
        fold it (scaler included) into the model's linear head, so the checkpoint is an ordinary model."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        feats, labels = cached_features(model, train, cfg, run_dir / "features", device)
        c = cfg.model.sklearn_c
        if cfg.model.head == "logistic_regression":
            estimator = LogisticRegression(C=c, max_iter=2000)
        else:
            estimator = LinearSVC(C=c, max_iter=20000)
        log.info("fitting %s (C=%g) on %d x %d features", cfg.model.head, c, *feats.shape)
        pipe = make_pipeline(StandardScaler(), estimator).fit(feats, labels)
        linear = model.head[-1]
        fold_linear_head(model, pipe, num_classes=linear.out_features)
        train_acc = float((pipe.predict(feats) == labels).mean())
        return ClosedFormFit({"train_accuracy": train_acc, "num_features": int(feats.shape[1])},
                             linear.weight.numel() + linear.bias.numel())


def collate(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, index = zip(*batch)
    return torch.stack(images), torch.as_tensor(labels), torch.as_tensor(index)


def _to_device(images: torch.Tensor | DeviceImages, device: torch.device) -> torch.Tensor:
    images = to_device(images, device)
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


@torch.no_grad()
def extract_features(model: Classifier, dataset: Dataset, device: torch.device, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    feats, labels = [], []
    for images, y, _ in loader:
        feats.append(model.features(_to_device(images, device)).float().cpu())
        labels.append(y)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def cached_features(model: Classifier, dataset: ClassificationDataset, cfg: Config, folder: Path, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Features keyed by everything that changes them: backbone, weights, image size and sample list."""
    from visiontl.engine.checkpoint import save_checkpoint

    key = hashlib.sha256()
    key.update(f"{cfg.model.backbone}|{cfg.model.weights}|{cfg.data.image_size}".encode())
    for s in dataset.samples:
        key.update(f"{s.path}|{s.label}|{s.path.stat().st_mtime_ns}".encode())
    for p in model.backbone.parameters():  # the weights themselves, cheaply: a checksum per tensor
        key.update(np.float64(p.detach().double().sum().item()).tobytes())
    path = folder / f"train-{key.hexdigest()[:16]}.pt"
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        log.info("features: reusing %s", path)
        return cached["features"].numpy(), cached["labels"].numpy()
    feats, labels = extract_features(model, dataset, device)
    save_checkpoint(path, {"features": torch.from_numpy(feats), "labels": torch.from_numpy(labels)})
    log.info("features: extracted %d x %d, cached at %s", *feats.shape, path)
    return feats, labels


def fold_linear_head(model: Classifier, pipe: Any, num_classes: int) -> None:
    """Write scaler + linear classifier into the last nn.Linear of the head: logits = W' x + b'."""
    scaler, estimator = pipe.steps[0][1], pipe.steps[-1][1]
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    intercept = np.asarray(estimator.intercept_, dtype=np.float64)
    present = np.asarray(estimator.classes_, dtype=np.int64)
    if coef.shape[0] == 1:  # binary: sklearn scores the second class; softmax([0, z]) == sigmoid(z)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.full(num_classes, -1e4)  # classes absent from the training set are never predicted
    weight[present] = coef / scale
    bias[present] = intercept - (coef / scale) @ mean
    linear = model.head[-1]
    linear.weight.data.copy_(torch.from_numpy(weight))
    linear.bias.data.copy_(torch.from_numpy(bias))
