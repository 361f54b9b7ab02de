"""The data pipeline's throughput against a torchvision transforms v2 pipeline doing the same augmentations,
on the same files, through the same DataLoader settings, in one invocation.

    python tools/bench_data.py [--bccd ../shared/datasets/bccd] [--camvid ../shared/datasets/camvid]
        [--coco128 ../shared/datasets/coco128-seg] [--workloads detection classification segmentation seg-val]
        [--workers 2] [--batch 8] [--passes 3] [--device auto] [--out runs/bench_data]

Workloads (each skipped, with a line saying so, when its dataset is missing):
- detection: BCCD (VOC, 640x480 JPEG), the `standard` preset: horizontal and vertical flips, scale/translate
  affine (p 0.5), colour jitter (p 0.5); boxes moved with the image;
- classification: the BCCD train images as a classification list (label: the image's first box), the
  `standard` preset at 224 px: random resized crop, horizontal flip, colour jitter (p 0.5), normalise;
- segmentation: CamVid (480x360 PNG images and label PNGs), the `standard` preset: random scale 0.8-1.2, pad,
  352 px random crop, horizontal flip, colour jitter (p 0.5), normalise; the mask moved with the image;
- seg-val: segmentation validation on coco128-seg (JPEGs up to 640 px, each at its own size, masks painted
  from the COCO polygons): decode, normalise, pad the batch.

Pipelines per workload:
- `torchvision v2` (the baseline): torchvision.io decoding, transforms v2 on tensors with tv_tensors boxes
  or masks: the way torchvision's own references write it;
- `visiontl`: the dataset `visiontl train` builds from the same config (torchvision.io JPEG decoding,
  PIL for PNG, albumentations);
- `visiontl + data.cache`: the same with decoded images held in memory (filled before timing);
- `visiontl augment_on=device` (classification and segmentation workloads; `+ data.cache` too):
  data.augment_on: device: the workers do the geometry on uint8, and every batch is finished (colour jitter,
  normalisation, padding; on CUDA the seg-val JPEGs decoded by nvjpeg) on `--device` inside the timing, with a
  CUDA synchronisation at the end of each pass. On a CPU-only machine the "device" is the main process's CPU.

Timing: one untimed pass starts the (persistent) workers and warms caches, then `--passes` timed passes;
img/s = images / seconds. Ratios are against the baseline of the same workload in the same run.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import report
from torch.utils.data import DataLoader, Dataset

from visiontl.config import build_config
from visiontl.data import cache
from visiontl.data.device_pipeline import DeviceItems
from visiontl.data.sampling import EpochSampler
from visiontl.engine.seed import worker_init
from visiontl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def detection_config(bccd: Path) -> dict[str, Any]:
    return {"task": "detection", "model": {"backbone": "mobilenet_v2", "weights": "none"},
            "data": {"format": "voc", "root": str(bccd), "train": "train", "val": "val", "augment": "standard",
                     "vflip": True}, "train": {"progress": False}}


def classification_config(bccd: Path, out: Path) -> dict[str, Any]:
    from visiontl.demo import read_xml

    out.mkdir(parents=True, exist_ok=True)
    listing = out / "bccd_classification.csv"
    with listing.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["path", "label"])
        for image_id in (bccd / "ImageSets" / "Main" / "train.txt").read_text().split():
            first = read_xml(bccd / "Annotations" / f"{image_id}.xml").find("object")
            rows.writerow([str(bccd / "JPEGImages" / f"{image_id}.jpg"), first.findtext("name", "").strip()])
    return {"task": "classification", "model": {"backbone": "resnet50", "weights": "none"},
            "data": {"format": "csv", "root": str(bccd), "train": str(listing), "val": 0.1, "image_size": 224,
                     "augment": "standard"}, "train": {"progress": False}}


def seg_val_config(coco128: Path) -> dict[str, Any]:
    return {"task": "segmentation", "model": {"backbone": "resnet34", "weights": "none"},
            "data": {"format": "coco", "root": str(coco128), "train": "annotations.json", "val": "annotations.json"},
            "train": {"progress": False}}


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


class V2Classification(Dataset):
    """The baseline: torchvision.io decoding and transforms v2."""

    def __init__(self, visiontl_set: Any, size: int, mean: Any, std: Any):
        from torchvision.transforms import v2

        self.items = [str(s.path) for s in visiontl_set.samples]
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(0.5), v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.02)], p=0.5),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std)),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: Any) -> Any:
        from torchvision.io import ImageReadMode, decode_image, read_file

        index = item[0] if isinstance(item, tuple) else item
        return self.transform(decode_image(read_file(self.items[index]), mode=ImageReadMode.RGB)), 0, item


class V2SegVal(Dataset):
    """The baseline of validation: torchvision.io decoding, normalisation; the masks are visiontl's (painted from
    the COCO polygons, as any COCO reader must)."""

    def __init__(self, visiontl_set: Any, mean: Any, std: Any):
        from torchvision.transforms import v2

        self.inner = visiontl_set
        self.transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, item: Any) -> Any:
        from torchvision.io import ImageReadMode, decode_image, read_file

        index = item[0] if isinstance(item, tuple) else item
        image = decode_image(read_file(self.inner.names(index)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        return self.transform(image), torch.as_tensor(self.inner.load_mask(index), dtype=torch.int64), item


def list_collate(batch: list[Any]) -> Any:
    return [list(x) for x in zip(*batch)]


def throughput(dataset: Dataset, collate: Any, workers: int, batch: int, passes: int,
               device: torch.device | None = None) -> float:
    """img/s through the loader; with `device`, each batch is also finished there (data.augment_on: device),
    inside the timing."""
    sampler = EpochSampler(len(dataset), shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, worker_init_fn=worker_init,
                        pin_memory=device is not None and device.type == "cuda")

    def one_pass() -> int:
        images = 0
        for b in loader:
            if device is not None:
                b[0].finish(device)
            images += len(b[0])
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        return images

    one_pass()  # starts the workers; first reads; CUDA context and kernels
    started, images = time.perf_counter(), 0
    for epoch in range(passes):
        sampler.set_epoch(epoch + 1)
        images += one_pass()
    return images / (time.perf_counter() - started)


def bench_workload(name: str, raw: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = build_config(raw)
    task = get_task(cfg)
    data = task.prepare_data(cfg)
    from visiontl.backbones import create_backbone

    backbone = create_backbone(cfg.model.backbone, "none")
    train_set, val_set = task.datasets(cfg, data, backbone, augment=True)
    if name == "detection":
        baseline: Dataset = V2Detection(train_set)
    elif name == "classification":
        baseline = V2Classification(train_set, cfg.data.image_size, backbone.mean, backbone.std)
    elif name == "seg-val":
        train_set, baseline = val_set, V2SegVal(val_set, backbone.mean, backbone.std)
    else:
        baseline = V2Segmentation(train_set, cfg.data.image_size, cfg.data.ignore_index, backbone.mean, backbone.std)
    collate = task.collate if name in ("classification", "seg-val") else list_collate
    rows = []
    runs = [("torchvision v2", baseline, collate, None), ("visiontl", train_set, task.collate, None),
            ("visiontl + data.cache", train_set, task.collate, None)]
    if name != "detection":
        items = DeviceItems(train_set, decode_jpegs=args.device.type == "cuda")
        runs += [("visiontl augment_on=device", items, items.collate, args.device),
                 ("visiontl augment_on=device + data.cache", items, items.collate, args.device)]
    for label, dataset, collate, device in runs:
        cache.clear()
        if label.endswith("cache"):
            cache.preload_images(dataset.image_files(), 8e9, threads=max(1, args.workers), progress=False)
        speed = throughput(dataset, collate, args.workers, args.batch, args.passes, device)
        rows.append({"workload": name, "pipeline": label, "images": len(dataset), "img_per_s": speed})
        print(f"{name:14s} {label:40s} {speed:8.1f} img/s", flush=True)
    cache.clear()
    for row in rows:
        row["ratio"] = row["img_per_s"] / rows[0]["img_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=SHARED / "bccd")
    parser.add_argument("--camvid", type=Path, default=SHARED / "camvid")
    parser.add_argument("--coco128", type=Path, default=SHARED / "coco128-seg")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--device", default="auto", help="where augment_on=device finishes batches: auto, cpu, cuda")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_data")
    args = parser.parse_args()
    args.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # the workers decode and augment; the main process collates (and, augment_on=device on a CPU, finishes)
    torch.set_num_threads(1)
    rows = []
    for name in args.workloads:
        root = {"detection": args.bccd, "classification": args.bccd, "segmentation": args.camvid,
                "seg-val": args.coco128}[name]
        if not root.is_dir():
            print(f"{name}: skipped, {root} not found")
            continue
        raw = classification_config(root, args.out) if name == "classification" else WORKLOADS[name](root)
        rows += bench_workload(name, raw, args)
    cells = [[r["workload"], r["pipeline"], str(r["images"]), f"{r['img_per_s']:.1f}", f"{r['ratio']:.2f}x"] for r in rows]
    report(args.out, f"bench_data, {args.workers} workers, batch {args.batch}, {args.passes} timed passes, "
           f"augment_on=device on {args.device}",
           ["workload", "pipeline", "images/pass", "img/s", "vs torchvision v2"], cells, rows)


WORKLOADS: dict[str, Any] = {"detection": detection_config, "classification": classification_config,
                             "segmentation": segmentation_config, "seg-val": seg_val_config}


if __name__ == "__main__":
    main()
