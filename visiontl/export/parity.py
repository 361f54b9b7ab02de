"""The parity check after every export: the exported file and the PyTorch model on the same images, and the
largest difference between them, by task (the figure compared with the tolerance):

- classification: the largest difference of a class probability (logits reported beside it);
- segmentation: the largest difference of a pixel's class probability (logits and the share of pixels given
  the same label reported beside it);
- detection: detections matched one to one (same class, IoU >= 0.5, greedily by score); the largest of
  |score difference|, |box coordinate difference| / the image's longer side and, for Mask R-CNN, |mask
  probability difference|; a detection only one side kept counts as its score minus the lowest score the
  other side would have kept (its score threshold, or the last score of a full list of
  model.detections_per_image), since a detection at the cut-off may fall on either side of it; detections
  whose score ties (within TIE_SCORE) with another of the same class are left out and counted, since which
  of them NMS and the top-k cut keep is decided by float noise.

The PyTorch side is the checkpoint's Predictor (visiontl.predictor), fed as `visiontl predict` feeds it: its
preprocess and forward (classification: its model on the pixels normalised with its mean and std, since the
check needs the logits before the softmax); the exported side gets the same resized pixels in [0, 1] and
normalises inside its graph, so the check covers that too.
Images: `--check-images DIR` (every image in it), else the first few of the checkpoint's val split, else a
few deterministic synthetic images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visiontl.errors import VisiontlError
from visiontl.export.graphs import DETECTION_TASKS, InputSpec
from visiontl.export.runtime import ExportedRuntime

DEFAULT_TOLERANCE = {"classification": 1e-4, "segmentation": 1e-3, "detection": 1e-3, "instance_segmentation": 1e-3}
CHECK_IMAGES = 4
MATCH_IOU = 0.5
# Scores this close are a tie: float noise between two runtimes (measured up to ~2e-7) can order them either way.
TIE_SCORE = 1e-5
BATCH = 16  # images per call when a classifier file takes any batch size
SYNTHETIC_SIZES = ((120, 160), (97, 131), (160, 120), (64, 64))  # (height, width), odd ones included


@dataclass
class Parity:
    task: str
    images: int
    source: str
    difference: float
    tolerance: float
    worst: str  # the image where the difference is largest
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.difference <= self.tolerance)

    def summary(self) -> str:
        f = self.figures
        if self.task == "classification":
            detail = (f"largest probability difference {f['probability']:.3g} (logits {f['logit']:.3g}); the same top "
                      f"class on {f['same_top1']} of {self.images} images")
        elif self.task == "segmentation":
            detail = (f"largest probability difference {f['probability']:.3g} (logits {f['logit']:.3g}); "
                      f"{100 * f['label_agreement']:.3f}% of pixels given the same label (lowest image)")
        else:
            masks = f", masks {f['mask']:.3g}" if "mask" in f else ""
            detail = (f"largest difference {self.difference:.3g}: boxes {f['box_px']:.3g} px, scores {f['score']:.3g}"
                      f"{masks}; {f['matched']} of {f['detections']} detections matched"
                      + (f", {f['tied']} left out for tied scores" if f.get("tied") else "")
                      + (f", {f['unmatched']} kept by one side only (largest margin over its cut-off "
                         f"{f['unmatched_margin']:.3g})" if f["unmatched"] else ""))
        return f"{detail}; tolerance {self.tolerance:g}, on {self.source}"

    def to_dict(self) -> dict[str, Any]:
        return {"difference": self.difference, "tolerance": self.tolerance, "images": self.images,
                "source": self.source, "worst": self.worst, **self.figures}


# ----------------------------------------------------------------------------------------------------------
# The images


def check_images(loaded: Any, folder: Path | None) -> tuple[list[tuple[str, np.ndarray]], str]:
    """[(name, HxWx3 uint8 RGB)] and where they came from, in words."""
    from visiontl.data.images import read_image
    from visiontl.engine.inference import image_files

    if folder is not None:
        files = image_files([Path(folder)])
        return [(str(f), read_image(f)) for f in files], f"{len(files)} images in {folder}"
    try:
        files = val_files(loaded)[:CHECK_IMAGES]
        if files:
            return [(str(f), read_image(f)) for f in files], f"{len(files)} val images ({loaded.config.data.val})"
    except (VisiontlError, OSError, ValueError):
        pass  # the dataset is elsewhere (another machine): synthetic images still check the arithmetic
    return synthetic_images(), f"{len(SYNTHETIC_SIZES)} synthetic images (the checkpoint's val images are not reachable)"


def val_files(loaded: Any) -> list[Path]:
    """The val split's image files of the checkpoint's config, in the split's order."""
    from visiontl.data import dataset_root

    cfg = loaded.config
    d = cfg.data
    if isinstance(d.val, float):  # taken from the train split when the run started: the checkpoint lists it
        return [dataset_root(d) / name for name in loaded.checkpoint.get("val_files") or []]
    if cfg.task == "classification":
        from visiontl.data.classification import load_split

        return [s.path for s in load_split(d, "val", loaded.classes)[0]]
    if cfg.task == "segmentation" and d.format == "masks":
        from visiontl.data.masks import find_pairs

        return [s.image for s in find_pairs(dataset_root(d), d.val, d.val_masks)]
    from visiontl.data import read_annotation_split

    aset = read_annotation_split(d, "val", list(loaded.classes) if d.format == "voc" else None)
    return [aset.image_path(img) for img in aset.images]


