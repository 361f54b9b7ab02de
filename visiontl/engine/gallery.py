"""gallery/: the worst and the best evaluated images by their per-image score, ground truth beside prediction.

    gallery/index.json   [{"png": "worst_1.png", "file": ..., "score": ..., "kind": "worst"}, ...]
    gallery/worst_1.png  the lowest score; worst_2.png the next ...; best_1.png the highest score ...

Only the chosen images (at most 2 x 4) are run through the model again, so this stays cheap at any split size.
"""

from __future__ import annotations

import math
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from visiontl.engine.checkpoint import atomic_write_bytes, atomic_write_json
from visiontl.visualize import png_bytes, stack, text_strip

EXAMPLES_PER_KIND = 4


def pick_examples(images: list[dict[str, Any]], k: int = EXAMPLES_PER_KIND) -> list[tuple[str, dict[str, Any]]]:
    """("worst", record) for the k lowest scores, then ("best", record) for the k highest, ties broken by file
    name; with fewer than 2k images, the worst take the larger half and no image is shown twice."""

    def worst_first(r: dict[str, Any]) -> tuple[float, str]:
        score = r["score"]
        return (-math.inf if math.isnan(score) else score), r["file"]  # a NaN score is as bad as it gets

    ranked = sorted(images, key=worst_first)
    n_worst = min(k, (len(ranked) + 1) // 2)
    worst, rest = ranked[:n_worst], ranked[n_worst:]
    best = sorted(rest, key=lambda r: (-worst_first(r)[0], r["file"]))[:k]
    return [("worst", r) for r in worst] + [("best", r) for r in best]


GALLERY_PNG = re.compile(r"(worst|best)_[0-9]+\.png")  # the names write_gallery gives its pictures


def write_gallery(folder: Path, images: list[dict[str, Any]], task: Any, model: nn.Module, dataset: Dataset,
                  device: torch.device, autocast: AbstractContextManager, classes: list[str]) -> list[dict[str, Any]]:
    """Draw the picked examples (`task.render_examples`) into folder/gallery and return its index."""
    gallery = Path(folder) / "gallery"
    # The previous gallery goes first, index before pictures, so a reader never mixes two runs; only the names
    # visiontl gives its pictures: other files in the folder are not ours.
    (gallery / "index.json").unlink(missing_ok=True)
    for old in gallery.glob("*.png"):
        if GALLERY_PNG.fullmatch(old.name):
            old.unlink()
    picked = pick_examples(images)
    pictures = task.render_examples(model, dataset, [r["index"] for _, r in picked], device, autocast, classes)
    index, rank = [], {"worst": 0, "best": 0}
    for (kind, record), picture in zip(picked, pictures):
        rank[kind] += 1
        name = f"{kind}_{rank[kind]}.png"
        caption = text_strip([record["file"], f"{kind} {rank[kind]}: score {record['score']:.3f}"], picture.width)
        atomic_write_bytes(gallery / name, png_bytes(stack([picture, caption])))
        index.append({"png": name, "file": record["file"], "score": record["score"], "kind": kind})
    atomic_write_json(gallery / "index.json", index)
    return index
