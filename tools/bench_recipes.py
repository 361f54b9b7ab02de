"""The starting recipes (configs/starting/) against a plain training loop and against themselves from scratch,
per task, on the shipped data and a fixed step budget, in one invocation.

    python tools/bench_recipes.py [--tasks classification segmentation detection] [--steps TASK=N ...]
        [--runs recipe plain scratch] [--seeds 0 1] [--set KEY=VALUE ...] [--quick]
        [--bccd ../shared/datasets/bccd] [--camvid ../shared/datasets/camvid] [--out runs/bench_recipes]

Workloads (each skipped, with a line saying so, when its dataset is missing):
- detection: configs/starting/detection.yaml (Faster R-CNN + FPN, ImageNet MobileNetV2, 320 px) on BCCD's
  train list, 150 steps of batch 2, scored on its val list (bbox/AP50 and AP);
- segmentation: configs/starting/segmentation.yaml (U-Net, ImageNet MobileNetV2) on CamVid, 120 steps of
  batch 8 on 224 px crops (the recipe's 320 costs twice as much per step), scored on the full val frames (mIoU);
- classification: configs/starting/classification.yaml (ImageNet MobileNetV2, linear head) on the BCCD cell
  crops `visiontl demo` cuts (RBC subsampled), 60 steps of batch 16 at 96 px (the crops are 20-150 px), scored
  on the val crops (accuracy).

Each workload runs three times, all with the same model, data, batch, optimizer, LR and step budget:
- `recipe`: `vtl.train(recipe, overrides)` where the overrides name only the data, the budget
  (train.max_steps) and the run folder: the recipe's fine-tuning, warm-up, clipping and augmentation as shipped;
- `plain loop`: the loop a user writes from torchvision's tutorials around the same network (built by
  visiontl: torchvision's FasterRCNN, smp's U-Net decoder, a linear head, from the same ImageNet file and
  seed): every parameter trains, the recipe's optimizer and LR with a per-step cosine over the budget, no
  warm-up, no clipping, torchvision transforms v2 (detection: horizontal flips; segmentation: scale jitter,
  crop, flip, colour; classification: random resized crop, flip, colour), fp32;
- `recipe, scratch`: the recipe with model.weights=none and finetune.strategy=full (freezing random stages
  would only handicap it).
Each arm runs once per seed (--seeds; train.seed for the recipe, the plain loop's init, shuffle and augmentation
seed): the table gives every run and the mean per arm. `--set` adds overrides to the recipe runs (to try a change
to a starting recipe before making it). All are scored by the same evaluator (visiontl's task.evaluate on the same val loader) once the budget is
spent. Wall seconds count everything the run does (the recipe validates after each epoch too; the plain loop
once); train seconds are the optimizer steps alone. Prints a markdown table and writes results.md /
results.json into --out.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from bench_train import TutorialClassification, TutorialDetection, _Pairs, tutorial_loss
from benchlib import report
from torch.utils.data import DataLoader, Dataset

import visiontl as vtl
from visiontl.backbones import create_backbone
from visiontl.config import Config
from visiontl.data.sampling import EpochSampler
from visiontl.engine.seed import seed_everything, worker_init
from visiontl.engine.trainer import make_loader
from visiontl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
RUNS = {"recipe": "recipe", "plain": "plain loop", "scratch": "recipe, scratch"}
CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist"]


@dataclass
class Workload:
    task: str
    recipe: Path
    steps: int
    metrics: tuple[str, ...]  # the first is the headline
    overrides: dict[str, Any]  # data and budget only: what any user of the recipe sets
    train_images: int


def workloads(args: argparse.Namespace) -> list[Workload]:
    found = []
    for task in args.tasks:
        source = args.camvid if task == "segmentation" else args.bccd
        if not source.is_dir():
            print(f"{task}: skipped ({source} not found)")
            continue
        if task == "detection":
            found.append(Workload(task, ROOT / "configs/starting/detection.yaml", 150, ("bbox/AP50", "bbox/AP"), {
                "data.format": "voc", "data.root": str(args.bccd), "data.train": "train", "data.val": "val"}, 205))
        elif task == "segmentation":
            found.append(Workload(task, ROOT / "configs/starting/segmentation.yaml", 120, ("mIoU", "pixel_accuracy"), {
                "data.root": str(args.camvid), "data.train": "train.txt", "data.val": "val.txt",
                "data.classes": CAMVID_CLASSES, "data.ignore_index": 11, "data.image_size": 224}, 367))
        else:
            from visiontl.demo import cut_crops

            crops = args.out / "crops"
            if not crops.is_dir():
                cut_crops(args.bccd, crops)
            found.append(Workload(task, ROOT / "configs/starting/classification.yaml", 60, ("accuracy", "macro_f1"), {
                "data.root": str(crops), "data.image_size": 96}, len(list((crops / "train").rglob("*.png")))))
    for w in found:
        w.steps = 2 if args.quick else args.steps.get(w.task, w.steps)
        if args.quick:  # a check of the tool itself: validation on 5% of the train images, not the val split
            w.overrides["data.val"] = 0.05
        batch = vtl.load_config(w.recipe).train.batch_size
        # the budget: max_steps, and the whole epochs it reaches into (the schedule spans epochs x steps per epoch
        # where that is shorter than train.max_steps: the recipe's own epochs would stretch one cosine cycle over
        # far more steps than run)
        w.overrides.update({"train.max_steps": w.steps, "train.epochs": math.ceil(w.steps * batch / w.train_images),
                            "train.progress": False, "train.seed": 0, "train.device": "cpu" if args.cpu else "auto"})
    return found


# ---- the plain loop -------------------------------------------------------------------------------------


def run_plain(w: Workload, cfg: Config, device: torch.device, seed: int) -> dict[str, Any]:
    """The tutorial-style loop around visiontl's network and evaluator, for exactly w.steps optimizer steps."""
    seed_everything(seed, False)
    task = get_task(cfg)
    data = task.prepare_data(cfg)
    backbone = create_backbone(cfg.model.backbone, cfg.model.weights)
    model = task.build_model(cfg, backbone, data.classes).to(device)
    vis_train, vis_val = task.datasets(cfg, data, backbone, augment=True)
    collate: Callable | None = None
    if w.task == "detection":
        dataset: Dataset = TutorialDetection(vis_train, train=True)
        collate = lambda batch: tuple(zip(*batch))  # noqa: E731 (the tutorial's utils.collate_fn)
    elif w.task == "segmentation":
        from bench_data import V2Segmentation

        dataset = _Pairs(V2Segmentation(vis_train, cfg.data.image_size, cfg.data.ignore_index, backbone.mean, backbone.std))
    else:
        dataset = TutorialClassification(vis_train, cfg.data.image_size, backbone.mean, backbone.std)
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, num_workers=cfg.train.workers,
                        collate_fn=collate, worker_init_fn=worker_init, drop_last=True,
                        generator=torch.Generator().manual_seed(seed), persistent_workers=cfg.train.workers > 0)
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay) if t.optimizer == "sgd"
        else torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=w.steps)
    model.train()
    started = time.perf_counter()
    batches = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
    for step, batch in zip(range(w.steps), batches):
        loss = tutorial_loss(w.task, model, batch, device, cfg.data.ignore_index)
        if not math.isfinite(loss.item()):
            raise SystemExit(f"plain loop, {w.task}: loss is {loss.item()} at step {step + 1}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    train_seconds = time.perf_counter() - started
    val_loader = make_loader(vis_val, EpochSampler(len(vis_val), shuffle=False, seed=0), t.batch_size, t.workers,
                             task.collate, device)
    metrics = task.evaluate(model, val_loader, device, data.classes, contextlib.nullcontext())
    return {**{m: float(metrics[m]) for m in w.metrics}, "train_seconds": train_seconds}


# ---- the recipe -----------------------------------------------------------------------------------------


def run_recipe(w: Workload, overrides: dict[str, Any]) -> dict[str, Any]:
    run = vtl.train(w.recipe, overrides, force=True)
    with open(run.dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {**{m: float(run.metrics[m]) for m in w.metrics}, "epochs": len(rows),
            "train_seconds": sum(float(r["train_seconds"]) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["classification", "segmentation", "detection"],
                        choices=["detection", "segmentation", "classification"])
    parser.add_argument("--bccd", type=Path, default=SHARED / "bccd")
    parser.add_argument("--camvid", type=Path, default=SHARED / "camvid")
    parser.add_argument("--quick", action="store_true", help="check the tool, not the recipes: 2 steps per run, "
                        "validation on 5%% of the train images")
    parser.add_argument("--steps", nargs="+", default=[], metavar="TASK=N", help="another step budget for a task "
                        "(segmentation=45)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="which of the three to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="run every arm once per seed")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="settings",
                        help="overrides for the recipe runs (data.augment=light)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where CUDA is available")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_recipes")
    args = parser.parse_args()
    args.steps = {task: int(n) for task, _, n in (item.partition("=") for item in args.steps)}
    settings = dict(item.partition("=")[::2] for item in args.settings)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for w in workloads(args):
        for label, seed in itertools.product([RUNS[r] for r in args.runs], args.seeds):
            name = f"{w.task}_{label.replace(', ', '_').replace(' ', '_')}_seed{seed}"
            overrides = {**w.overrides, "train.seed": seed, "run.dir": str(args.out / name)}
            if label != "plain loop":
                overrides.update(settings)
            if label == "recipe, scratch":
                overrides.update({"model.weights": "none", "finetune.strategy": "full"})
            started = time.perf_counter()
            if label == "plain loop":
                cfg = vtl.load_config(w.recipe, overrides)
                result = run_plain(w, cfg, torch.device("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available()
                                                        else "cpu"), seed)
            else:
                result = run_recipe(w, overrides)
            rows.append({"task": w.task, "run": label, "seed": seed, "steps": w.steps, "metric": w.metrics[0], **result,
                         "wall_seconds": time.perf_counter() - started})
            print(json.dumps(rows[-1]), flush=True)
            (args.out / "partial.json").write_text(json.dumps(rows, indent=1))  # what a time limit leaves behind
    extra = f"; recipe runs with {' '.join(args.settings)}" if args.settings else ""
    report(args.out, f"starting recipes vs a plain loop vs scratch (same model, data, batch, optimizer, steps){extra}",
           ["task", "run", "seeds", "steps", "val metric", "mean", "per seed", "second metric (mean)", "train s",
            "wall s"], [summary(group) for _, group in itertools.groupby(rows, key=lambda r: (r["task"], r["run"]))],
           rows)


def summary(group: Any) -> list[str]:
    """One table row per task and arm: the headline metric's mean and every seed's value."""
    runs = list(group)
    first, metric = runs[0], runs[0]["metric"]
    seconds = [m for m in first if "/" in m and m != metric or m in ("pixel_accuracy", "macro_f1")]

    def mean(key: str) -> float:
        return sum(r[key] for r in runs) / len(runs)

    return [first["task"], first["run"], " ".join(str(r["seed"]) for r in runs), str(first["steps"]), metric,
            f"{mean(metric):.3f}", " / ".join(f"{r[metric]:.3f}" for r in runs),
            ", ".join(f"{m} {mean(m):.3f}" for m in seconds), f"{mean('train_seconds'):.0f}",
            f"{mean('wall_seconds'):.0f}"]


if __name__ == "__main__":
    main()
