"""Pretrained vs scratch on real data: BCCD blood-cell crops, MobileNetV2, at equal epochs, for several
fractions of the training set.

    python tools/bench_pretrained_vs_scratch.py [--bccd ../shared/datasets/bccd] [--epochs 8]
        [--fractions 0.1 0.25 0.5 1.0] [--out runs/bench_pretrained]

Crops come from BCCD's own train / val lists (RBC subsampled to the size of the other classes, as the
demo does). For each fraction of the train crops (a seeded, per-class subset written as a CSV list), it
trains ImageNet MobileNetV2 with feature extraction (linear head, SGD epochs), ImageNet MobileNetV2 fully
fine-tuned, and the same network from random weights fully trained, all with the same epochs, batch,
optimizer and schedule; the full-data row also fits logistic regression on frozen features. Prints a
markdown table (val accuracy, macro F1, seconds) and writes it with a JSON copy into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import time
from pathlib import Path

from benchlib import report

from visiontl.backbones.weights import fetch
from visiontl.config import build_config
from visiontl.demo import CLASSES, cut_crops, demo_config, frozen_tensors_identical
from visiontl.engine.trainer import train

ROOT = Path(__file__).resolve().parents[1]

RUNS = [
    ("imagenet + feature extraction (linear head)", "imagenet", {"finetune.strategy": "feature_extraction", "train.lr": 0.01}),
    ("imagenet + full fine-tuning", "imagenet", {"finetune.strategy": "full"}),
    ("scratch + full training", "none", {"finetune.strategy": "full"}),
]


def subset_list(crops: Path, fraction: float, seed: int, out: Path) -> int:
    rng = random.Random(seed)
    rows = []
    for name in CLASSES:
        files = sorted((crops / "train" / name).glob("*.png"))
        keep = max(2, round(len(files) * fraction))
        rows += [(str(f.relative_to(crops)), name) for f in sorted(rng.sample(files, keep))]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return len(rows)


def val_list(crops: Path, out: Path) -> None:
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for name in CLASSES:
            writer.writerows((str(p.relative_to(crops)), name) for p in sorted((crops / "val" / name).glob("*.png")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=ROOT.parent / "shared" / "datasets" / "bccd")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_pretrained")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    weights_file = fetch("mobilenet_v2", log=print)
    crops = args.out / "crops"
    counts = cut_crops(args.bccd, crops)
    print("crops:", counts)
    val_list(crops, crops / "val.csv")
    results = []
    for fraction in args.fractions:
        n_train = subset_list(crops, fraction, seed=0, out=crops / f"train_{fraction}.csv")
        runs = RUNS + ([("imagenet + logistic regression on frozen features", "imagenet",
                         {"finetune.strategy": "feature_extraction", "model.head": "logistic_regression"})]
                       if fraction == 1.0 else [])
        for label, weights, overrides in runs:
            run_dir = args.out / f"{fraction}_{label.split()[0]}_{overrides['finetune.strategy']}_{overrides.get('model.head', 'linear')}"
            raw = demo_config(crops, run_dir, weights, args.epochs, overrides)
            raw["data"].update(format="csv", train=f"train_{fraction}.csv", val="val.csv")
            started = time.perf_counter()
            metrics = train(build_config(raw, source=label), force=True)
            seconds = time.perf_counter() - started
            row = {"fraction": fraction, "train_images": n_train, "run": label, "accuracy": metrics["accuracy"],
                   "macro_f1": metrics["macro_f1"], "seconds": round(seconds, 1)}
            if overrides["finetune.strategy"] == "feature_extraction":
                same, total = frozen_tensors_identical(run_dir / "checkpoints" / "last.pt", weights_file)
                row["frozen_identical"] = f"{same}/{total}"
            results.append(row)
            print(json.dumps(row))
    report(args.out, f"{args.epochs} epochs, {sum(counts['val'].values())} val crops",
           ["train fraction", "train crops", "run", "val accuracy", "macro F1", "seconds", "frozen tensors identical"],
           [[f"{r['fraction']:g}", str(r["train_images"]), r["run"], f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
             f"{r['seconds']:.0f}", r.get("frozen_identical", "")] for r in results], results)

if __name__ == "__main__":
    main()
