"""Pre-annotation: a trained model's predictions on unlabelled images as an `AnnotationSet`, written in an
annotation tool's import format, so the next batch is corrected rather than drawn from nothing.

Detection gives boxes; Mask R-CNN adds a mask per box (RLE, or polygons traced from it with
`masks="polygon"`); semantic segmentation gives one mask per class present (a class named background
excepted). Every instance carries its
score (segmentation: the mean probability of the class over its pixels) and `source: auto`. The set's
categories are the checkpoint's, with the dataset's own ids, so a conversion back after correction lines
up with the training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from visiontl.data import rle
from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, LabelMap, ReadReport, WriteReport
from visiontl.errors import DataError

PREDICTION_FORMATS = ("labelstudio", "cvat", "coco", "yolo", "voc")


def common_root(files: list[Path]) -> Path:
    """The deepest folder holding every file (file names in the set are relative to it)."""
    parents = [Path(f).resolve().parent for f in files]
    root = parents[0]
    while not all(p == root or root in p.parents for p in parents):
        root = root.parent
    return root


def predict_set(loaded: Any, files: list[Path], score_threshold: float | None = None, masks: str = "rle",
                batch_size: int = 8, progress: bool = True) -> AnnotationSet:
    """Predictions of `loaded` (engine.inference.load_trained) on image files, as an AnnotationSet."""
    if masks not in ("rle", "polygon"):
        raise DataError(f"masks must be 'rle' or 'polygon', not {masks!r}")
    task = loaded.config.task
    if task == "classification":
        raise DataError("pre-annotation draws shapes: a classifier's predictions are written by `visiontl predict "
                        "CKPT IMAGES --out predictions.csv`")
    root = common_root(files)
    images, instances = [], []
    if task in ("detection", "instance_segmentation"):
        label_map = LabelMap.from_dict(loaded.checkpoint["label_map"])
        categories = [Category(cid, name) for cid, name in zip(label_map.category_ids, label_map.names)]
        threshold = loaded.config.model.score_threshold if score_threshold is None else score_threshold
        for image_id, (path, array, out) in enumerate(_detections(loaded, files, batch_size, progress)):
            images.append(_record(image_id, path, array, root))
            keep = out["scores"] >= threshold
            for k in np.flatnonzero(keep.numpy()):
                x1, y1, x2, y2 = (float(v) for v in out["boxes"][k])
                seg = None
                if "masks" in out:
                    seg = _mask_shape(out["masks"][k, 0].numpy() > 0.5, masks)
                instances.append(Instance(len(instances), image_id, label_map.category(int(out["labels"][k])),
                                          (x1, y1, x2 - x1, y2 - y1), segmentation=seg,
                                          score=float(out["scores"][k]), attributes={"source": "auto"}))
    elif task == "segmentation":
        categories = [Category(i, name) for i, name in enumerate(loaded.classes)]
        for image_id, (path, array, probs) in enumerate(_segmentations(loaded, files, progress)):
            images.append(_record(image_id, path, array, root))
            labels = probs.argmax(0)
            for c in np.unique(labels):
                if loaded.classes[c].strip("_").lower() == "background":
                    continue  # nothing to correct there: the tool's empty canvas is the background
                region = labels == c
                if score_threshold is not None and float(probs[c][region].mean()) < score_threshold:
                    continue
                ys, xs = np.nonzero(region)
                box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
                instances.append(Instance(len(instances), image_id, int(c), box, segmentation=_mask_shape(region, masks),
                                          score=float(probs[c][region].mean()), attributes={"source": "auto"}))
    else:
        raise DataError(f"pre-annotation is not built for task {task!r}")
    return AnnotationSet(categories, images, instances, root, ReadReport(f"predictions of {loaded.config.model.arch}"))


def _record(image_id: int, path: Path, array: np.ndarray, root: Path) -> ImageRecord:
    return ImageRecord(image_id, Path(path).resolve().relative_to(root).as_posix(), int(array.shape[1]), int(array.shape[0]))


def _detections(loaded: Any, files: list[Path], batch_size: int, progress: bool) -> Iterator[tuple[Path, np.ndarray, dict]]:
    from tqdm.auto import tqdm

    from visiontl.data.detection import unit_tensor
    from visiontl.data.images import read_image

    device = next(loaded.model.parameters()).device
    for start in tqdm(range(0, len(files), batch_size), desc="predict", unit="batch", disable=not progress):
        chunk = files[start : start + batch_size]
        arrays = [read_image(f) for f in chunk]
        outputs = loaded.task.detect(loaded.model, [unit_tensor(a) for a in arrays], device,
                                     torch.autocast("cpu", enabled=False))
        yield from zip(chunk, arrays, outputs)


def _segmentations(loaded: Any, files: list[Path], progress: bool) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    from tqdm.auto import tqdm

    from visiontl.data.images import read_image
    from visiontl.data.segmentation import segmentation_transform

    d = loaded.config.data
    transform = segmentation_transform("none", None, loaded.backbone.mean, loaded.backbone.std, d.ignore_index, False, False)
    device = next(loaded.model.parameters()).device
    loaded.model.eval()
    for f in tqdm(files, desc="predict", unit="image", disable=not progress):
        array = read_image(f)
        with torch.no_grad():
            logits = loaded.model(transform(image=array)["image"][None].to(device))
        yield f, array, torch.softmax(logits.float(), 1)[0].cpu().numpy()


def _mask_shape(mask: np.ndarray, kind: str) -> Any:
    """A boolean mask as COCO RLE, or as COCO polygons traced along its outer contours."""
    if kind == "rle":
        return rle.encode(mask)
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    return polygons or None


def write_predictions(aset: AnnotationSet, fmt: str, out: Path, model_version: str | None = None,
                      label_config: Path | None = None) -> WriteReport:
    """Write predictions in a tool's import format: Label Studio tasks with `predictions` (model_version,
    score; control names from the project's labelling config when given), CVAT XML with source="auto",
    COCO (with scores), YOLO or VOC files."""
    from visiontl.data.formats.registry import write_dataset

    out = Path(out)
    if fmt == "labelstudio":
        from visiontl.data.formats.labelstudio import write_labelstudio

        names = control_names(label_config) if label_config else {}
        to_name = names.pop("to_name", "image")
        # The project's own config, when given, is the one to import into: none is written beside (it could
        # be that very file); else label_config.xml beside the tasks is one that imports them.
        return write_labelstudio(aset, out if out.suffix == ".json" else out / "tasks.json",
                                 from_name=names or None, to_name=to_name, as_predictions=True,
                                 model_version=model_version, **({"label_config": None} if label_config else {}))
    if fmt == "cvat":
        from visiontl.data.formats.cvat import write_cvat

        return write_cvat(aset, out if out.suffix == ".xml" else out / "annotations.xml", source="auto")
    if fmt == "coco" and out.suffix == ".json":
        from visiontl.data.formats.coco import write_coco

        return write_coco(aset, out)
    if fmt not in PREDICTION_FORMATS:
        raise DataError(f"predictions can be written as {', '.join(PREDICTION_FORMATS)}, not {fmt!r}")
    polygons = any(isinstance(i.segmentation, list) for i in aset.instances)
    # with the images copied in, the folder is a complete dataset a tool can import as it is
    return write_dataset(aset, fmt, out, "predictions", copy_images=True, yolo_task="segment" if polygons else "detect")


def control_names(label_config: Path) -> dict[str, str]:
    """From a Label Studio labelling config: the control name per result type, and the image's name
    (`to_name`, that of the first control), e.g. {"rectanglelabels": "label", "to_name": "image"}."""
    from visiontl.data.formats.labelstudio import read_label_config

    config = read_label_config(label_config, predictions=True)  # the one parser, serve's and the reader's
    first = next(iter(config.controls))
    return {**config.controls, "to_name": config.to_names[first]}