def synthetic_images() -> list[tuple[str, np.ndarray]]:
    """Noise with a few solid rectangles (something for a detector to find), the same on every machine."""
    rng = np.random.default_rng(0)
    images = []
    for k, (h, w) in enumerate(SYNTHETIC_SIZES):
        image = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
        for _ in range(3):
            bh, bw = int(rng.integers(h // 6, h // 2)), int(rng.integers(w // 6, w // 2))
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            image[y : y + bh, x : x + bw] = rng.integers(100, 255, size=3, dtype=np.uint8)
        images.append((f"synthetic_{k}", image))
    return images


# ----------------------------------------------------------------------------------------------------------
# The comparison


def measure(predictor: Any, runtime: ExportedRuntime, spec: InputSpec, images: list[tuple[str, np.ndarray]],
            tolerance: float, source: str) -> Parity:
    """The exported file (`runtime`) against the checkpoint's Predictor on `images`."""
    task = predictor.task
    images = [(name, _resized(array, spec.size)) for name, array in images]
    if task == "classification":
        figures, per_image = _classification(predictor, runtime, spec, images)
    elif task == "segmentation":
        figures, per_image = _segmentation(predictor, runtime, images)
    elif task in DETECTION_TASKS:
        figures, per_image = _detection(predictor, runtime, images, tolerance)
    else:
        raise ValueError(f"task {task!r} has no parity check")
    worst = max(per_image, key=per_image.get)
    return Parity(task, len(images), source, float(per_image[worst]), tolerance, worst, figures)


def _resized(array: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """The pixels at the file's fixed input size (as classification's eval pipeline resizes), or as they are."""
    if size is None or tuple(array.shape[:2]) == tuple(size):
        return array
    import albumentations as A

    return A.Resize(*size)(image=array)["image"]


def _normalized(array: np.ndarray, predictor: Any) -> torch.Tensor:
    """What the classifier's Predictor feeds its model, the pixels already at the input size: normalised with
    its mean and std, CHW."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    tf = A.Compose([A.Normalize(mean=predictor.mean, std=predictor.std, max_pixel_value=255.0), ToTensorV2()])
    return tf(image=array)["image"]


def _unit(array: np.ndarray) -> np.ndarray:
    """What the exported file is fed: [1, 3, H, W] float32 in [0, 1]."""
    return np.ascontiguousarray((array.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


@torch.no_grad()
def _classification(predictor: Any, runtime: ExportedRuntime, spec: InputSpec,
                    images: list[tuple[str, np.ndarray]]) -> tuple[dict[str, Any], dict[str, float]]:
    # A file with a free batch is checked on batches of several images, as it will be used; else one by one.
    size = BATCH if spec.batch is None else 1
    groups = [images[start : start + size] for start in range(0, len(images), size)]
    prob_diff, logit_diff, same, per_image = 0.0, 0.0, 0, {}
    for group in groups:
        ref = predictor.model(torch.stack([_normalized(a, predictor) for _, a in group])).float().numpy()
        out = runtime(np.concatenate([_unit(a) for _, a in group]))
        dp = np.abs(out["probabilities"] - _softmax(ref)).max(axis=1)
        dl = np.abs(out["logits"] - ref).max(axis=1)
        same += int((out["probabilities"].argmax(1) == ref.argmax(1)).sum())
        prob_diff, logit_diff = max(prob_diff, float(dp.max())), max(logit_diff, float(dl.max()))
        per_image.update({name: float(d) for (name, _), d in zip(group, dp)})
    return {"probability": prob_diff, "logit": logit_diff, "same_top1": same}, per_image


@torch.no_grad()
def _segmentation(predictor: Any, runtime: ExportedRuntime,
                  images: list[tuple[str, np.ndarray]]) -> tuple[dict[str, Any], dict[str, float]]:
    prob_diff, logit_diff, agreement, per_image = 0.0, 0.0, 1.0, {}
    for name, array in images:
        ref = predictor.forward(predictor.preprocess([array]))[0][None].numpy()
        out = runtime(_unit(array))
        dp = float(np.abs(_softmax(out["logits"]) - _softmax(ref)).max())
        prob_diff, logit_diff = max(prob_diff, dp), max(logit_diff, float(np.abs(out["logits"] - ref).max()))
        agreement = min(agreement, float((out["labels"] == ref.argmax(1)).mean()))
        per_image[name] = dp
    return {"probability": prob_diff, "logit": logit_diff, "label_agreement": agreement}, per_image


@torch.no_grad()
def _detection(predictor: Any, runtime: ExportedRuntime, images: list[tuple[str, np.ndarray]],
               tolerance: float) -> tuple[dict[str, Any], dict[str, float]]:
    m = predictor.config.model
    totals = {"box_px": 0.0, "score": 0.0, "matched": 0, "detections": 0, "unmatched": 0, "unmatched_margin": 0.0,
              "tied": 0}
    if predictor.task == "instance_segmentation":
        totals["mask"] = 0.0
    per_image = {}
    for name, array in images:
        ref = {k: v.numpy() for k, v in predictor.forward(predictor.preprocess([array]))[0].items()}
        out = runtime(_unit(array))
        figures = compare_detections(ref, out, max(array.shape[:2]), m.score_threshold, m.detections_per_image,
                                     tolerance)
        for key, value in figures.items():
            if key in ("matched", "detections", "unmatched", "tied"):
                totals[key] += value
            elif key != "difference":
                totals[key] = max(totals[key], value)
        per_image[name] = figures["difference"]
    return totals, per_image


def compare_detections(ref: dict[str, np.ndarray], out: dict[str, np.ndarray], longer_side: int, threshold: float,
                       limit: int, tolerance: float) -> dict[str, Any]:
    """The figures of one image's detections, PyTorch's (`ref`) against the file's (`out`).

    Detections whose score ties (within TIE_SCORE) with another of the same class on their side are left out, with
    those paired with them and those the other side kept in their place (same class, IoU >= MATCH_IOU,
    score within the tolerance): which of equally scored detections NMS and the top-k cut keep is decided by
    float noise. Untrained detectors score whole regions alike; trained ones rarely tie."""
    pairs, lonely_out, lonely_ref = match_detections(out, ref)
    tied_out, tied_ref = _tied(out), _tied(ref)
    compared = [(i, j) for i, j in pairs if not (tied_out[i] or tied_ref[j])]
    lonely_out = [i for i in lonely_out if not (tied_out[i] or _stands_in(out, i, ref, tied_ref, tolerance))]
    lonely_ref = [j for j in lonely_ref if not (tied_ref[j] or _stands_in(ref, j, out, tied_out, tolerance))]
    box_px = max((float(np.abs(out["boxes"][i] - ref["boxes"][j]).max()) for i, j in compared), default=0.0)
    score = max((abs(float(out["scores"][i] - ref["scores"][j])) for i, j in compared), default=0.0)
    margins = [float(out["scores"][i]) - _cut_off(ref["scores"], threshold, limit) for i in lonely_out]
    margins += [float(ref["scores"][j]) - _cut_off(out["scores"], threshold, limit) for j in lonely_ref]
    margin = max([0.0, *margins])
    detections = max(len(ref["scores"]), len(out["scores"]))
    figures = {"box_px": box_px, "score": score, "matched": len(compared), "detections": detections,
               "unmatched": len(lonely_out) + len(lonely_ref), "unmatched_margin": margin,
               "tied": max(len(out["scores"]) - len(compared) - len(lonely_out),
                           len(ref["scores"]) - len(compared) - len(lonely_ref))}
    parts = [score, box_px / max(1, longer_side), margin]
    if "masks" in out:
        figures["mask"] = max((float(np.abs(out["masks"][i] - ref["masks"][j]).max()) for i, j in compared),
                              default=0.0)
        parts.append(figures["mask"])
    figures["difference"] = max(parts)
    return figures


def _tied(dets: dict[str, np.ndarray]) -> np.ndarray:
    """Per detection: does another of the same class score within TIE_SCORE of it?"""
    tied = np.zeros(len(dets["scores"]), dtype=bool)
    for label in np.unique(dets["labels"]):
        members = np.flatnonzero(dets["labels"] == label)
        order = members[np.argsort(dets["scores"][members], kind="stable")]
        close = np.diff(dets["scores"][order].astype(np.float64)) <= TIE_SCORE
        tied[order[1:][close]] = True
        tied[order[:-1][close]] = True
    return tied


def _stands_in(a: dict[str, np.ndarray], i: int, b: dict[str, np.ndarray], tied_b: np.ndarray, tolerance: float) -> bool:
    """Is a's detection i what a kept in place of one of b's tied detections (same class, overlapping, scoring
    alike)?"""
    from torchvision.ops import box_iou

    near = tied_b & (b["labels"] == a["labels"][i]) & (np.abs(b["scores"] - a["scores"][i]) <= tolerance)
    if not near.any():
        return False
    iou = box_iou(torch.from_numpy(a["boxes"][i : i + 1]).float(), torch.from_numpy(b["boxes"][near]).float())
    return bool((iou >= MATCH_IOU).any())


def _cut_off(scores: np.ndarray, threshold: float, limit: int) -> float:
    """The lowest score a detector's output would have kept: the last score of a full list, else its threshold."""
    return float(scores.min()) if len(scores) >= limit else threshold


def match_detections(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pairs (i in a, j in b) of the same class with IoU >= MATCH_IOU, a's detections taken by descending
    score, each to its best free partner; and the unpaired of each side."""
    from torchvision.ops import box_iou

    if len(a["scores"]) and len(b["scores"]):
        iou = box_iou(torch.from_numpy(a["boxes"]).float(), torch.from_numpy(b["boxes"]).float()).numpy()
        iou[a["labels"][:, None] != b["labels"][None, :]] = -1.0
    else:
        iou = np.zeros((len(a["scores"]), len(b["scores"])))
    pairs, free = [], np.ones(len(b["scores"]), dtype=bool)
    for i in np.argsort(-a["scores"], kind="stable"):
        candidates = np.where(free, iou[i], -1.0) if iou.size else np.zeros(0)
        if candidates.size and candidates.max() >= MATCH_IOU:
            j = int(candidates.argmax())
            free[j] = False
            pairs.append((int(i), j))
    paired_a = {i for i, _ in pairs}
    return pairs, [i for i in range(len(a["scores"])) if i not in paired_a], [int(j) for j in np.flatnonzero(free)]
