"""Export parity across the model kinds: each case trains a one-step checkpoint on synthetic data (random
weights, real input sizes), exports it with `visiontl export` to ONNX and to TorchScript, and reports the
parity check's figures, the export time and the file size (the table in docs/deploy.md).

    python tools/export_parity.py [--cases NAME ...] [--workdir DIR] [--out FILE.json]

Each export runs as its own `python -m visiontl export` process (interpreter start and imports included in
its seconds). Prints a Markdown table; with --out also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from visiontl.config import build_config
from visiontl.data.synthetic import make_detection_coco, make_imagefolder, make_segmentation_folders
from visiontl.engine.trainer import train

TRAIN = {"epochs": 1, "max_steps": 1, "batch_size": 2, "workers": 0, "device": "cpu", "progress": False}

# name: (task, model section, data: kind and image size (w, h))
CASES = {
    "classifier_resnet50_224": ("classification", {"arch": "classifier", "backbone": "resnet50"}, ("folder", 224)),
    "classifier_efficientnet_b0_224": ("classification", {"arch": "classifier", "backbone": "efficientnet_b0"},
                                       ("folder", 224)),
    "classifier_convnext_tiny_224": ("classification", {"arch": "classifier", "backbone": "convnext_tiny"},
                                     ("folder", 224)),
    "unet_resnet34_320x256": ("segmentation", {"arch": "unet", "backbone": "resnet34"}, ("masks", (320, 256))),
    "fpn_mobilenet_v2_320x256": ("segmentation", {"arch": "fpn", "backbone": "mobilenet_v2"}, ("masks", (320, 256))),
    "deeplabv3plus_resnet50_320x256": ("segmentation", {"arch": "deeplabv3plus", "backbone": "resnet50"},
                                       ("masks", (320, 256))),
    "faster_rcnn_resnet50_fpn_512": ("detection", {"arch": "faster_rcnn", "backbone": "resnet50", "min_size": 512,
                                                   "max_size": 683}, ("coco", (640, 480))),
    "faster_rcnn_mobilenet_v2_fpn_512": ("detection", {"arch": "faster_rcnn", "backbone": "mobilenet_v2",
                                                       "min_size": 512, "max_size": 683}, ("coco", (640, 480))),
    "ssd_vgg16_300": ("detection", {"arch": "ssd", "backbone": "vgg16", "ssd_size": 300}, ("coco", (640, 480))),
    "ssdlite_mobilenet_v2_320": ("detection", {"arch": "ssdlite", "backbone": "mobilenet_v2", "ssd_size": 320},
                                 ("coco", (640, 480))),
    "mask_rcnn_resnet50_fpn_512": ("instance_segmentation", {"arch": "mask_rcnn", "backbone": "resnet50",
                                                             "min_size": 512, "max_size": 683}, ("coco", (640, 480))),
}
SUFFIX = {"onnx": "onnx", "torchscript": "torchscript"}


def checkpoint(name: str, workdir: Path) -> Path:
    task, model, (kind, size) = CASES[name]
    data_dir = workdir / f"data_{kind}_{size}"
    if kind == "folder":
        data = {"root": str(make_imagefolder(data_dir, classes=3, train_per_class=2, val_per_class=2, size=size)),
                "image_size": size}
    elif kind == "masks":
        make_segmentation_folders(data_dir, train=2, val=4, size=size)
        data = {"format": "masks", "root": str(data_dir), "train": "images/train", "train_masks": "masks/train",
                "val": "images/val", "val_masks": "masks/val", "classes": ["background", "red", "green"],
                "image_size": 128}
    else:
        make_detection_coco(data_dir, images=2, size=size, split="train", seed=0)
        make_detection_coco(data_dir, images=4, size=size, split="val", seed=1)
        data = {"format": "coco", "root": str(data_dir), "train": "train.json", "val": "val.json", "augment": "none"}
    run = workdir / name
    if kind == "coco":
        model = {**model, "score_threshold": 0.0}  # random weights score low: keep every detection to compare
    raw = {"task": task, "model": {**model, "weights": "none"}, "data": data, "train": TRAIN, "run": {"dir": str(run)}}
    train(build_config(raw))
    return run / "checkpoints" / "last.pt"


def export(ckpt: Path, fmt: str, out: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "visiontl", "export", str(ckpt), "--format", fmt, "--out", str(out)],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"format": fmt, "error": done.stderr.strip(), "seconds": seconds}
    meta = json.loads(Path(f"{out}.json").read_text()) if fmt == "torchscript" else _onnx_meta(out)
    return {"format": fmt, "seconds": seconds, "mib": out.stat().st_size / 2**20, "parity": meta["parity"]}


def _onnx_meta(path: Path) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["visiontl"])


def figures(parity: dict) -> str:
    if "probability" in parity and "label_agreement" in parity:
        return (f"probability {parity['probability']:.2g}, logits {parity['logit']:.2g}, "
                f"labels agree {100 * parity['label_agreement']:.3f}%")
    if "probability" in parity:
        return f"probability {parity['probability']:.2g}, logits {parity['logit']:.2g}, top-1 {parity['same_top1']}/{parity['images']}"
    masks = f", masks {parity['mask']:.2g}" if "mask" in parity else ""
    tied = f", {parity['tied']} tied" if parity.get("tied") else ""
    return (f"boxes {parity['box_px']:.2g} px, scores {parity['score']:.2g}{masks}; "
            f"{parity['matched']}/{parity['detections']} matched{tied}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="export_parity_"))
    rows = []
    print("| case | format | largest difference (tolerance) | figures | export s | MiB |")
    print("|---|---|---|---|---|---|")
    for name in args.cases:
        ckpt = checkpoint(name, workdir)
        for fmt in ("onnx", "torchscript"):
            row = {"case": name, **export(ckpt, fmt, workdir / f"{name}.{SUFFIX[fmt]}")}
            rows.append(row)
            if "error" in row:
                print(f"| {name} | {fmt} | failed | {row['error']} | {row['seconds']:.0f} | |", flush=True)
                continue
            p = row["parity"]
            print(f"| {name} | {fmt} | {p['difference']:.2g} ({p['tolerance']:g}) | {figures(p)} | "
                  f"{row['seconds']:.0f} | {row['mib']:.0f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                                              "command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    print(yaml.safe_dump({"workdir": str(workdir)}).strip())


if __name__ == "__main__":
    main()
