"""Pretrained vs scratch for semantic segmentation: U-Net on MobileNetV2, CamVid, a fixed CPU step budget.

    python tools/bench_segmentation_pretrained.py [--camvid ../shared/datasets/camvid] [--steps 120]
        [--crop 224] [--batch 8] [--out runs/bench_segmentation]

Both runs use the same data (CamVid train list, 367 images; scored on the val list, 101 images at full
480x360, 11 classes with void (11) ignored), steps, crop, batch, optimizer (AdamW 1e-3, cosine), standard
augmentation and seed; only `model.weights` differs (imagenet vs none). Prints a markdown table and
writes results.md / results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from benchlib import report

from visiontl.config import build_config
from visiontl.engine.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "datasets" / "camvid")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_segmentation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    epochs = math.ceil(args.steps / math.ceil(367 / args.batch))
    rows = []
    for weights in ("imagenet", "none"):
        raw = {
            "task": "segmentation",
            "model": {"arch": "unet", "backbone": "mobilenet_v2", "weights": weights},
            "data": {"format": "masks", "root": str(args.camvid), "train": "train.txt", "val": "val.txt",
                     "classes": CLASSES, "ignore_index": 11, "image_size": args.crop, "augment": "standard"},
            "train": {"epochs": epochs, "max_steps": args.steps, "batch_size": args.batch, "lr": 1e-3,
                      "optimizer": "adamw", "schedule": "cosine", "workers": 2, "seed": 0, "progress": False},
            "run": {"dir": str(args.out / f"unet_mobilenet_v2_{weights}")},
        }
        started = time.perf_counter()
        metrics = train(build_config(raw, source=f"bench {weights}"), force=True)
        rows.append({"weights": weights, "mIoU": metrics["mIoU"], "pixel_accuracy": metrics["pixel_accuracy"],
                     "mDice": metrics["mDice"], "seconds": round(time.perf_counter() - started)})
        print(json.dumps(rows[-1]))
    report(args.out, f"U-Net + MobileNetV2, {args.steps} steps of batch {args.batch} at {args.crop}x{args.crop} crops, "
           "AdamW 1e-3 cosine", ["backbone weights", "val mIoU", "val pixel accuracy", "val mDice", "seconds"],
           [[r["weights"], f"{r['mIoU']:.3f}", f"{r['pixel_accuracy']:.3f}", f"{r['mDice']:.3f}", str(r["seconds"])]
            for r in rows], rows)

if __name__ == "__main__":
    main()
