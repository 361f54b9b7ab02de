"""The files `visiontl predict` writes, each made from a Predictor's typed results (visiontl.predictions),
taken one batch at a time (Predictor.predict_batches):

- write_classes: classification, the top-k classes per image as CSV or JSON (by the file's suffix);
- write_detections: detection and instance segmentation, COCO results JSON (dataset category ids, masks as
  RLE, each record with its image's file name), and optionally a picture per image of the detections scoring
  at least the display threshold (model.display_threshold): the file keeps every detection, the picture
  only those a reader can take in;
- write_masks: segmentation, one label PNG per image (class ids, the image's own size), optionally a colour
  overlay per image with a legend of the classes present;

and `predict`, the command end to end.

Each returns the rows `visiontl predict` counts (one per image, or per detection for COCO results).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from visiontl.atomic import atomic_write_text
from visiontl.predictions import ClassPrediction, Detections, SegmentationPrediction

log = logging.getLogger("visiontl")

# Images per forward pass of `visiontl predict`, by task: segmentation holds one full-size image at a time.
BATCH_SIZE = {"classification": 32, "detection": 8, "instance_segmentation": 8, "segmentation": 1}


def predict(path: str | Path, inputs: list[Path], out_file: Path, topk: int = 1, score_threshold: float | None = None,
            draw_dir: Path | None = None, overlay: bool = False, max_pixels: int | None = None,
            allow_torchscript_code: bool = False, display_threshold: float | None = None) -> list[dict[str, Any]]:
    """`visiontl predict`: image files through a checkpoint's or an exported file's Predictor, a batch at a
    time, into the task's files (out_file: classification .csv or .json, detection .json, segmentation a
    folder; draw_dir: detection pictures of the detections scoring at least `display_threshold`, default the
    config's model.display_threshold; overlay: segmentation overlays). An image of more than `max_pixels`
    (default: the config's data.max_pixels) is refused before any is decoded."""
    from visiontl.engine.inference import image_files
    from visiontl.loading import load_predictor

    predictor = load_predictor(path, allow_torchscript_code)
    files = image_files(inputs)
    task = predictor.task
    batches = predictor.predict_batches(files, topk=topk if task == "classification" else 1,
                                        score_threshold=score_threshold, batch_size=BATCH_SIZE[task],
                                        max_pixels=max_pixels, progress=task != "classification")
    if task == "segmentation":
        return write_masks(batches, Path(out_file), overlay)
    if task in ("detection", "instance_segmentation"):
        shown = predictor.config.model.display_threshold if display_threshold is None else display_threshold
        if draw_dir is not None:
            log.info(f"pictures: the detections scoring at least {shown:g} (model.display_threshold; "
                     "--display-threshold changes it); the results file keeps every detection")
        return write_detections(batches, Path(out_file), draw_dir, shown)
    return write_classes(batches, Path(out_file), min(topk, len(predictor.classes)))


def write_classes(batches: Iterable[list[ClassPrediction]], out_file: Path, k: int) -> list[dict[str, Any]]:
    """`k` classes per image, best first, with probabilities rounded to 6 decimals: a JSON list of
    {"file", "top": [{"class", "score"}, ...]} for a .json file, else CSV (file, class_1, score_1, ...)."""
    rows = [{"file": p.source, "top": [{"class": c, "score": round(s, 6)} for c, s in zip(p.labels, p.scores)]}
            for batch in batches for p in batch]
    if out_file.suffix.lower() == ".json":
        atomic_write_text(out_file, json.dumps(rows, indent=2) + "\n")
        return rows
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file"] + [c for i in range(k) for c in (f"class_{i + 1}", f"score_{i + 1}")])
    for r in rows:
        writer.writerow([r["file"]] + [v for t in r["top"] for v in (t["class"], t["score"])])
    atomic_write_text(out_file, buf.getvalue())
    return rows


def write_detections(batches: Iterable[list[Detections]], out_file: Path, draw_dir: Path | None,
                     display_threshold: float = 0.0) -> list[dict[str, Any]]:
    """COCO results JSON: per detection image_id (1, 2, ... in input order), the dataset's category_id, bbox
    [x, y, w, h], score, segmentation (RLE, Mask R-CNN) and file_name; with draw_dir, each image with the
    boxes (and masks) of its detections scoring at least `display_threshold` drawn (DRAW_DIR/<stem>.png)."""
    from visiontl.visualize import save_png

    records: list[dict[str, Any]] = []
    image_id = 0
    for batch in batches:
        for found in batch:
            image_id += 1
            rows = found.to_coco(image_id)
            for r in rows:
                r["file_name"] = found.source
            records += rows
            if draw_dir is not None:
                save_png(at_least(found, display_threshold).draw(), Path(draw_dir) / f"{Path(found.source).stem}.png")
    atomic_write_text(out_file, json.dumps(records, indent=1) + "\n")
    return records


def at_least(found: Detections, threshold: float) -> Detections:
    """The detections of one image scoring at least `threshold` (they come highest score first)."""
    keep = found.scores >= threshold
    return replace(found, boxes=found.boxes[keep], labels=[n for n, k in zip(found.labels, keep) if k],
                   scores=found.scores[keep], category_ids=found.category_ids[keep],
                   masks=None if found.masks is None else found.masks[keep])


def write_masks(batches: Iterable[list[SegmentationPrediction]], out_dir: Path, overlay: bool) -> list[dict[str, Any]]:
    """OUT_DIR/<stem>.png: the class id of each pixel (8-bit, 16-bit beyond 256 classes); with overlay,
    OUT_DIR/overlay/<stem>.png: the image blended with the class colours, a legend of the classes present
    below it."""
    from visiontl.visualize import save_png

    rows = []
    for batch in batches:
        for seg in batch:
            stem = Path(seg.source).stem
            path = save_png(Image.fromarray(seg.mask), Path(out_dir) / f"{stem}.png")
            row = {"file": seg.source, "mask": str(path),
                   "classes_present": sorted({seg.classes[i] for i in np.unique(seg.mask)})}
            if overlay:
                row["overlay"] = str(save_png(seg.draw(), Path(out_dir) / "overlay" / f"{stem}.png"))
            rows.append(row)
    return rows
