"""run.json: what a run ran on and how long it took, so a report can say so without the machine at hand."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from visiontl.engine.checkpoint import atomic_write_json

# Distribution names as installed; the keys of run.json are the same names.
PACKAGES = ("visiontl", "torch", "torchvision", "timm", "segmentation_models_pytorch", "albumentations", "numpy")


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


@dataclass
class Stopwatch:
    """Start time in UTC for the record, and a monotonic clock for the duration (immune to clock changes)."""

    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    counter: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return time.perf_counter() - self.counter


def run_record(command: str, task: str, device: torch.device, watch: Stopwatch, train_images: int | None,
               val_images: int) -> dict[str, Any]:
    """The run.json dict, keys in the order docs/run-directory.md lists them."""
    record: dict[str, Any] = {"command": command, "task": task}
    record.update({name: package_version(name) for name in PACKAGES[:1]})
    record["python"] = platform.python_version()
    record.update({name: package_version(name) for name in PACKAGES[1:]})
    record.update({
        "platform": platform.platform(),
        "device": device_name(device),
        "started": watch.started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(watch.seconds(), 3),
        "train_images": int(train_images) if train_images is not None else None,
        "val_images": int(val_images),
    })
    return record


def write_run_json(folder: Path, command: str, task: str, device: torch.device, watch: Stopwatch,
                   train_images: int | None, val_images: int) -> None:
    atomic_write_json(Path(folder) / "run.json", run_record(command, task, device, watch, train_images, val_images))
