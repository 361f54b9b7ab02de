"""Task adapters: how the one trainer moves a batch, computes a loss, predicts and scores, per task."""

from __future__ import annotations

from visiontl.tasks.base import TaskAdapter


def get_task(name: str) -> TaskAdapter:
    if name == "classification":
        from visiontl.tasks.classification import ClassificationTask

        return ClassificationTask()
    if name == "detection":
        from visiontl.tasks.detection import DetectionTask

        return DetectionTask()
    if name == "instance_segmentation":
        from visiontl.tasks.detection import InstanceSegmentationTask

        return InstanceSegmentationTask()
    if name == "segmentation":
        from visiontl.tasks.segmentation import SegmentationTask

        return SegmentationTask()
    raise ValueError(f"task {name!r} has no adapter")


__all__ = ["TaskAdapter", "get_task"]
