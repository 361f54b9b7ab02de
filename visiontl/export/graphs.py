"""What an exported file computes: the trained model behind one input contract for every task.

Input `image`: float32, RGB, NCHW, values in [0, 1] (8-bit pixels divided by 255). The mean/std
normalisation the backbone expects is inside the graph, so a user feeds pixels, never statistics.

Outputs, by task:
- classification: `logits` [N, K], `probabilities` [N, K] (softmax);
- segmentation: `logits` [N, K, H, W], `labels` [N, H, W] (int64 class ids, argmax), at the input's size;
- detection: `boxes` [D, 4] (x1, y1, x2, y2 in input pixels), `scores` [D], `labels` [D] (int64, 1..K:
  class k is classes[k - 1]), for one image (N = 1); detections below model.score_threshold are dropped
  inside the graph, as by the PyTorch model;
- instance_segmentation: the same plus `masks` [D, 1, H, W] (probabilities at the input's size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from visiontl.errors import ExportError

OUTPUTS = {
    "classification": ("logits", "probabilities"),
    "segmentation": ("logits", "labels"),
    "detection": ("boxes", "scores", "labels"),
    "instance_segmentation": ("boxes", "scores", "labels", "masks"),
}
DETECTION_TASKS = ("detection", "instance_segmentation")


@dataclass(frozen=True)
class InputSpec:
    """The input shape a file accepts: a fixed number, or None where any value goes."""

    batch: int | None
    size: tuple[int, int] | None  # (height, width)

    def shape(self) -> list[int | str]:
        """[N, 3, H, W] with names where a dimension is free (what the metadata states)."""
        h, w = self.size if self.size is not None else ("height", "width")
        return [self.batch if self.batch is not None else "batch", 3, h, w]


def input_spec(task: str, data_image_size: int, dynamic_batch: bool, image_size: tuple[int, int] | None) -> InputSpec:
    """Classification: fixed at the size it was trained at (data.image_size) unless --image-size says otherwise;
    segmentation and detection: any size unless --image-size fixes one. Batch 1 unless --dynamic-batch."""
    if dynamic_batch and task in DETECTION_TASKS:
        raise ExportError("--dynamic-batch: detectors export for one image per call (torchvision's detectors "
                          "loop over the images of a batch in Python, and the exporters unroll that loop to the "
                          "traced batch size); call the file once per image")
    if image_size is not None and min(image_size) < 32:
        raise ExportError(f"--image-size: {image_size[0]} {image_size[1]} is too small; at least 32 x 32")
    size = image_size if image_size is not None else (
        (data_image_size, data_image_size) if task == "classification" else None)
    return InputSpec(None if dynamic_batch else 1, tuple(size) if size is not None else None)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the statistics as constants of the graph."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


class ClassifierGraph(nn.Module):
    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(self.normalize(image))
        return logits, logits.softmax(dim=1)


class SegmenterGraph(nn.Module):
    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(self.normalize(image))  # pads to a multiple of 32 and crops back inside
        return logits, logits.argmax(dim=1)


class DetectorGraph(nn.Module):
    """torchvision's detectors take a list of [3, H, W] images in [0, 1] and normalise them themselves."""

    def __init__(self, model: nn.Module, masks: bool):
        super().__init__()
        self.model = model
        self.masks = masks

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model([image[0]])[0]
        if self.masks:
            return out["boxes"], out["scores"], out["labels"], out["masks"]
        return out["boxes"], out["scores"], out["labels"]


def export_graph(task: str, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
    """The model wrapped to the input contract above, in eval mode."""
    if task == "classification":
        graph: nn.Module = ClassifierGraph(model, mean, std)
    elif task == "segmentation":
        graph = SegmenterGraph(model, mean, std)
    elif task in DETECTION_TASKS:
        graph = DetectorGraph(model, masks=task == "instance_segmentation")
    else:
        raise ExportError(f"task {task!r} has no export")
    return graph.eval()


def example_input(spec: InputSpec, fallback_size: tuple[int, int]) -> torch.Tensor:
    """A deterministic image batch to trace with: the fixed size, else `fallback_size`. A traced graph keeps
    only the branches its example took, so free sizes are traced at sizes that are not multiples of 32 (the
    segmenters' padding is then in the graph) and a free batch at 2, not 1."""
    h, w = spec.size if spec.size is not None else fallback_size
    generator = torch.Generator().manual_seed(0)
    return torch.rand(spec.batch or 2, 3, h, w, generator=generator)
