"""Active learning: rank unlabelled images by how much labelling them should teach the model next.

Three strategies (docs/active-learning.md has the formulas and the loop they belong to):

- `uncertainty`: how unsure the model is. Classification: least confidence, 1 - max_c p_c. Detection: the
  mean over the image's detections scoring at least DETECTION_FLOOR of 1 - |2s - 1| (1 for a detection at
  0.5, 0 for one at 0 or 1); an image with no such detection scores 1, the maximum (nothing found: the
  model is blind there or the image is empty, and only a label says which). Semantic segmentation: the mean
  over pixels of 1 - max_c p_c.
- `entropy`: the same images through Shannon entropy in nats. Classification: -sum_c p_c ln p_c.
  Detection: the mean binary entropy -s ln s - (1 - s) ln(1 - s) of the detections scoring at least the
  floor; ln 2 (the maximum) for an image with none. Segmentation: the mean over pixels of the entropy.
- `diversity`: k-center greedy (core-set) on the L2-normalised, globally average-pooled deepest feature map
  of the model's own backbone: each pick is the image farthest from everything chosen so far (the labelled
  pool when given and the earlier picks; with no labelled pool the first pick is the image farthest from
  the pool's mean feature); its score is that distance.

Scores: higher means label it sooner. Ties go to the file name that sorts first.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visiontl.errors import DataError

STRATEGIES = ("uncertainty", "entropy", "diversity")
TASK_FORMATS = ("labelstudio", "cvat")
DETECTION_FLOOR = 0.05  # detections scoring below this are ignored by the detection rules
UNSURE_BAND = (0.3, 0.7)  # detection scores counted as "unsure" in the reasons
CENTER_BLOCK = 1024  # centers compared at once in k_center_greedy (bounds its memory)


@dataclass(frozen=True)
class Ranked:
    file: Path
    score: float  # higher: label it sooner
    reason: str  # why, in a few words


# --- the rules, on plain arrays ---------------------------------------------------------------------------


def least_confidence(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """1 - the largest probability along `axis` (the class axis)."""
    return 1.0 - np.max(probs, axis=axis)


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along `axis` (0 ln 0 = 0)."""
    p = np.asarray(probs)
    logs = np.log(np.where(p > 0, p, 1))
    return -np.sum(p * logs, axis=axis)


def binary_entropy(scores: np.ndarray) -> np.ndarray:
    """-s ln s - (1 - s) ln(1 - s) in nats, elementwise (0 at s = 0 and 1, ln 2 at 0.5)."""
    s = np.asarray(scores, dtype=np.float64)
    return entropy(np.stack([s, 1.0 - s], axis=-1), axis=-1)


def detection_uncertainty(scores: np.ndarray, floor: float = DETECTION_FLOOR) -> float:
    """Mean of 1 - |2s - 1| over the detection scores s >= floor; 1.0 when there is none."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[s >= floor]
    return float(np.mean(1.0 - np.abs(2.0 * s - 1.0))) if len(s) else 1.0


def detection_entropy(scores: np.ndarray, floor: float = DETECTION_FLOOR) -> float:
    """Mean binary entropy of the detection scores s >= floor; ln 2 when there is none."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[s >= floor]
    return float(np.mean(binary_entropy(s))) if len(s) else math.log(2)


