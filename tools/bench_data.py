"""The data pipeline's throughput against a torchvision transforms v2 pipeline doing the same augmentations,
on the same files, through the same DataLoader settings, in one invocation.

    python tools/bench_data.py [--bccd ../shared/datasets/bccd] [--camvid ../shared/datasets/camvid]
        [--workers 2] [--batch 8] [--passes 3] [--out runs/bench_data]

Workloads (each skipped, with a line saying so, when its dataset is missing):
- detection: BCCD (VOC, 640x480 JPEG), the `standard` preset: horizontal and vertical flips, scale/translate
  affine (p 0.5), colour jitter (p 0.5); boxes moved with the image;
- segmentation: CamVid (480x360 PNG images and label PNGs), the `standard` preset: random scale 0.8-1.2, pad,
  352 px random crop, horizontal flip, colour jitter (p 0.5), normalise; the mask moved with the image.

Pipelines per workload:
- `torchvision v2` (the baseline): torchvision.io decoding, transforms v2 on tensors with tv_tensors boxes
  or masks: the way torchvision's own references write it;
- `visiontl`: the dataset `visiontl train` builds from the same config (torchvision.io JPEG decoding,
  PIL for PNG, albumentations);
- `visiontl + data.cache`: the same with decoded images held in memory (filled before timing).

Timing: one untimed pass starts the (persistent) workers and warms caches, then `--passes` timed passes;
img/s = images / seconds. Ratios are against the baseline of the same workload in the same run.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import report
from torch.utils.data import DataLoader, Dataset

from visiontl.config import build_config
from visiontl.data import cache
from visiontl.data.sampling import EpochSampler
from visiontl.engine.seed import worker_init
from visiontl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def detection_config(bccd: Path) -> dict[str, Any]:
    return {"task": "detection", "model": {"backbone": "mobilenet_v2", "weights": "none"},
            "data": {"format": "voc", "root": str(bccd), "train": "train", "val": "val", "augment": "standard",
                     "vflip": True}, "train": {"progress": False}}


def segmentation_config(camvid: Path) -> dict[str, Any]:
    return {"task": "segmentation", "model": {"backbone": "resnet34", "weights": "none"},
            "data": {"format": "masks", "root": str(camvid), "train": "train.txt", "val": "val.txt",
                     "classes": [str(i) for i in range(11)], "ignore_index": 11, "image_size": 352,
                     "augment": "standard"}, "train": {"progress": False}}


class V2Detection(Dataset):
    """The baseline: torchvision.io decoding and transforms v2 with tv_tensors boxes."""

    def __init__(self, visiontl_set: Any):
        from torchvision.transforms import v2

        self.items = [(str(visiontl_set.aset.image_path(r)), [i.xyxy for i in inst], [visiontl_set.label_map.label(i.category_id) for i in inst])
                      for r, inst in visiontl_set.items]
        self.transform = v2.Compose([
            v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5),
            v2.RandomApply([v2.RandomAffine(degrees=0, translate=(0.05, 0.05), scale=(0.8, 1.2))], p=0.5),
            v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.02)], p=0.5),
            v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(), v2.ToDtype(torch.float32, scale=True),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: Any) -> Any:
        from torchvision import tv_tensors
        from torchvision.io import ImageReadMode, decode_image, read_file

        path, boxes, labels = self.items[item[0] if isinstance(item, tuple) else item]
        image = tv_tensors.Image(decode_image(read_file(path), mode=ImageReadMode.RGB))
        target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                                    format="XYXY", canvas_size=image.shape[-2:]),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
        image, target = self.transform(image, target)
        return image, target, item


class V2Segmentation(Dataset):
    """The baseline: torchvision.io decoding and transforms v2 with tv_tensors masks."""

    def __init__(self, visiontl_set: Any, crop: int, ignore_index: int, mean: Any, std: Any):
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        self.items = [(str(s.image), str(s.mask)) for s in visiontl_set.samples]
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
        self.transform = v2.Compose([
            v2.ScaleJitter(target_size=(360, 480), scale_range=(0.8, 1.2), antialias=True),
            v2.RandomCrop(crop, pad_if_needed=True, fill=fill), v2.RandomHorizontalFlip(0.5),
            v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.02)], p=0.5),
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: Any) -> Any:
        from torchvision import tv_tensors
        from torchvision.io import ImageReadMode, decode_image, read_file

        image_path, mask_path = self.items[item[0] if isinstance(item, tuple) else item]
        image = tv_tensors.Image(decode_image(read_file(image_path), mode=ImageReadMode.RGB))
        mask = tv_tensors.Mask(decode_image(read_file(mask_path))[0])
        image, mask = self.transform(image, mask)
        return image, mask, item


def list_collate(batch: list[Any]) -> Any:
    return [list(x) for x in zip(*batch)]


def throughput(dataset: Dataset, collate: Any, workers: int, batch: int, passes: int) -> float:
    sampler = EpochSampler(len(dataset), shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, worker_init_fn=worker_init)
    for _ in loader:  # starts the workers; first reads
        pass
    started, images = time.perf_counter(), 0
    for epoch in range(passes):
        sampler.set_epoch(epoch + 1)
        for b in loader:
            images += len(b[0])
    return images / (time.perf_counter() - started)


def bench_workload(name: str, raw: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = build_config(raw)
    task = get_task(cfg)
    data = task.prepare_data(cfg)
    from visiontl.backbones import create_backbone

    backbone = create_backbone(cfg.model.backbone, "none")
    train_set, _ = task.datasets(cfg, data, backbone, augment=True)
    if name == "detection":
        baseline: Dataset = V2Detection(train_set)
    else:
        baseline = V2Segmentation(train_set, cfg.data.image_size, cfg.data.ignore_index, backbone.mean, backbone.std)
    rows = []
    runs = [("torchvision v2", baseline, list_collate), ("visiontl", train_set, task.collate),
            ("visiontl + data.cache", train_set, task.collate)]
    for label, dataset, collate in runs:
        cache.clear()
        if label.endswith("cache"):
            cache.preload_images(dataset.image_files(), 8e9, threads=max(1, args.workers), progress=False)
        speed = throughput(dataset, collate, args.workers, args.batch, args.passes)
        rows.append({"workload": name, "pipeline": label, "images": len(dataset), "img_per_s": speed})
        print(f"{name:13s} {label:22s} {speed:8.1f} img/s", flush=True)
    cache.clear()
    for row in rows:
        row["ratio"] = row["img_per_s"] / rows[0]["img_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=SHARED / "bccd")
    parser.add_argument("--camvid", type=Path, default=SHARED / "camvid")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_data")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(1)  # the workers decode and augment; the main process only collates
    rows = []
    for name, root, make in (("detection", args.bccd, detection_config), ("segmentation", args.camvid, segmentation_config)):
        if not root.is_dir():
            print(f"{name}: skipped, {root} not found")
            continue
        rows += bench_workload(name, make(root), args)
    cells = [[r["workload"], r["pipeline"], str(r["images"]), f"{r['img_per_s']:.1f}", f"{r['ratio']:.2f}x"] for r in rows]
    report(args.out, f"bench_data, {args.workers} workers, batch {args.batch}, {args.passes} timed passes",
           ["workload", "pipeline", "images/pass", "img/s", "vs torchvision v2"], cells, rows)


if __name__ == "__main__":
    main()
