"""Pretrained vs scratch for detection: Faster R-CNN (FPN) on MobileNetV2, BCCD, a short CPU budget.

    python tools/bench_detection_pretrained.py [--bccd ../shared/datasets/bccd] [--epochs 3]
        [--min-size 320] [--arch faster_rcnn] [--out runs/bench_detection]

Both runs use the same data (BCCD train split; scores on its val split after every epoch and on its test
split at the end), epochs, batch, optimizer, schedule, augmentation and seed; only `model.weights`
differs (imagenet vs none). Prints a markdown table and writes results.md / results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from benchlib import report

from visiontl.config import build_config
from visiontl.engine.inference import evaluate_checkpoint
from visiontl.engine.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def config(args: argparse.Namespace, weights: str, run_dir: Path) -> dict:
    return {
        "task": "detection",
        "model": {"arch": args.arch, "backbone": "mobilenet_v2", "weights": weights, "neck": "fpn",
                  "feature_levels": 3, "fpn_channels": 128, "min_size": args.min_size,
                  "max_size": round(args.min_size * 4 / 3), "ssd_size": args.min_size, "ssd_scale_range": [0.07, 0.6]},
        "data": {"format": "voc", "root": str(args.bccd), "train": "train", "val": "val", "augment": "light", "vflip": True},
        "finetune": {"strategy": "full"},
        "train": {"epochs": args.epochs, "batch_size": 4, "lr": 0.01, "optimizer": "sgd", "schedule": "cosine",
                  "warmup_steps": 20, "clip_grad": 10.0, "workers": 2, "seed": 0, "progress": False},
        "run": {"dir": str(run_dir)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=ROOT.parent / "shared" / "datasets" / "bccd")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--min-size", type=int, default=320)
    parser.add_argument("--arch", default="faster_rcnn", choices=["faster_rcnn", "ssd", "ssdlite"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_detection")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for weights in ("imagenet", "none"):
        run_dir = args.out / f"{args.arch}_{weights}"
        started = time.perf_counter()
        val = train(build_config(config(args, weights, run_dir)), force=True)
        seconds = time.perf_counter() - started
        test = evaluate_checkpoint(run_dir / "checkpoints" / "last.pt", ["data.val=test"], run_dir / "test")
        rows.append({"weights": weights, "val_AP50": val["bbox/AP50"], "val_AP": val["bbox/AP"],
                     "test_AP50": test["bbox/AP50"], "test_AP": test["bbox/AP"], "train_seconds": round(seconds)})
        print(json.dumps(rows[-1]))
    report(args.out, f"{args.arch} + FPN, MobileNetV2, {args.epochs} epochs, shorter side {args.min_size} px, batch 4, "
           "SGD lr 0.01 cosine", ["backbone weights", "val AP50", "val AP", "test AP50", "test AP", "train + val seconds"],
           [[r["weights"], f"{r['val_AP50']:.3f}", f"{r['val_AP']:.3f}", f"{r['test_AP50']:.3f}", f"{r['test_AP']:.3f}",
             str(r["train_seconds"])] for r in rows], rows)

if __name__ == "__main__":
    main()
