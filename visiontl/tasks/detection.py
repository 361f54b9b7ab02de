"""Object detection: COCO / VOC / YOLO data, Faster R-CNN and SSD models, COCO evaluation, prediction."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from visiontl.backbones import Backbone
from visiontl.config import Config
from visiontl.data import dataset_root, read_annotation_split, relative_file, rle
from visiontl.data.annotations import AnnotationSet, Category, LabelMap, ReadReport
from visiontl.data.detection import (
    DetectionDataset,
    collate_detection,
    detection_transform,
    pipeline_ops,
    preset_ops,
)
from visiontl.data.check import check_images
from visiontl.data.formats.registry import get_format
from visiontl.data.holdout import Holdout, choose, relative_name
from visiontl.engine import distributed as dist
from visiontl.errors import CheckpointError, DataError
from visiontl.evaluation.coco import evaluate_coco
from visiontl.evaluation.detection_confusion import detection_confusion
from visiontl.evaluation.per_image import detection_image_scores, display_threshold
from visiontl.models.build import build_network
from visiontl.models.detection import BACKBONE_PREFIX
from visiontl.tasks.base import ClosedFormFit

log = logging.getLogger("visiontl")

CONFUSION_IOU = 0.5  # the IoU a detection needs to count as found in the confusion matrix and per-image F1


@dataclass
class DetectionData:
    train: AnnotationSet
    val: AnnotationSet
    label_map: LabelMap
    dropped_empty: int = 0
    holdout: Holdout | None = None  # data.val as a fraction: which train images are val
    left_out: list[str] = field(default_factory=list)  # data.on_bad_image=skip: images that failed the checks

    @property
    def classes(self) -> list[str]:
        return list(self.label_map.names)

    def summary(self) -> str:
        counts = self.train.category_counts()
        empty = sum(1 for insts in self.train.by_image().values() if not insts)
        per_class = ", ".join(f"{n} {counts.get(c, 0)}" for c, n in zip(self.label_map.category_ids, self.label_map.names))
        negatives = f"{empty} without objects kept as negatives" if not self.dropped_empty else f"{self.dropped_empty} without objects dropped"
        parts = [f"{len(self.train.images)} train / {len(self.val.images)} val images ({negatives}), "
                 f"{len(self.train.instances)} train boxes, {self.label_map.num_classes} classes ({per_class})"]
        for split, aset in (("train", self.train), ("val", self.val)):
            parts += [f"{split}: {line}" for line in aset.report.lines()]
        return "; ".join(parts)


def read_split(cfg: Config, split: str, classes: list[str] | None) -> AnnotationSet:
    return read_annotation_split(cfg.data, split, classes)



def align_categories(val: AnnotationSet, train: AnnotationSet) -> AnnotationSet:
    """Give `val` the train split's category ids, matching by name (for formats whose ids are the reader's)."""
    ids = {c.name: c.id for c in train.categories}
    unknown = sorted({c.name for c in val.categories if c.name not in ids and any(
        i.category_id == c.id for i in val.instances)})
    if unknown:
        raise DataError(f"{val.report.source}: classes {unknown} do not occur in the train split "
                        f"({train.report.source}: {sorted(ids)})")
    remap = {c.id: ids[c.name] for c in val.categories if c.name in ids}
    for inst in val.instances:
        inst.category_id = remap[inst.category_id]
    val.categories = list(train.categories)
    return val


def _same_categories(train: AnnotationSet, val: AnnotationSet) -> None:
    names = {c.id: c.name for c in train.categories}
    for c in val.categories:
        if c.id in names and names[c.id] != c.name:
            raise DataError(f"{val.report.source}: category id {c.id} is {c.name!r} here but {names[c.id]!r} in "
                            f"{train.report.source}")
    unknown = sorted({i.category_id for i in val.instances} - set(names))
    if unknown:
        raise DataError(f"{val.report.source}: category ids {unknown} do not occur in the train split's categories")


def _holdout(train: AnnotationSet, root: Path, fraction: float, seed: int, recorded: list[str] | None) -> Holdout:
    classes_of: dict[int, set[int]] = {img.id: set() for img in train.images}
    for a in train.instances:
        if not a.iscrowd:
            classes_of[a.image_id].add(a.category_id)
    names = [relative_name(train.image_path(img), root) for img in train.images]
    return choose(names, [classes_of[img.id] for img in train.images], fraction, seed, recorded,
                  str(train.report.source))


def subset(aset: AnnotationSet, image_ids: set[int]) -> AnnotationSet:
    return AnnotationSet(aset.categories, [i for i in aset.images if i.id in image_ids],
                         [a for a in aset.instances if a.image_id in image_ids], aset.image_root, aset.report)


class DetectionTask:
    name = "detection"
    backbone_prefix = BACKBONE_PREFIX
    fixed_shapes = False  # images keep their own sizes and every new size would be re-tuned
    log_metrics: tuple[str, ...] = ("bbox/AP", "bbox/AP50")
    iou_types: tuple[str, ...] = ("bbox",)
    masks = False

    def __init__(self, cfg: Config):
        self.cfg = cfg  # its data.root is what per-image records name files relative to

    def prepare_data(self, cfg: Config, *, val_files: list[str] | None = None,
                     trained: dict[str, Any] | None = None) -> DetectionData:
        """Both splits, checked. `val_files`: a run's own val list (data.val as a fraction; resume, evaluate).
        `trained`: a checkpoint whose label map the data must fit; with a named val split, only that split is
        read (evaluate)."""
        d = cfg.data
        holdout = None
        if trained is not None and isinstance(d.val, str):
            label_map = LabelMap.from_dict(trained["label_map"])
            train = AnnotationSet([Category(c, n) for c, n in zip(label_map.category_ids, label_map.names)], [], [],
                                  None, ReadReport(source="the checkpoint's classes"))
            val = self._read_val(cfg, train)
        else:
            train = read_split(cfg, "train", d.classes)
            if isinstance(d.val, float):
                holdout = _holdout(train, dataset_root(d), d.val, cfg.train.seed, val_files)
                val = subset(train, {img.id for img, v in zip(train.images, holdout.is_val) if v})
                train = subset(train, {img.id for img, v in zip(train.images, holdout.is_val) if not v})
            else:
                val = self._read_val(cfg, train)
            label_map = (LabelMap.from_set(train) if d.classes is None else _label_map_for(train, d.classes))
        dropped = 0
        if d.drop_empty and train.images:
            keep = {a.image_id for a in train.instances if not a.iscrowd}
            dropped = len(train.images) - len(keep)
            train = subset(train, keep)
        train, left_train = check_images(train, d.on_bad_image)
        val, left_val = check_images(val, d.on_bad_image)
        if not train.images and trained is None:
            raise DataError(f"{train.report.source}: no training images")
        if not val.images:
            raise DataError(f"{val.report.source}: no val images")
        return DetectionData(train, val, label_map, dropped, holdout, left_train + left_val)

    def _read_val(self, cfg: Config, train: AnnotationSet) -> AnnotationSet:
        """The named val split, with the train split's category ids."""
        val = read_split(cfg, "val", [c.name for c in train.categories] if cfg.data.format == "voc" else None)
        if get_format(cfg.data.format).named_categories:
            val = align_categories(val, train)
        _same_categories(train, val)
        return val

    def build_model(self, cfg: Config, backbone: Backbone, classes: list[str]) -> nn.Module:
        m = cfg.model
        model = build_network(m, backbone, len(classes))  # mask_rcnn: the arch of instance_segmentation
        if m.weights not in ("imagenet", "none"):
            _load_detector_checkpoint(model, Path(m.weights))
        return model

    def datasets(self, cfg: Config, data: DetectionData, backbone: Backbone, augment: bool) -> tuple[Dataset, Dataset]:
        d = cfg.data
        ops = pipeline_ops(d.pipeline) if d.pipeline is not None else preset_ops(d.augment, d.hflip, d.vflip)
        train_tf = detection_transform(ops if augment else [], d.min_visibility)
        val_tf = detection_transform([], d.min_visibility)
        return (DetectionDataset(data.train, data.label_map, train_tf, self.masks),
                DetectionDataset(data.val, data.label_map, val_tf, self.masks))

    def collate(self, batch: list[Any]) -> Any:
        return collate_detection(batch)

    def batch_groups(self, dataset: DetectionDataset) -> list[int] | None:
        """data.group_aspect_ratio: landscape images batched with landscape, portrait with portrait."""
        return dataset.aspect_groups() if self.cfg.data.group_aspect_ratio else None

    def checkpoint_extras(self, data: DetectionData) -> dict[str, Any]:
        return {"label_map": data.label_map.to_dict()}

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, targets, _ = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        return sum(losses.values()), len(images)

    @torch.no_grad()
    def detect(self, model: nn.Module, images: list[torch.Tensor], device: torch.device,
               autocast: AbstractContextManager) -> list[dict[str, torch.Tensor]]:
        model.eval()
        with autocast:
            outputs = model([im.to(device, non_blocking=True) for im in images])
        return [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs]

    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device, classes: list[str],
                 autocast: AbstractContextManager, sharded: bool = False) -> dict[str, Any]:
        dataset: DetectionDataset = loader.dataset
        label_map = dataset.label_map
        results, seen = [], []
        for images, _, ids in loader:
            for image_id, out in zip(ids, self.detect(model, images, device, autocast)):
                seen.append(image_id)
                results += _to_results(image_id, out, label_map)
        if sharded:  # this rank's shard of the val set: the detections are gathered and scored once, on rank 0
            whole = dist.joined((results, seen))
            if whole is None:
                return {}
            results, seen = whole
        gt = subset(dataset.aset, set(seen))
        gt = AnnotationSet([c for c in gt.categories if c.id in label_map.category_ids], gt.images,
                           [a for a in gt.instances if a.category_id in label_map.category_ids], gt.image_root, gt.report)
        metrics: dict[str, Any] = {}
        raws = {}
        for iou_type in self.iou_types:
            scores, raw = evaluate_coco(gt, results, iou_type)
            metrics.update(scores)
            raws.update({f"{iou_type}_{k}": v for k, v in raw.items()})
        metrics["num_images"] = len(set(seen))
        metrics["num_detections"] = len(results)
        model_threshold = model_score_threshold(model)
        threshold = display_threshold(self.cfg.model.display_threshold, model_threshold)
        category_ids = list(label_map.category_ids)
        raws["bbox_confusion"] = detection_confusion(gt, results, category_ids, CONFUSION_IOU, threshold)
        raws["bbox_confusion_iou"] = np.float64(CONFUSION_IOU)
        raws["bbox_confusion_score"] = np.float64(threshold)
        raws["max_detection_score"] = np.float64(max((r["score"] for r in results), default=0.0))
        raws["class_names"] = np.array(label_map.names, dtype=str)  # fixed-width unicode: loads without pickle
        metrics["raw"] = raws
        first = self.iou_types[0]  # every IoU type is scored with the same COCO parameters
        iou = np.asarray(raws[f"{first}_iou_thresholds"])
        metrics["protocol"] = {
            "iou_types": ", ".join(self.iou_types),
            "iou_thresholds": f"{iou[0]:.2f}:{iou[1] - iou[0]:.2f}:{iou[-1]:.2f} ({len(iou)})" if len(iou) > 1 else f"{iou[0]:.2f}",
            "recall_points": str(len(raws[f"{first}_rec_thresholds"])),
            "max_detections": ", ".join(str(int(m)) for m in raws[f"{first}_max_dets"]),
            "area_ranges": "small < 32² ≤ medium < 96² ≤ large (pixels, by annotation area)",
            "crowd": "iscrowd regions neither rewarded nor penalised",
            "eval_image_size": eval_image_size(model),
            "score_threshold": f"{model_threshold:g} for AP (every detection the model keeps); {threshold:g} for the "
                               f"per-image F1, the confusion matrix (IoU {CONFUSION_IOU:g}) and the gallery",
        }
        scores = detection_image_scores(gt, results, category_ids, threshold, CONFUSION_IOU)
        position = {record.id: i for i, (record, _) in enumerate(dataset.items)}
        metrics["per_image"] = {
            "metric": f"F1 at IoU {CONFUSION_IOU:g} of the detections scoring at least {threshold:g}, matched greedily "
                      "by score to ground truth of the same class (crowd regions ignored); 1.0 for an image with "
                      "no ground truth and no detections",
            "higher_is_better": True,
            "images": [{"file": relative_file(gt.image_path(record), self.cfg.data.root), "score": scores[record.id]["score"],
                        "index": position[record.id], **scores[record.id]} for record in gt.images],
        }
        return metrics

    def render_examples(self, model: nn.Module, dataset: DetectionDataset, indices: list[int], device: torch.device,
                        autocast: AbstractContextManager, classes: list[str]) -> list[Image.Image]:
        """Ground-truth boxes (crowd regions marked) beside the detections scoring at least the display threshold."""
        from visiontl.visualize import draw_boxes, panel_scale, resize_panel, side_by_side

        threshold = display_threshold(self.cfg.model.display_threshold, model_score_threshold(model))
        label_map = dataset.label_map
        pictures = []
        for index in indices:
            image, target, image_id = dataset[index]
            out = self.detect(model, [image], device, autocast)[0]
            keep = out["scores"] >= threshold
            array = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            scale = panel_scale(array.shape[1], array.shape[0])
            base = resize_panel(array, scale)
            crowd = [i for i in dataset.aset.instances
                     if i.image_id == image_id and i.iscrowd and i.category_id in label_map.category_ids]
            gt_labels = target["labels"].tolist() + [label_map.label(i.category_id) for i in crowd]
            gt_boxes = np.concatenate([target["boxes"].numpy().reshape(-1, 4),
                                       np.array([i.xyxy for i in crowd], dtype=np.float32).reshape(-1, 4)])
            gt_names = [label_map.name(k) for k in gt_labels[: len(target["labels"])]]
            gt_names += [f"{label_map.name(k)} (crowd)" for k in gt_labels[len(target["labels"]):]]
            truth = draw_boxes(base, gt_boxes * scale, gt_names, color_keys=[k - 1 for k in gt_labels])
            labels = out["labels"][keep].tolist()
            guess = draw_boxes(base, out["boxes"][keep].numpy() * scale, [label_map.name(k) for k in labels],
                               out["scores"][keep].tolist(), color_keys=[k - 1 for k in labels])
            pictures.append(side_by_side([truth, guess], ["ground truth", f"prediction (score >= {threshold:g})"]))
        return pictures

    def fits_in_closed_form(self, cfg: Config) -> bool:
        return False

    def fit_closed_form(self, *args: Any) -> ClosedFormFit:
        raise NotImplementedError("detection heads train with gradient steps")


