"""The Predictor: a trained model (a checkpoint, or a file `visiontl export` wrote) that takes images in memory
and returns typed results (visiontl.predictions), one per image.

Every predictor runs the same three steps on a batch: `preprocess` (RGB uint8 arrays -> the model's input),
`forward` (the model), `postprocess` (the model's output -> results). `predict` reads the inputs (files,
folders, PIL images, numpy arrays), checks their size and batches them through the three steps. The
preprocessing is the one `visiontl predict` uses, so the results are the numbers it writes to its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from visiontl.config import Config
from visiontl.errors import DataError
from visiontl.predictions import ClassPrediction, Detections, SegmentationPrediction

ImageInput = Any  # str | Path (a file or a folder of images) | PIL.Image.Image | np.ndarray (HxWx3 uint8 RGB)


@runtime_checkable
class Predictor(Protocol):
    """A trained model ready to predict. `task`, `classes` (names, in training order) and `config` (the
    stored config) describe it; `path` is the file it was loaded from."""

    task: str
    classes: list[str]
    config: Config
    path: Path

    def preprocess(self, images: list[np.ndarray]) -> Any:
        """images: HxWx3 uint8 RGB arrays -> the model's input for them (a batch tensor or a list)."""
        ...

    def forward(self, batch: Any) -> Any:
        """batch: what preprocess returned -> the model's outputs for it."""
        ...

    def postprocess(self, outputs: Any, images: list[np.ndarray], sources: list[str | None], *, topk: int,
                    score_threshold: float | None) -> list[Any]:
        """outputs: what forward returned; images: the arrays predicted; sources: their file names (None for
        an image given in memory); topk, score_threshold: as in predict -> one result per image."""
        ...

    def predict(self, images: ImageInput | Sequence[ImageInput], *, topk: int = 5,
                score_threshold: float | None = None, batch_size: int = 8,
                max_pixels: int | None = None) -> list[Any]:
        """One result per image; each task's predictor documents the arguments (help(model.predict))."""
        ...


class _Predictor:
    """What the three task predictors share: the loaded model, reading the inputs, batching."""

    def __init__(self, loaded: Any, path: str | Path):
        self.loaded = loaded  # visiontl.engine.inference.LoadedModel
        self.path = Path(path)
        self.task: str = loaded.config.task
        self.classes: list[str] = list(loaded.classes)
        self.config: Config = loaded.config
        self.model: torch.nn.Module = loaded.model
        self.device = next(loaded.model.parameters()).device

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, task={self.task!r}, classes={self.classes!r})"

    def predict(self, images: ImageInput | Sequence[ImageInput], *, topk: int = 5,
                score_threshold: float | None = None, batch_size: int = 8,
                max_pixels: int | None = None) -> list[Any]:
        """Predict images and return one result per image, in input order (a folder counts as its images,
        sorted by name).

        images: one image or a list of them; each a file path (str or Path), a folder of images, a PIL
            image, or an HxWx3 uint8 numpy array in RGB order (an HxW array is taken as grayscale). Files
            are read as `visiontl predict` reads them (EXIF orientation applied; PIL images too).
        topk: classification: how many classes each ClassPrediction lists (at most the number of classes).
        score_threshold: detection: keep detections scoring at least this (default: the model's
            model.score_threshold).
        batch_size: images per forward pass (segmentation runs one image at a time, each at its own size).
        max_pixels: refuse (DataError) an image of more pixels than this before decoding it (default: the
            config's data.max_pixels).

        Returns ClassPrediction, Detections or SegmentationPrediction objects (visiontl.predictions)."""
        from visiontl.data.images import check_image

        if batch_size < 1 or topk < 1:
            raise DataError(f"predict: batch_size and topk must be at least 1, got {batch_size} and {topk}")
        budget = self.config.data.max_pixels if max_pixels is None else max_pixels
        items = _expand(images)
        for item in items:  # every file's header before any is decoded, as `visiontl predict` does
            if isinstance(item, Path):
                check_image(item, budget)
        results: list[Any] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            arrays = [_to_array(item, budget) for item in chunk]
            sources = [str(item) if isinstance(item, Path) else None for item in chunk]
            outputs = self.forward(self.preprocess(arrays))
            results += self.postprocess(outputs, arrays, sources, topk=topk, score_threshold=score_threshold)
        return results


class ClassificationPredictor(_Predictor):
    """Top-k classes per image (ClassPrediction)."""

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        from visiontl.data.augment import classification_transform

        b = self.loaded.backbone
        transform = classification_transform("none", self.config.data.image_size, b.mean, b.std, train=False)
        return torch.stack([transform(image=a)["image"] for a in images])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loaded.task.predict(self.model, batch.to(self.device)).cpu()

    def postprocess(self, outputs: torch.Tensor, images: list[np.ndarray], sources: list[str | None], *, topk: int,
                    score_threshold: float | None) -> list[ClassPrediction]:
        k = min(topk, len(self.classes))
        scores, labels = outputs.topk(k, dim=1)
        return [ClassPrediction([self.classes[j] for j in lab], s, p.numpy(), self.classes, src)
                for lab, s, p, src in zip(labels.tolist(), scores.tolist(), outputs, sources)]


