"""Task adapters: how the one trainer moves a batch, computes a loss, predicts and scores, per task."""

from __future__ import annotations

from visiontl.config import Config
from visiontl.tasks.base import TaskAdapter


def get_task(cfg: Config) -> TaskAdapter:
    """The adapter of `cfg.task`, built for `cfg`: what it needs of the config (the loss, the collate, the
    dataset root its per-image records are relative to) is made here, not by a later call."""
    name = cfg.task
    if name == "classification":
        from visiontl.tasks.classification import ClassificationTask

        return ClassificationTask(cfg)
    if name == "detection":
        from visiontl.tasks.detection import DetectionTask

        return DetectionTask(cfg)
    if name == "instance_segmentation":
        from visiontl.tasks.detection import InstanceSegmentationTask

        return InstanceSegmentationTask(cfg)
    if name == "segmentation":
        from visiontl.tasks.segmentation import SegmentationTask

        return SegmentationTask(cfg)
    raise ValueError(f"task {name!r} has no adapter")


__all__ = ["TaskAdapter", "get_task"]