def model_score_threshold(model: nn.Module) -> float:
    """The score below which the detector drops detections (Faster/Mask R-CNN: its RoI heads; SSD: itself)."""
    heads = getattr(model, "roi_heads", None)
    return float(heads.score_thresh if heads is not None else model.score_thresh)


def eval_image_size(model: nn.Module) -> str:
    """How the detector's own transform resizes images, in words."""
    t = model.transform
    if t.fixed_size is not None:
        return f"{t.fixed_size[0]}x{t.fixed_size[1]} (every image resized to it, aspect ratio not kept)"
    shorter = "/".join(str(s) for s in t.min_size) if isinstance(t.min_size, (list, tuple)) else str(t.min_size)
    return f"shorter side {shorter}, longer side at most {t.max_size} (aspect ratio kept)"


def _label_map_for(aset: AnnotationSet, classes: list[str]) -> LabelMap:
    by_name = {c.name: c.id for c in aset.categories}
    missing = [n for n in classes if n not in by_name]
    if missing:
        known = sorted(by_name)  # a file may declare a million: the line names the first few
        listed = f"{known[:20]}" + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise DataError(f"data.classes: {missing[:20]} not among the categories of {aset.report.source}: {listed}")
    return LabelMap(tuple(by_name[n] for n in classes), tuple(classes))


