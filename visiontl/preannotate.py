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
from typing import Any

import numpy as np

from visiontl.data import rle
from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, WriteReport
from visiontl.errors import DataError

PREDICTION_FORMATS = ("labelstudio", "cvat", "coco", "yolo", "voc")


def common_root(files: list[Path]) -> Path:
    """The deepest folder holding every file (file names in the set are relative to it)."""
    parents = [Path(f).resolve().parent for f in files]
    root = parents[0]
    while not all(p == root or root in p.parents for p in parents):
        root = root.parent
    return root


def predict_set(predictor: Any, files: list[Path], score_threshold: float | None = None, masks: str = "rle",
                batch_size: int = 8, progress: bool = True, max_pixels: int | None = None) -> AnnotationSet:
    """Predictions of `predictor` (a Predictor: visiontl.loading.load_predictor) on image files, as an
    AnnotationSet. score_threshold: detection: the lowest score kept (default: the model's); segmentation:
    the lowest mean probability of a region kept (default: every region). max_pixels: the pixel budget
    (default: the config's data.max_pixels)."""
    if masks not in ("rle", "polygon"):
        raise DataError(f"masks must be 'rle' or 'polygon', not {masks!r}")
    task = predictor.task
    if task == "classification":
        raise DataError("pre-annotation draws shapes: a classifier's predictions are written by `visiontl predict "
                        "CKPT IMAGES --out predictions.csv`")
    if task not in ("detection", "instance_segmentation", "segmentation"):
        raise DataError(f"pre-annotation is not built for task {task!r}")
    root = common_root(files)
    detection = task != "segmentation"
    batches = predictor.predict_batches(files, score_threshold=score_threshold if detection else None,
                                        batch_size=batch_size if detection else 1, max_pixels=max_pixels,
                                        progress=progress)
    if detection:
        label_map = predictor.label_map
        categories = [Category(cid, name) for cid, name in zip(label_map.category_ids, label_map.names)]
    else:
        categories = [Category(i, name) for i, name in enumerate(predictor.classes)]
    images, instances = [], []
    for image_id, (path, result) in enumerate(zip(files, (r for batch in batches for r in batch))):
        images.append(_record(image_id, path, result.image, root))
        found = _detected(result, masks) if detection else _regions(result, score_threshold, masks)
        instances += [Instance(len(instances) + k, image_id, category, box, segmentation=seg, score=score,
                               attributes={"source": "auto"}) for k, (category, box, seg, score) in enumerate(found)]
    report = ReadReport(f"predictions of {predictor.config.model.arch}")
    return AnnotationSet(categories, images, instances, root, report)


def _record(image_id: int, path: Path, array: np.ndarray, root: Path) -> ImageRecord:
    return ImageRecord(image_id, Path(path).resolve().relative_to(root).as_posix(), int(array.shape[1]), int(array.shape[0]))


def _detected(result: Any, masks: str) -> list[tuple[int, tuple[float, ...], Any, float]]:
    """(category id, COCO box, segmentation, score) of each detection of one image (Detections)."""
    found = []
    for k, (x1, y1, x2, y2) in enumerate(result.boxes.tolist()):
        seg = _mask_shape(result.masks[k], masks) if result.masks is not None else None
        found.append((int(result.category_ids[k]), (x1, y1, x2 - x1, y2 - y1), seg, float(result.scores[k])))
    return found


def _regions(result: Any, score_threshold: float | None, masks: str) -> list[tuple[int, tuple[float, ...], Any, float]]:
    """(class id, COCO box, segmentation, score) of each class region of one image (SegmentationPrediction):
    the class's pixels, scored by the class's mean probability over them; background left out."""
    found = []
    for c, score in result.class_scores.items():
        if result.classes[c].strip("_").lower() == "background":
            continue  # nothing to correct there: the tool's empty canvas is the background
        if score_threshold is not None and score < score_threshold:
            continue
        region = result.mask == c
        ys, xs = np.nonzero(region)
        box = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1))
        found.append((c, box, _mask_shape(region, masks), score))
    return found


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