def k_center_greedy(features: np.ndarray, k: int, seeds: np.ndarray | None = None) -> list[tuple[int, float, int]]:
    """Pick min(k, N) rows of `features` (N x D) one at a time, each the row farthest (Euclidean) from its
    nearest center, the centers being `seeds` (M x D) and every earlier pick. Without seeds the first pick is
    the row farthest from the mean row (the mean is a start only, never a center). Returns (row, its distance
    at pick time, its nearest center) per pick, in pick order; the nearest center is a seed row 0..M-1,
    M + the position of an earlier pick, or -1 for the mean. Ties go to the lowest row."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    virtual = seeds is None or len(seeds) == 0
    if virtual:
        centers, offset = x.mean(axis=0, keepdims=True), 0
        nearest = np.full(n, -1)
        dist = np.linalg.norm(x - centers[0], axis=1)
    else:
        centers, offset = np.asarray(seeds, dtype=np.float64), len(seeds)
        dist, nearest = np.full(n, np.inf), np.zeros(n, dtype=np.int64)
        for start in range(0, len(centers), CENTER_BLOCK):
            block = centers[start : start + CENTER_BLOCK]
            d = np.linalg.norm(x[:, None, :] - block[None, :, :], axis=2)
            closer = d.min(axis=1) < dist
            nearest = np.where(closer, start + d.argmin(axis=1), nearest)
            dist = np.minimum(dist, d.min(axis=1))
    picks: list[tuple[int, float, int]] = []
    taken = np.zeros(n, dtype=bool)
    for _ in range(min(k, n)):
        i = int(np.argmax(np.where(taken, -np.inf, dist)))
        picks.append((i, float(dist[i]), int(nearest[i])))
        taken[i] = True
        d = np.linalg.norm(x - x[i], axis=1)
        if virtual and len(picks) == 1:  # the mean only chose the first pick; it covers nothing
            dist, nearest = d, np.zeros(n, dtype=np.int64)
            continue
        closer = d < dist
        nearest = np.where(closer, offset + len(picks) - 1, nearest)
        dist = np.minimum(dist, d)
    return picks


# --- reasons ----------------------------------------------------------------------------------------------


def classification_reason(strategy: str, probs: np.ndarray, classes: list[str]) -> str:
    order = np.argsort(-probs, kind="stable")[:2]
    top = ", ".join(f"{classes[j]} {probs[j]:.2f}" for j in order)
    if strategy == "entropy":
        return f"entropy {entropy(probs):.2f} nats (top: {top})"
    return f"least confidence {least_confidence(probs):.2f} (top: {top})"


def detection_reason(strategy: str, scores: np.ndarray, names: list[str], floor: float = DETECTION_FLOOR) -> str:
    s = np.asarray(scores, dtype=np.float64)
    kept = s >= floor
    if not kept.any():
        return f"no detection scoring {floor:g} or more: nothing found"
    s, names = s[kept], [n for n, k in zip(names, kept) if k]
    if strategy == "entropy":
        k = int(np.argmin(np.abs(s - 0.5)))
        return (f"mean binary entropy {detection_entropy(s, floor):.2f} nats over {len(s)} detection(s) "
                f"(most uncertain: {names[k]} {s[k]:.2f})")
    lo, hi = UNSURE_BAND
    unsure = int(((s >= lo) & (s <= hi)).sum())
    return (f"{unsure} of {len(s)} detection(s) between {lo:g} and {hi:g} confidence; "
            f"mean margin {np.mean(np.abs(2 * s - 1)):.2f}")


def segmentation_reason(strategy: str, probs: np.ndarray) -> str:
    """probs: C x H x W."""
    unsure = f"{float(np.mean(np.max(probs, axis=0) < 0.5)):.0%} of pixels under 0.5 confidence"
    if strategy == "entropy":
        return (f"mean pixel entropy {float(np.mean(entropy(probs, axis=0))):.2f} nats (at most "
                f"{math.log(len(probs)):.2f}); {unsure}")
    return f"mean pixel uncertainty {float(np.mean(least_confidence(probs, axis=0))):.2f}; {unsure}"


# --- ranking with a model ---------------------------------------------------------------------------------


def rank_images(predictor: Any, files: list[Path], strategy: str, top: int, labelled: list[Path] | None = None,
                batch_size: int = 16, device: str | None = None, progress: bool = True) -> list[Ranked]:
    """The `top` images of `files` to label next by `strategy`, best first. `predictor`: a checkpoint's
    Predictor (visiontl.predictor.checkpoint_predictor; diversity reads its backbone); `labelled`: images
    already labelled (diversity only: the chosen pool it starts from; they are never ranked); `device`: auto,
    cpu or cuda (default: the config's train.device)."""
    if strategy not in STRATEGIES:
        raise DataError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if top < 1:
        raise DataError(f"top {top}: rank at least 1 image")
    if labelled and strategy != "diversity":
        raise DataError(f"a labelled pool is used by the diversity strategy only, not by {strategy}")
    if strategy == "diversity" and predictor.backbone is None:
        raise DataError(f"{predictor.path}: diversity compares the backbone's features, which an exported file does "
                        "not give; rank with its checkpoint")
    known = {Path(f).resolve() for f in labelled or []}
    files = sorted({Path(f) for f in files if Path(f).resolve() not in known}, key=str)
    if not files:
        raise DataError("no images to rank (every one is in the labelled pool)")
    predictor.to(device or predictor.config.train.device)
    if strategy == "diversity":
        return _diversity(predictor, files, top, sorted(map(Path, labelled or []), key=str), batch_size, progress)
    task = predictor.task
    if task == "classification":
        scored = _classification_scores(predictor, files, strategy, batch_size, progress)
    elif task in ("detection", "instance_segmentation"):
        scored = _detection_scores(predictor, files, strategy, max(1, batch_size // 2), progress)
    elif task == "segmentation":
        scored = _segmentation_scores(predictor, files, strategy, max(1, batch_size // 4), progress)
    else:
        raise DataError(f"ranking is not built for task {task!r}")
    ranked = [Ranked(files[i], score, reason) for i, score, reason in scored]
    return sorted(ranked, key=lambda r: (-r.score, str(r.file)))[:top]


def _batches(files: list[Path], batch_size: int, by_size: bool, desc: str, progress: bool) -> Iterator[list[int]]:
    """Row indices of `files` in batches; with by_size, images of one size only per batch (read from the
    headers), so no image is padded for another and a score never depends on its batch."""
    from tqdm.auto import tqdm

    from visiontl.data.images import check_image

    groups: dict[Any, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(check_image(f) if by_size else None, []).append(i)
    chunks = [rows[s : s + batch_size] for rows in groups.values() for s in range(0, len(rows), batch_size)]
    yield from tqdm(chunks, desc=desc, unit="batch", disable=not progress)


def _classification_scores(predictor: Any, files: list[Path], strategy: str, batch_size: int,
                           progress: bool) -> Iterator[tuple[int, float, str]]:
    """The class probabilities of the Predictor's forward pass, scored by the rule."""
    rule = entropy if strategy == "entropy" else least_confidence
    for rows in _batches(files, batch_size, False, f"rank ({strategy})", progress):
        probs = predictor.forward(predictor.preprocess([_read(files[i]) for i in rows])).numpy().astype(np.float64)
        for i, p in zip(rows, probs):
            yield i, float(rule(p)), classification_reason(strategy, p, predictor.classes)


def _detection_scores(predictor: Any, files: list[Path], strategy: str, batch_size: int,
                      progress: bool) -> Iterator[tuple[int, float, str]]:
    """The scores of every detection the model keeps (its forward pass, before any score threshold)."""
    label_map = predictor.label_map
    rule = detection_entropy if strategy == "entropy" else detection_uncertainty
    for rows in _batches(files, batch_size, True, f"rank ({strategy})", progress):
        outputs = predictor.forward(predictor.preprocess([_read(files[i]) for i in rows]))
        for i, out in zip(rows, outputs):
            scores = out["scores"].double().numpy()
            names = [label_map.name(int(k)) for k in out["labels"]]
            yield i, rule(scores), detection_reason(strategy, scores, names)


def _segmentation_scores(predictor: Any, files: list[Path], strategy: str, batch_size: int,
                         progress: bool) -> Iterator[tuple[int, float, str]]:
    """The pixels' class probabilities (softmax of the forward pass's logits, images of one size batched)."""
    rule = entropy if strategy == "entropy" else least_confidence
    for rows in _batches(files, batch_size, True, f"rank ({strategy})", progress):
        logits = predictor.forward(torch.stack(predictor.preprocess([_read(files[i]) for i in rows])))
        probs = torch.stack(logits).softmax(dim=1).numpy()
        for i, p in zip(rows, probs):
            yield i, float(np.mean(rule(p, axis=0), dtype=np.float64)), segmentation_reason(strategy, p)


def _diversity(predictor: Any, files: list[Path], top: int, labelled: list[Path], batch_size: int,
               progress: bool) -> list[Ranked]:
    feats = image_features(predictor, files, batch_size, progress)
    seeds = image_features(predictor, labelled, batch_size, progress) if labelled else None
    ranked = []
    for row, dist, nearest in k_center_greedy(feats, top, seeds):
        if nearest < 0:
            reason = f"farthest from the pool's mean feature: distance {dist:.3g}"
        elif nearest < len(labelled):
            reason = f"farthest from the labelled pool: distance {dist:.3g} (nearest: {labelled[nearest].name})"
        else:
            near = ranked[nearest - len(labelled)].file.name
            reason = f"farthest from the chosen images: distance {dist:.3g} (nearest: {near})"
        ranked.append(Ranked(files[row], dist, reason))
    return ranked


@torch.no_grad()
def image_features(predictor: Any, files: list[Path], batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """N x C: the backbone's deepest feature map (eval mode), averaged over space and L2-normalised, of each
    image prepared as the model prepares it (the Predictor's preprocess; detection: then the detector's own
    resize; segmentation: full size), in float64. `predictor`: a checkpoint's, on the device to use."""
    backbone = predictor.backbone.eval()
    prepare = _model_inputs(predictor)
    by_size = predictor.task != "classification"
    out = np.zeros((len(files), backbone.out_channels))
    for rows in _batches(files, batch_size, by_size, "features", progress):
        deepest = next(reversed(backbone(prepare([_read(files[i]) for i in rows])).values()))
        pooled = torch.nn.functional.normalize(deepest.float().mean(dim=(2, 3)), dim=1)
        out[rows] = pooled.cpu().double().numpy()
    return out


def _model_inputs(predictor: Any) -> Any:
    """A function: list of HxWx3 uint8 arrays -> the normalised batch the model's backbone sees."""
    device = predictor.device
    if predictor.task in ("detection", "instance_segmentation"):
        return lambda arrays: predictor.model.transform([x.to(device) for x in predictor.preprocess(arrays)])[0].tensors
    if predictor.task == "classification":
        return lambda arrays: predictor.preprocess(arrays).to(device)
    return lambda arrays: torch.stack(predictor.preprocess(arrays)).to(device)


def _read(path: Path) -> np.ndarray:
    from visiontl.data.images import read_image

    return read_image(path)


# --- writing ----------------------------------------------------------------------------------------------


def write_list(ranked: list[Ranked], path: Path) -> None:
    """One line per image, best first: `<path>\\t<score>\\t<reason>`."""
    from visiontl.atomic import atomic_write_text

    lines = [f"{r.file}\t{r.score:.6f}\t{' '.join(r.reason.split())}" for r in ranked]
    atomic_write_text(Path(path), "".join(f"{line}\n" for line in lines))


def common_folder(inputs: list[Path]) -> Path:
    """The deepest folder holding every input (a folder itself, or a file's parent)."""
    folders = [str(p.resolve() if p.is_dir() else p.resolve().parent) for p in map(Path, inputs)]
    return Path(os.path.commonpath(folders))


def write_tasks(ranked: list[Ranked], fmt: str, path: Path, root: Path, classes: Sequence[str] = (),
                image_prefix: str = "/data/local-files/?d=") -> Path:
    """The ranked images as the next labelling task, no annotations, file names relative to `root`.
    labelstudio: a task list `[{"data": {"image": image_prefix + name}}, ...]` in rank order; cvat: a CVAT for
    images 1.1 XML with those images, no shapes, and `classes` as its labels."""
    from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, ReadReport
    from visiontl.data.images import check_image

    if fmt not in TASK_FORMATS:
        raise DataError(f"task files are written as {' or '.join(TASK_FORMATS)}, not {fmt!r}")
    root, path = Path(root).resolve(), Path(path)
    records = []
    for i, r in enumerate(ranked):
        f = Path(r.file).resolve()
        if root not in f.parents:
            raise DataError(f"{r.file}: not inside {root}, which task file names are relative to")
        w, h = check_image(f)
        records.append(ImageRecord(i, f.relative_to(root).as_posix(), w, h))
    categories = [Category(k + 1, name) for k, name in enumerate(classes)] if fmt == "cvat" else []
    aset = AnnotationSet(categories, records, [], root, ReadReport("visiontl data rank"))
    if fmt == "cvat":
        from visiontl.data.formats.cvat import write_cvat

        write_cvat(aset, path)
        return path
    from visiontl.atomic import atomic_write_json
    from visiontl.data.formats.labelstudio import write_labelstudio

    # The writer gives every task an annotation (empty here), which Label Studio would import as labelled:
    # keep each task's data only.
    with tempfile.TemporaryDirectory() as tmp:
        write_labelstudio(aset, Path(tmp) / "tasks.json", image_prefix=image_prefix)
        tasks = json.loads((Path(tmp) / "tasks.json").read_text(encoding="utf-8"))
    atomic_write_json(path, [{"data": t["data"]} for t in tasks])
    return path
