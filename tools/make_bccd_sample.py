"""Build the demo's small BCCD sample (data/samples/bccd) from the full BCCD set in ../shared/datasets/bccd.

    python tools/make_bccd_sample.py [--src ../shared/datasets/bccd] [--out data/samples/bccd]

Takes a fixed, seeded choice of images from BCCD's own train and val lists, halves their size
(640x480 -> 320x240, JPEG quality 90), scales the VOC boxes with them, and copies BCCD's MIT licence.
"""

from __future__ import annotations

import argparse
import random
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

SCALE = 0.5
COUNTS = {"train": 60, "val": 30}


def scale_annotation(src: Path, dst: Path, scale: float) -> None:
    tree = ET.parse(src)
    root = tree.getroot()
    size = root.find("size")
    for tag in ("width", "height"):
        node = size.find(tag)
        node.text = str(round(int(node.text) * scale))
    for box in root.iter("bndbox"):
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            node = box.find(tag)
            node.text = str(round(float(node.text) * scale))
    path = root.find("path")
    if path is not None:
        root.remove(path)  # an absolute path from the original author's machine
    tree.write(dst, encoding="unicode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "bccd")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "samples" / "bccd")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    src, out = args.src.resolve(), args.out
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for split, count in COUNTS.items():
        ids = (src / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        chosen = sorted(rng.sample(ids, count))
        for image_id in chosen:
            with Image.open(src / "JPEGImages" / f"{image_id}.jpg") as im:
                w, h = im.size
                im.convert("RGB").resize((round(w * SCALE), round(h * SCALE)), Image.BICUBIC).save(
                    out / "JPEGImages" / f"{image_id}.jpg", quality=90)
            scale_annotation(src / "Annotations" / f"{image_id}.xml", out / "Annotations" / f"{image_id}.xml", SCALE)
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(chosen) + "\n")
    shutil.copyfile(src / "LICENSE", out / "LICENSE")
    print(f"wrote {sum(COUNTS.values())} images to {out}")


if __name__ == "__main__":
    main()
