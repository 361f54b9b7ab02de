"""visiontl fine-tuning against a plain loop written the way torchvision's detection tutorial writes it, on
the same model, data and device, in one invocation: training img/s and time to accuracy.

    python tools/bench_train.py [--workloads detection segmentation classification] [--epochs-scale 1.0]
        [--bccd ../shared/datasets/bccd] [--camvid ../shared/datasets/camvid] [--out runs/bench_train]

Workloads (each skipped, with a line saying so, when its dataset is missing):
- detection: Faster R-CNN + FPN on MobileNetV2 (ImageNet weights when cached, else random), BCCD
  train/val (VOC), images at their own 640x480, 8 epochs;
- segmentation: U-Net on ResNet-34 (random weights: no ImageNet file travels offline), CamVid, 352 px crops,
  `standard` augmentation, validation on full frames, 16 epochs;
- classification: a ResNet-50 classifier (random weights), BCCD cell crops (the demo's) at 224 px, 12 epochs.

The tutorial loop (`tutorial`), as torchvision's "TorchVision Object Detection Finetuning Tutorial" writes
it: torchvision.io decoding and transforms v2 in 4 DataLoader workers, fp32, a `.item()` of the loss every
step, SGD(lr 0.005, momentum 0.9, weight decay 5e-4) with the first epoch warmed up and StepLR(3, 0.1), batch
2 for detection. For segmentation and classification, which the tutorial does not cover, the loop keeps its
structure and takes visiontl's batch size, optimizer and LR so only the machinery differs.

visiontl (`visiontl`) is `visiontl train` with its defaults on CUDA: bf16 autocast, channels_last, cudnn
benchmark, loss read every log_every steps, 8 persistent workers, torchvision.io JPEG decoding, and the
batch and schedule in its config (below).

Both are scored after every epoch by the same evaluator (visiontl's, on the same val loader; not counted in
train time). img/s = train images / train seconds over the epochs after the first (which holds worker start,
cudnn autotuning and compilation); time to accuracy = train seconds until the val metric first reaches the
tutorial loop's final value. Ratios are visiontl / tutorial, from the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from benchlib import report
from torch.utils.data import DataLoader, Dataset

from visiontl.backbones import create_backbone
from visiontl.config import Config, build_config
from visiontl.data.sampling import EpochSampler
from visiontl.engine.seed import seed_everything, worker_init
from visiontl.engine.trainer import make_loader, train
from visiontl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
log = logging.getLogger("bench_train")


@dataclass
class Workload:
    name: str
    metric: str
    epochs: int
    tutorial_batch: int
    raw: dict[str, Any] = field(default_factory=dict)


def workloads(args: argparse.Namespace, scratch: Path) -> list[Workload]:
    found = []
    if args.bccd.is_dir() and "detection" in args.workloads:
        weights = "imagenet" if args.imagenet_mobilenet else "none"
        found.append(Workload("detection", "bbox/AP50", 8, 2, {
            "task": "detection",
            "model": {"arch": "faster_rcnn", "backbone": "mobilenet_v2", "weights": weights, "neck": "fpn",
                      "min_size": 480, "max_size": 640},
            "data": {"format": "voc", "root": str(args.bccd), "train": "train", "val": "val", "augment": "light"},
            "finetune": {"strategy": "full"},
            "train": {"batch_size": 8, "optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4,
                      "schedule": "cosine", "warmup_steps": 20, "workers": args.workers, "log_every": 20},
        }))
    if args.camvid.is_dir() and "segmentation" in args.workloads:
        found.append(Workload("segmentation", "mIoU", 16, 8, {
            "task": "segmentation",
            "model": {"arch": "unet", "backbone": "resnet34", "weights": "none", "loss": "ce"},
            "data": {"format": "masks", "root": str(args.camvid), "train": "train.txt", "val": "val.txt",
                     "classes": [str(i) for i in range(11)], "ignore_index": 11, "image_size": 352, "augment": "standard",
                     "cache": args.cache},
            "finetune": {"strategy": "full"},
            "train": {"batch_size": 8, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "schedule": "cosine",
                      "workers": args.workers},
        }))
    if args.bccd.is_dir() and "classification" in args.workloads:
        from visiontl.demo import cut_crops

        crops = scratch / "crops"
        if not crops.is_dir():
            cut_crops(args.bccd, crops)
        found.append(Workload("classification", "accuracy", 12, 32, {
            "task": "classification",
            "model": {"backbone": "resnet50", "weights": "none"},
            "data": {"root": str(crops), "image_size": 224, "augment": "standard", "cache": args.cache},
            "finetune": {"strategy": "full"},
            "train": {"batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
                      "schedule": "cosine", "workers": args.workers},
        }))
    for w in found:
        w.epochs = max(2, round(w.epochs * args.epochs_scale))
        w.raw["train"].update(epochs=w.epochs, progress=False, seed=0)
    return found


# ---- the tutorial loop ---------------------------------------------------------------------------------


class TutorialDetection(Dataset):
    """The tutorial's dataset: torchvision.io.read_image, tv_tensors boxes, v2 flips and ToDtype."""

    def __init__(self, visiontl_set: Any, train: bool):
        from torchvision.transforms import v2

        self.items = [(str(visiontl_set.aset.image_path(r)), [i.xyxy for i in inst],
                       [visiontl_set.label_map.label(i.category_id) for i in inst]) for r, inst in visiontl_set.items]
        ops = [v2.RandomHorizontalFlip(0.5)] if train else []
        self.transform = v2.Compose(ops + [v2.ToDtype(torch.float, scale=True), v2.ToPureTensor()])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        from torchvision import tv_tensors
        from torchvision.io import read_image

        path, boxes, labels = self.items[index]
        image = tv_tensors.Image(read_image(path))
        target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                                    format="XYXY", canvas_size=image.shape[-2:]),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
        return self.transform(image, target)


