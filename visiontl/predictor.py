"""The Predictor: a trained model (a checkpoint, or a file `visiontl export` wrote) that takes images in memory
and returns typed results (visiontl.predictions), one per image.

Every predictor runs the same three steps on a batch: `preprocess` (RGB uint8 arrays -> the model's input),
`forward` (the model), `postprocess` (the model's output -> results). `predict` reads the inputs (files,
folders, PIL images, numpy arrays), checks their size and batches them through the three steps;
`predict_batches` does the same one batch at a time, so a folder of 10,000 images is never in memory at once.

There is one predictor class per task; what differs between a checkpoint and an exported file is the model
called in `forward` and the normalisation in `preprocess`:

- a checkpoint (`checkpoint_predictor`): its PyTorch model, on the device asked for; inputs normalised with
  the backbone's mean and std;
- an exported file (visiontl.export.predict.exported_predictor): its graph in onnxruntime or torch.jit, on the
  CPU; inputs only scaled to [0, 1], since the graph normalises itself.

`visiontl predict` (visiontl.prediction_files), pre-annotation, `visiontl serve` and `visiontl data rank` all
predict through these classes, so the numbers they write are the ones `vtl.load(path).predict` returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from visiontl.config import Config
from visiontl.errors import DataError
from visiontl.predictions import ClassPrediction, Detections, SegmentationPrediction

ImageInput = Any  # str | Path (a file or a folder of images) | PIL.Image.Image | np.ndarray (HxWx3 uint8 RGB)


@runtime_checkable
class Predictor(Protocol):
    """A trained model ready to predict. `task`, `classes` (names, in training order) and `config` (the
    stored config) describe it; `path` is the file it was loaded from, `source` what kind of file
    ("checkpoint", "onnx", "torchscript")."""

    task: str
    classes: list[str]
    config: Config
    path: Path
    source: str

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

    def predict_batches(self, images: ImageInput | Sequence[ImageInput], *, topk: int = 5,
                        score_threshold: float | None = None, batch_size: int = 8, max_pixels: int | None = None,
                        progress: bool = False) -> Iterator[list[Any]]:
        """As predict, one batch of results at a time (a bounded number of images in memory)."""
        ...


class _Predictor:
    """What the three task predictors share: the model, reading the inputs, batching.

    model: the checkpoint's nn.Module (in eval mode) or an exported file's graph (export.predict.ExportedGraph),
        called as the nn.Module is; config, classes: the stored config and the class names in training order;
    path: the file; source: "checkpoint", "onnx" or "torchscript"; epoch: the training epoch it holds (None
        if unknown); label_map: detection's LabelMap (class <-> the dataset's category ids);
    mean, std: the normalisation of preprocess (an exported graph normalises itself: 0 and 1);
    backbone: a checkpoint's backbone module (feature extraction, visiontl.active), else None;
    loaded: the checkpoint as engine.inference.load_trained read it (a LoadedModel: vtl.evaluate scores its
        model in memory with it), else None."""

    def __init__(self, model: Any, *, config: Config, classes: list[str], path: str | Path, source: str = "checkpoint",
                 epoch: int | None = None, label_map: Any = None, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0), backbone: torch.nn.Module | None = None,
                 device: torch.device | None = None):
        self.model = model
        self.config = config
        self.task: str = config.task
        self.classes: list[str] = list(classes)
        self.path = Path(path)
        self.source = source
        self.epoch = epoch
        self.label_map = label_map
        self.mean, self.std = tuple(mean), tuple(std)
        self.backbone = backbone
        self.device = device or torch.device("cpu")
        self.loaded: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, task={self.task!r}, classes={self.classes!r})"

    def to(self, device: str | torch.device) -> _Predictor:
        """A checkpoint's model moved to `device` ("cpu", "cuda", "cuda:1", "auto"); an exported file stays on
        the CPU. Returns self."""
        from visiontl.engine.trainer import resolve_device

        if isinstance(self.model, torch.nn.Module):
            self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
            self.model.to(self.device)
            if self.backbone is not None:  # detectors build their own body from it: not always a submodule
                self.backbone.to(self.device)
        return self

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
        results: list[Any] = []
        for batch in self.predict_batches(images, topk=topk, score_threshold=score_threshold,
                                          batch_size=batch_size, max_pixels=max_pixels):
            results += batch
        return results

    def predict_batches(self, images: ImageInput | Sequence[ImageInput], *, topk: int = 5,
                        score_threshold: float | None = None, batch_size: int = 8, max_pixels: int | None = None,
                        progress: bool = False) -> Iterator[list[Any]]:
        """As `predict`, one batch of results at a time: only `batch_size` images are decoded and held at
        once. Every file's header is checked against the pixel budget before the first is decoded.
        progress: a progress bar over the batches (stderr)."""
        from tqdm.auto import tqdm

        from visiontl.data.images import check_image

        if batch_size < 1 or topk < 1:
            raise DataError(f"predict: batch_size and topk must be at least 1, got {batch_size} and {topk}")
        budget = self.config.data.max_pixels if max_pixels is None else max_pixels
        items = _expand(images)
        for item in items:  # every file's header before any is decoded, as `visiontl predict` does
            if isinstance(item, Path):
                check_image(item, budget)
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress):
            chunk = items[start : start + batch_size]
            arrays = [_to_array(item, budget) for item in chunk]
            sources = [str(item) if isinstance(item, Path) else None for item in chunk]
            outputs = self.forward(self.preprocess(arrays))
            yield self.postprocess(outputs, arrays, sources, topk=topk, score_threshold=score_threshold)


class ClassificationPredictor(_Predictor):
    """Top-k classes per image (ClassPrediction)."""

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """The eval pipeline of training: resized to data.image_size, normalised; an NCHW batch."""
        from visiontl.data.augment import classification_transform

        transform = classification_transform("none", self.config.data.image_size, self.mean, self.std, train=False)
        return torch.stack([transform(image=a)["image"] for a in images])

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of the logits), N x classes, on the CPU."""
        return self.model(batch.to(self.device)).float().softmax(dim=1).cpu()

    def postprocess(self, outputs: torch.Tensor, images: list[np.ndarray], sources: list[str | None], *, topk: int,
                    score_threshold: float | None) -> list[ClassPrediction]:
        k = min(topk, len(self.classes))
        scores, labels = outputs.topk(k, dim=1)
        return [ClassPrediction([self.classes[j] for j in lab], s, p.numpy(), self.classes, src)
                for lab, s, p, src in zip(labels.tolist(), scores.tolist(), outputs, sources)]


