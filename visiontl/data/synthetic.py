"""Small synthetic datasets for tests and examples: learnable, deterministic, written as real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Each class is a coloured shape on a noisy background: easy to learn, not trivially constant.
_COLORS = [(220, 40, 40), (40, 200, 60), (50, 70, 220), (230, 200, 40), (160, 60, 200)]


def make_imagefolder(root: Path, classes: int = 3, train_per_class: int = 8, val_per_class: int = 4,
                     size: int = 32, seed: int = 0) -> Path:
    """Write root/{train,val}/class_<k>/*.png and return root."""
    if not 2 <= classes <= len(_COLORS):
        raise ValueError(f"classes should be in the range [2, {len(_COLORS)}], got {classes}")
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = Path(root) / split / f"class_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
                r = int(rng.integers(size // 5, size // 3))
                cy, cx = rng.integers(r, size - r, size=2)
                yy, xx = np.ogrid[:size, :size]
                disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                img[disk] = _COLORS[k]
                Image.fromarray(img).save(folder / f"{split}_{k}_{i:03d}.png")
    return Path(root)
