"""What a Predictor returns, one object per image: plain numpy and str fields, no torch tensors.

- ClassPrediction (classification): the top-k class names and probabilities, best first.
- Detections (detection, instance segmentation): boxes in pixels of the image given, class names, scores,
  masks (instance segmentation), `to_coco()` in the dataset's category ids, `draw()`.
- SegmentationPrediction (semantic segmentation): one class id per pixel, `draw()`.

docs/python-api.md describes each field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class ClassPrediction:
    """Top-k classes of one image.

    labels: class names, best first; scores: their probabilities (softmax), same order; probabilities: one
    per class of `classes` (the model's class list, in training order); source: the file name, or None for
    an image given in memory."""

    labels: list[str]
    scores: list[float]
    probabilities: np.ndarray
    classes: list[str]
    source: str | None = None

    @property
    def label(self) -> str:
        """The most probable class."""
        return self.labels[0]

    @property
    def score(self) -> float:
        """The probability of the most probable class."""
        return self.scores[0]


@dataclass
class Detections:
    """The objects found in one image, highest score first.

    boxes: float32 array (N, 4), x1 y1 x2 y2 in pixels of the image as given; labels: the class names (N);
    scores: float32 (N,); category_ids: int64 (N,), each label's category id in the training dataset (what
    COCO files use); masks: bool (N, H, W) for instance segmentation (probability above 0.5), else None;
    source: the file name, or None for an image given in memory."""

    boxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    category_ids: np.ndarray
    masks: np.ndarray | None = None
    source: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # the RGB pixels predicted, for draw()
    label_map: Any = field(default=None, repr=False)  # visiontl.data.annotations.LabelMap of the model

    def __len__(self) -> int:
        return len(self.labels)

    def to_coco(self, image_id: int = 0) -> list[dict[str, Any]]:
        """COCO results, one dict per detection: image_id (the argument), category_id (the dataset's),
        bbox [x, y, width, height], score, and with masks `segmentation` as compressed RLE: the records
        `visiontl predict` writes and `visiontl score` reads."""
        import torch

        from visiontl.tasks.detection import _to_results

        out = {"boxes": torch.from_numpy(self.boxes), "scores": torch.from_numpy(self.scores),
               "labels": torch.as_tensor([self.label_map.label(int(c)) for c in self.category_ids], dtype=torch.int64)}
        if self.masks is not None:
            out["masks"] = torch.from_numpy(self.masks[:, None].astype(np.float32))
        return _to_results(image_id, out, self.label_map)

    def draw(self, image: Any = None) -> Image.Image:
        """An RGB picture: the boxes in class colours with name and score (and the masks blended in), on
        `image` (PIL or HxWx3 uint8 array; default: the image predicted)."""
        from visiontl.visualize import class_color, draw_boxes

        base = np.asarray(self.image if image is None else image.convert("RGB") if isinstance(image, Image.Image) else image)
        keys = [self.label_map.label(int(c)) - 1 for c in self.category_ids]
        if self.masks is not None and len(self.masks):
            base = base.astype(np.float64)
            for mask, key in zip(self.masks, keys):
                base[mask] = 0.55 * base[mask] + 0.45 * np.array(class_color(key), dtype=np.float64)
            base = base.round().astype(np.uint8)
        return draw_boxes(base, self.boxes, self.labels, self.scores.tolist(), color_keys=keys)


@dataclass
class SegmentationPrediction:
    """One class id per pixel of one image.

    mask: (H, W) array of class ids (uint8, uint16 beyond 256 classes), the size of the image as given;
    classes: the model's class names, index = class id; source: the file name, or None for an image given
    in memory; class_scores: for each class id in the mask, the mean probability (softmax) of that class
    over the pixels given it (what pre-annotation calls a region's score)."""

    mask: np.ndarray
    classes: list[str]
    source: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # the RGB pixels predicted, for draw()
    class_scores: dict[int, float] = field(default_factory=dict)

    @property
    def classes_present(self) -> list[str]:
        """The names of the classes predicted somewhere in the image, in class-id order."""
        return [self.classes[i] for i in np.unique(self.mask).tolist()]

    def draw(self, image: Any = None, legend: bool = True) -> Image.Image:
        """The image with each pixel blended with its class colour, and (`legend`) a strip naming the colours
        of the classes present below it. `image`: PIL or HxWx3 uint8 array (default: the image predicted)."""
        from visiontl.visualize import class_color, color_legend, label_overlay, stack

        base = np.asarray(self.image if image is None else image.convert("RGB") if isinstance(image, Image.Image) else image)
        picture = Image.fromarray(label_overlay(base, self.mask))
        if not legend:
            return picture
        present = np.unique(self.mask).tolist()
        return stack([picture, color_legend([(self.classes[i], class_color(i)) for i in present], picture.width)])