class DetectionPredictor(_Predictor):
    """Boxes, class names, scores (and masks for instance segmentation) per image (Detections)."""

    def preprocess(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        from visiontl.data.detection import unit_tensor

        return [unit_tensor(a) for a in images]

    def forward(self, batch: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.loaded.task.detect(self.model, batch, self.device, torch.autocast("cpu", enabled=False))

    def postprocess(self, outputs: list[dict[str, torch.Tensor]], images: list[np.ndarray],
                    sources: list[str | None], *, topk: int, score_threshold: float | None) -> list[Detections]:
        from visiontl.data.annotations import LabelMap

        label_map = LabelMap.from_dict(self.loaded.checkpoint["label_map"])
        threshold = self.config.model.score_threshold if score_threshold is None else score_threshold
        results = []
        for out, image, source in zip(outputs, images, sources):
            keep = out["scores"] >= threshold
            labels = out["labels"][keep].tolist()
            masks = (out["masks"][keep][:, 0] > 0.5).numpy() if "masks" in out else None
            results.append(Detections(
                boxes=out["boxes"][keep].numpy().astype(np.float32).reshape(-1, 4),
                labels=[label_map.name(k) for k in labels],
                scores=out["scores"][keep].numpy().astype(np.float32),
                category_ids=np.array([label_map.category(k) for k in labels], dtype=np.int64),
                masks=masks, source=source, image=image, label_map=label_map))
        return results


class SegmentationPredictor(_Predictor):
    """A class id per pixel, at the image's own size (SegmentationPrediction)."""

    def preprocess(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        from visiontl.data.segmentation import segmentation_transform

        d, b = self.config.data, self.loaded.backbone
        transform = segmentation_transform("none", None, b.mean, b.std, d.ignore_index, False, False)
        return [transform(image=a)["image"] for a in images]

    @torch.no_grad()
    def forward(self, batch: list[torch.Tensor]) -> list[np.ndarray]:
        self.model.eval()
        return [self.model(x[None].to(self.device)).argmax(1)[0].cpu().numpy() for x in batch]

    def postprocess(self, outputs: list[np.ndarray], images: list[np.ndarray], sources: list[str | None], *,
                    topk: int, score_threshold: float | None) -> list[SegmentationPrediction]:
        dtype = np.uint8 if len(self.classes) <= 256 else np.uint16
        return [SegmentationPrediction(labels.astype(dtype), self.classes, source, image)
                for labels, image, source in zip(outputs, images, sources)]


PREDICTORS = {"classification": ClassificationPredictor, "detection": DetectionPredictor,
              "instance_segmentation": DetectionPredictor, "segmentation": SegmentationPredictor}


def predictor_for(loaded: Any, path: str | Path, device: str | None = None) -> _Predictor:
    """The task's predictor around a LoadedModel (engine.inference), its model moved to `device` if given."""
    if device is not None:
        from visiontl.engine.trainer import resolve_device

        loaded.model.to(resolve_device(device))
    return PREDICTORS[loaded.config.task](loaded, path)


def _expand(images: Any) -> list[Any]:
    """The inputs as a flat list: files as Paths (folders replaced by their images), the rest as given."""
    from visiontl.engine.inference import image_files

    if isinstance(images, (str, Path, np.ndarray)) or not isinstance(images, Sequence):
        images = [images]
    items: list[Any] = []
    for item in images:
        items += image_files([Path(item)]) if isinstance(item, (str, Path)) else [item]
    if not items:
        raise DataError("predict: no images given")
    return items


def _to_array(item: Any, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 RGB of one input (files and PIL images: EXIF orientation applied)."""
    from PIL import Image

    from visiontl.data.images import _to_rgb8, orientation, read_image, upright

    if isinstance(item, Path):
        return read_image(item)
    if isinstance(item, Image.Image):
        array = _to_rgb8(upright(item, orientation(item)))
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] == 3)):
            raise DataError(f"predict: an array image must be HxWx3 (RGB) or HxW uint8, got shape "
                            f"{list(item.shape)} dtype {item.dtype}")
        array = np.repeat(item[..., None], 3, axis=2) if item.ndim == 2 else np.array(item)  # ours, writable
    else:
        raise DataError(f"predict: cannot read an image from a {type(item).__name__} (give a file path, a folder, "
                        "a PIL image or an HxWx3 uint8 numpy array)")
    h, w = array.shape[:2]
    if h * w > max_pixels:
        raise DataError(f"predict: a {w}x{h} image ({h * w / 1e6:.1f} megapixels) is over the pixel budget of "
                        f"{max_pixels:,} (max_pixels)")
    if h == 0 or w == 0:
        raise DataError(f"predict: an image of {w}x{h} pixels has nothing to predict")
    return array
