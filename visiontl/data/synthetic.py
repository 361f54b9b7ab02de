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


def make_detection_coco(root: Path, images: int = 8, size: tuple[int, int] = (96, 72), category_ids: tuple[int, ...] = (0, 5, 17),
                        empty: int = 1, seed: int = 0, split: str = "train") -> Path:
    """Write root/<split>/*.png and root/<split>.json (COCO) with solid rectangles (box and polygon), one colour
    per category; the first `empty` images have no objects. Returns the JSON path."""
    import json

    rng = np.random.default_rng(seed)
    w, h = size
    folder = Path(root) / split
    folder.mkdir(parents=True, exist_ok=True)
    coco: dict = {"images": [], "annotations": [],
                  "categories": [{"id": c, "name": f"shape_{c}", "supercategory": "shapes"} for c in category_ids]}
    ann_id = 0  # ids from 0, as some exporters write them
    for i in range(images):
        img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        file_name = f"{split}/img_{i:03d}.png"
        coco["images"].append({"id": 100 + i, "file_name": file_name, "width": w, "height": h})
        for _ in range(0 if i < empty else int(rng.integers(1, 4))):
            k = int(rng.integers(0, len(category_ids)))
            bw, bh = int(rng.integers(w // 6, w // 3)), int(rng.integers(h // 6, h // 3))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            img[y : y + bh, x : x + bw] = _COLORS[k % len(_COLORS)]
            polygon = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            coco["annotations"].append({"id": ann_id, "image_id": 100 + i, "category_id": category_ids[k],
                                        "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                                        "segmentation": [polygon]})
            ann_id += 1
        Image.fromarray(img).save(Path(root) / file_name)
    path = Path(root) / f"{split}.json"
    path.write_text(json.dumps(coco))
    return path


def make_segmentation_folders(root: Path, train: int = 6, val: int = 3, size: tuple[int, int] = (67, 53),
                              classes: int = 3, ignore_index: int = 255, seed: int = 0) -> Path:
    """Write root/images/{train,val}/*.jpg and root/masks/{train,val}/*.png: coloured disks on a dark
    background (class k+1 = colour k, background 0) with a thin ignore_index border around each disk."""
    rng = np.random.default_rng(seed)
    w, h = size
    for split, count in (("train", train), ("val", val)):
        (Path(root) / "images" / split).mkdir(parents=True, exist_ok=True)
        (Path(root) / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = rng.integers(0, 50, size=(h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), dtype=np.uint8)
            yy, xx = np.ogrid[:h, :w]
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(1, classes))
                r = int(rng.integers(min(w, h) // 8, min(w, h) // 4))
                cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
                d2 = (yy - cy) ** 2 + (xx - cx) ** 2
                img[d2 <= r * r] = _COLORS[(k - 1) % len(_COLORS)]
                mask[(d2 > (r - 1) ** 2) & (d2 <= (r + 1) ** 2)] = ignore_index  # an unsure rim, as annotators leave
                mask[d2 <= (r - 1) ** 2] = k
            Image.fromarray(img).save(Path(root) / "images" / split / f"{split}_{i:03d}.jpg", quality=95)
            Image.fromarray(mask).save(Path(root) / "masks" / split / f"{split}_{i:03d}.png")
    return Path(root)