class DetectionPredictor(_Predictor):
    """Boxes, class names, scores (and masks for instance segmentation) per image (Detections)."""

    def preprocess(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        """CHW float tensors in [0, 1]: detectors resize and normalise inside."""
        from visiontl.data.detection import unit_tensor

        return [unit_tensor(a) for a in images]

    @torch.no_grad()
    def forward(self, batch: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Every detection the model keeps, per image: boxes, scores, labels (1..classes), masks; on the CPU."""
        outputs = self.model([image.to(self.device) for image in batch])
        return [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs]

    def postprocess(self, outputs: list[dict[str, torch.Tensor]], images: list[np.ndarray],
                    sources: list[str | None], *, topk: int, score_threshold: float | None) -> list[Detections]:
        label_map = self.label_map
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
        """CHW normalised tensors, each at its image's own size."""
        from visiontl.data.segmentation import segmentation_transform

        d = self.config.data
        transform = segmentation_transform("none", None, self.mean, self.std, d.ignore_index, False, False)
        return [transform(image=a)["image"] for a in images]

    @torch.no_grad()
    def forward(self, batch: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """Logits K x H x W per image, on the CPU: a list of images runs one at a time (each at its own size),
        an N x 3 x H x W tensor (images of one size) in one pass."""
        if isinstance(batch, torch.Tensor):
            return list(self.model(batch.to(self.device)).float().cpu())
        return [self.model(x[None].to(self.device))[0].float().cpu() for x in batch]

    def postprocess(self, outputs: list[torch.Tensor], images: list[np.ndarray], sources: list[str | None], *,
                    topk: int, score_threshold: float | None) -> list[SegmentationPrediction]:
        dtype = np.uint8 if len(self.classes) <= 256 else np.uint16
        results = []
        for logits, image, source in zip(outputs, images, sources):
            labels = logits.argmax(0).numpy()
            probs = logits.softmax(0).numpy()
            scores = {int(c): float(probs[c][labels == c].mean()) for c in np.unique(labels)}
            results.append(SegmentationPrediction(labels.astype(dtype), self.classes, source, image, scores))
        return results


PREDICTORS = {"classification": ClassificationPredictor, "detection": DetectionPredictor,
              "instance_segmentation": DetectionPredictor, "segmentation": SegmentationPredictor}


def checkpoint_predictor(loaded: Any, path: str | Path, device: str | None = None) -> _Predictor:
    """The task's predictor around a checkpoint read by engine.inference.load_trained (a LoadedModel), its
    model moved to `device` if given (default: where it is, the CPU)."""
    from visiontl.data.annotations import LabelMap

    label_map = loaded.checkpoint.get("label_map")
    predictor = PREDICTORS[loaded.config.task](
        loaded.model.eval(), config=loaded.config, classes=loaded.classes, path=path,
        epoch=loaded.checkpoint.get("epoch"), label_map=LabelMap.from_dict(label_map) if label_map else None,
        mean=loaded.backbone.mean, std=loaded.backbone.std, backbone=loaded.backbone,
        device=next(loaded.model.parameters()).device)
    predictor.loaded = loaded
    return predictor.to(device) if device is not None else predictor


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