class TutorialClassification(Dataset):
    def __init__(self, visiontl_set: Any, size: int, mean: Any, std: Any):
        from torchvision.transforms import v2

        self.items = [(str(s.path), s.label) for s in visiontl_set.samples]
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(0.5), v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.02)], p=0.5),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        from torchvision.io import ImageReadMode, decode_image, read_file

        path, label = self.items[index]
        return self.transform(decode_image(read_file(path), mode=ImageReadMode.RGB)), label


def tutorial_loss(task: str, model: torch.nn.Module, batch: Any, device: torch.device, ignore_index: int) -> torch.Tensor:
    if task == "detection":
        images, targets = batch
        images = [i.to(device) for i in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        return sum(model(images, targets).values())
    images, labels = batch[0].to(device), batch[1].to(device)
    logits = model(images)
    if task == "segmentation":
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
    return F.cross_entropy(logits, labels)


def run_tutorial(w: Workload, cfg: Config, device: torch.device, workers: int) -> list[dict[str, Any]]:
    """The tutorial's loop around visiontl's model and evaluator; one row per epoch."""
    seed_everything(0, False)
    torch.backends.cudnn.benchmark = False  # torch's default, as in the tutorial (a visiontl run before may set it)
    task = get_task(cfg)
    data = task.prepare_data(cfg)
    backbone = create_backbone(cfg.model.backbone, cfg.model.weights)
    model = task.build_model(cfg, backbone, data.classes).to(device)
    vis_train, vis_val = task.datasets(cfg, data, backbone, augment=True)
    if w.name == "detection":
        dataset: Dataset = TutorialDetection(vis_train, train=True)
        collate: Callable | None = lambda batch: tuple(zip(*batch))  # noqa: E731 (the tutorial's utils.collate_fn)
    elif w.name == "segmentation":
        from bench_data import V2Segmentation

        dataset = _Pairs(V2Segmentation(vis_train, cfg.data.image_size, cfg.data.ignore_index, backbone.mean, backbone.std))
        collate = None
    else:
        dataset, collate = TutorialClassification(vis_train, cfg.data.image_size, backbone.mean, backbone.std), None
    loader = DataLoader(dataset, batch_size=w.tutorial_batch, shuffle=True, num_workers=4, collate_fn=collate,
                        worker_init_fn=worker_init)
    val_loader = make_loader(vis_val, EpochSampler(len(vis_val), shuffle=False, seed=0), cfg.train.batch_size, workers,
                             task.collate, device)
    params = [p for p in model.parameters() if p.requires_grad]
    if w.name == "detection":  # the tutorial's optimizer and schedule
        optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)
        scheduler: Any = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    else:  # visiontl's optimizer, LR and cosine schedule, so only the machinery differs
        t = cfg.train
        optimizer = (torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay) if t.optimizer == "sgd"
                     else torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=w.epochs)
    rows, elapsed = [], 0.0
    for epoch in range(w.epochs):
        model.train()
        warmup = None
        if epoch == 0:  # the tutorial warms the first epoch up linearly from lr / 1000
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / 1000,
                                                       total_iters=min(1000, len(loader) - 1))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        started, seen = time.perf_counter(), 0
        for batch in loader:
            loss = tutorial_loss(w.name, model, batch, device, cfg.data.ignore_index)
            loss_value = loss.item()  # the tutorial reads (and checks) the loss every step
            if not math.isfinite(loss_value):
                raise SystemExit(f"tutorial loop: loss is {loss_value}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if warmup is not None:
                warmup.step()
            seen += len(batch[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        elapsed += seconds
        scheduler.step()
        metrics = task.evaluate(model, val_loader, device, data.classes, contextlib.nullcontext())
        rows.append({"epoch": epoch + 1, "train_seconds": seconds, "elapsed": elapsed, "img_per_s": seen / seconds,
                     "metric": float(metrics[w.metric]), "gpu_mem_gib": _peak_gib(device)})
        log.warning("tutorial %s epoch %d: %.1f img/s, %s %.4f", w.name, epoch + 1, seen / seconds, w.metric, rows[-1]["metric"])
    return rows


class _Pairs(Dataset):
    """(image, mask) from bench_data's v2 segmentation dataset, which also returns the index."""

    def __init__(self, inner: Dataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Any:
        image, mask, _ = self.inner[index]
        return image, mask


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ---- visiontl -------------------------------------------------------------------------------------------


def run_visiontl(w: Workload, cfg: Config) -> list[dict[str, Any]]:
    train(cfg, force=True)
    with open(Path(cfg.run.dir) / "log.csv", newline="") as f:
        log_rows = list(csv.DictReader(f))
    rows, elapsed = [], 0.0
    for r in log_rows:
        elapsed += float(r["train_seconds"])
        rows.append({"epoch": int(r["epoch"]), "train_seconds": float(r["train_seconds"]), "elapsed": elapsed,
                     "img_per_s": float(r["img_per_s"]), "metric": float(r[w.metric]),
                     "gpu_mem_gib": float(r["gpu_mem_gib"]) if r.get("gpu_mem_gib") else None})
    return rows


# ---- comparison -----------------------------------------------------------------------------------------


def steady_img_per_s(rows: list[dict[str, Any]]) -> float:
    """Images over seconds across the epochs after the first (the first holds start-up costs)."""
    later = rows[1:] or rows
    return sum(r["img_per_s"] * r["train_seconds"] for r in later) / sum(r["train_seconds"] for r in later)


def time_to(rows: list[dict[str, Any]], target: float) -> float | None:
    return next((r["elapsed"] for r in rows if r["metric"] >= target - 1e-9), None)


def summarise(w: Workload, loops: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    tut, vis = loops["tutorial"], loops["visiontl"]
    target = tut[-1]["metric"]
    t_tut, t_vis = time_to(tut, target), time_to(vis, target)
    return {
        "workload": w.name, "metric": w.metric, "epochs": w.epochs, "target": target,
        "tutorial_img_per_s": steady_img_per_s(tut), "visiontl_img_per_s": steady_img_per_s(vis),
        "img_per_s_ratio": steady_img_per_s(vis) / steady_img_per_s(tut),
        "tutorial_final": tut[-1]["metric"], "visiontl_final": vis[-1]["metric"],
        "tutorial_time_to_target": t_tut, "visiontl_time_to_target": t_vis,
        "time_to_target_ratio": (t_tut / t_vis) if t_vis else None,
        "compiled_img_per_s": steady_img_per_s(loops["visiontl_compile"]) if "visiontl_compile" in loops else None,
        "compiled_final": loops["visiontl_compile"][-1]["metric"] if "visiontl_compile" in loops else None,
        "tutorial_gpu_mem_gib": max((r["gpu_mem_gib"] or 0) for r in tut) or None,
        "visiontl_gpu_mem_gib": max((r["gpu_mem_gib"] or 0) for r in vis) or None,
        "epochs_detail": loops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["detection", "segmentation", "classification"],
                        choices=["detection", "segmentation", "classification"])
    parser.add_argument("--bccd", type=Path, default=SHARED / "bccd")
    parser.add_argument("--camvid", type=Path, default=SHARED / "camvid")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every workload's epochs")
    parser.add_argument("--workers", type=int, default=8, help="visiontl's DataLoader workers")
    parser.add_argument("--cache", action="store_true", help="visiontl with data.cache (segmentation, classification)")
    parser.add_argument("--compile", action="store_true",
                        help="also visiontl with train.compile (segmentation, classification)")
    parser.add_argument("--imagenet-mobilenet", action="store_true", help="detection from ImageNet MobileNetV2 (cached)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_train")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for w in workloads(args, args.out):
        loops = {}
        compiled = ("visiontl_compile",) if args.compile and w.name != "detection" else ()
        for loop in ("tutorial", "visiontl", *compiled):
            raw = {**w.raw, "train": {**w.raw["train"], "compile": loop == "visiontl_compile"}}
            cfg = build_config({**raw, "run": {"dir": str(args.out / f"{w.name}_{loop}")}})
            started = time.perf_counter()
            loops[loop] = run_tutorial(w, cfg, device, args.workers) if loop == "tutorial" else run_visiontl(w, cfg)
            (args.out / f"{w.name}_{loop}.json").write_text(json.dumps(loops[loop], indent=1))
            print(f"{w.name} {loop}: {steady_img_per_s(loops[loop]):.1f} img/s, final {w.metric} "
                  f"{loops[loop][-1]['metric']:.4f}, {time.perf_counter() - started:.0f} s wall", flush=True)
        results.append(summarise(w, loops))
        (args.out / "partial.json").write_text(json.dumps(results, indent=1))  # what a time limit leaves behind
    write_table(args.out, results)


def write_table(out: Path, results: list[dict[str, Any]]) -> None:
    cells = []
    for r in results:
        def secs(v: float | None) -> str:
            return f"{v:.1f} s" if v is not None else "not reached"
        cells.append([r["workload"], f"{r['tutorial_img_per_s']:.1f}", f"{r['visiontl_img_per_s']:.1f}",
                      f"**{r['img_per_s_ratio']:.2f}x**", f"{r['metric']} {r['tutorial_final']:.3f} / {r['visiontl_final']:.3f}",
                      f"{secs(r['tutorial_time_to_target'])} / {secs(r['visiontl_time_to_target'])}",
                      f"{r['time_to_target_ratio']:.2f}x" if r["time_to_target_ratio"] else "-",
                      " / ".join(f"{v:.1f}" if v else "-" for v in (r["tutorial_gpu_mem_gib"], r["visiontl_gpu_mem_gib"])),
                      (f"{r['compiled_img_per_s']:.1f} ({r['compiled_img_per_s'] / r['tutorial_img_per_s']:.2f}x), "
                       f"{r['compiled_final']:.3f}") if r["compiled_img_per_s"] else "-"])
    report(out, "bench_train: tutorial loop vs visiontl (same model, data, device, evaluator)",
           ["workload", "tutorial img/s", "visiontl img/s", "img/s ratio", "final val (tutorial / visiontl)",
            "time to tutorial's final (tutorial / visiontl)", "time ratio", "peak GPU GiB (t / v)",
            "visiontl + compile img/s, final val"], cells, results)


if __name__ == "__main__":
    main()
