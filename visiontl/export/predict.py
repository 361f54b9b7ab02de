"""An exported file behind the interface visiontl's prediction code expects of a checkpoint (`LoadedModel`),
so `visiontl predict model.onnx IMAGES --out ...` writes the same CSV / JSON / PNG files as with the
checkpoint it came from, through the same code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visiontl.export.graphs import DETECTION_TASKS, InputSpec
from visiontl.export.runtime import ExportedRuntime, open_exported


@dataclass(frozen=True)
class PixelScale:
    """Stands in for the backbone in the prediction pipelines, which normalise with its mean/std: an exported
    graph normalises itself, so the pipeline only scales pixels to [0, 1] (mean 0, std 1)."""

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


class ExportedModel(nn.Module):
    """Called as the PyTorch model is: an image batch (classification, segmentation: logits back) or a list of
    images (detectors: a list of dicts of boxes, scores, labels, masks back). A file fixed to a size gets its
    input resized to it, and the outputs mapped back to the image's own size."""

    def __init__(self, runtime: ExportedRuntime, task: str, spec: InputSpec):
        super().__init__()
        self.runtime = runtime
        self.task = task
        self.spec = spec
        # Prediction code asks a model for its device through its parameters; this one runs on the CPU.
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, images: Any) -> Any:
        if self.task in DETECTION_TASKS:
            return [self._detect(image) for image in images]
        return self._dense(images)

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.runtime(x.detach().cpu().float().numpy()).items()}

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.size is None or tuple(x.shape[-2:]) == tuple(self.spec.size):
            return x
        return F.interpolate(x, size=self.spec.size, mode="bilinear", align_corners=False)

    def _dense(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x = self._fit(images)
        chunks = [x] if self.spec.batch is None else list(x.split(self.spec.batch))
        logits = torch.cat([self._run(chunk)["logits"] for chunk in chunks])
        if self.task == "segmentation" and tuple(logits.shape[-2:]) != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = image.shape[-2:]
        x = self._fit(image[None])
        out = self._run(x)
        fh, fw = x.shape[-2:]
        if (fh, fw) != (h, w):
            out["boxes"] = out["boxes"] * torch.tensor([w / fw, h / fh, w / fw, h / fh])
            if "masks" in out and len(out["masks"]):
                out["masks"] = F.interpolate(out["masks"], size=(h, w), mode="bilinear", align_corners=False)
        return out


def load_exported(path: str | Path) -> Any:
    """A LoadedModel (engine.inference) made from an exported file and its metadata alone."""
    from visiontl.config import build_config
    from visiontl.engine.inference import LoadedModel
    from visiontl.tasks import get_task

    runtime = open_exported(path)
    meta = runtime.metadata
    cfg = build_config(meta["config"], source=f"{path} (stored config)")
    batch = meta["input"]["shape"][0]
    size = meta.get("input_size")
    spec = InputSpec(batch if isinstance(batch, int) else None, tuple(size) if size else None)
    if cfg.task == "classification" and spec.size is not None and spec.size[0] == spec.size[1]:
        cfg.data.image_size = spec.size[0]  # the prediction pipeline then resizes as the parity check did
    checkpoint = {"label_map": meta.get("label_map"), "epoch": (meta.get("checkpoint") or {}).get("epoch"),
                  "exported": str(path)}
    model = ExportedModel(runtime, cfg.task, spec).eval()
    return LoadedModel(model, PixelScale(), get_task(cfg.task), cfg, list(meta["classes"]), checkpoint)