def _to_results(image_id: int, out: dict[str, torch.Tensor], label_map: LabelMap) -> list[dict[str, Any]]:
    """COCO results of one image; with Mask R-CNN outputs, each carries its mask (probability > 0.5) as RLE."""
    results = []
    for k, (box, label, score) in enumerate(zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist())):
        x1, y1, x2, y2 = box
        results.append({"image_id": image_id, "category_id": label_map.category(label),
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
        if "masks" in out:
            results[-1]["segmentation"] = rle.encode((out["masks"][k, 0] > 0.5).numpy())
    return results


class InstanceSegmentationTask(DetectionTask):
    """Mask R-CNN: detection plus a mask per instance; scored with both bbox/* and segm/* keys."""

    name = "instance_segmentation"
    log_metrics = ("bbox/AP", "segm/AP", "segm/AP50")
    iou_types = ("bbox", "segm")
    masks = True


def _load_detector_checkpoint(model: nn.Module, path: Path) -> None:
    """Fine-tune from a whole detector: every tensor whose name and shape fit is loaded; the rest (class
    heads sized for another class count) keep their fresh initialisation and are reported."""
    from visiontl.engine.checkpoint import load_checkpoint

    if path.suffix == ".safetensors":
        return
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        return  # a plain backbone state dict: create_backbone has loaded it already
    if ckpt.get("task") not in ("detection", "instance_segmentation"):
        return  # a classifier or a segmentation model: its backbone is what fits (create_backbone)
    own = model.state_dict()
    fits = {k: v for k, v in ckpt["model"].items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in ckpt["model"] if k not in fits)
    model.load_state_dict(fits, strict=False)
    log.info("weights: loaded %d of %d detector tensors from %s; re-initialised %d (%s)", len(fits), len(own), path,
             len(skipped), ", ".join(skipped[:4]) + (" ..." if len(skipped) > 4 else ""))

