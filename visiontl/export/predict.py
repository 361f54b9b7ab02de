"""An exported file as a Predictor (visiontl.predictor): `exported_predictor` reads the file and its metadata,
and the task's predictor calls its `ExportedGraph` where a checkpoint's calls the PyTorch model, so
`visiontl predict model.onnx IMAGES --out ...` and `vtl.load("model.onnx")` give the results of the checkpoint
it came from, through the same pre- and postprocessing. The graph normalises its input itself: the predictor
only scales pixels to [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from visiontl.data.annotations import LabelMap
from visiontl.errors import CheckpointError
from visiontl.export.graphs import DETECTION_TASKS, OUTPUTS, InputSpec
from visiontl.export.runtime import ExportedRuntime, open_exported
from visiontl.text import printable


class ExportedGraph:
    """The file's graph in its runtime, called as the PyTorch model is: an image batch in [0, 1]
    (classification, segmentation: logits back) or a list of images (detectors: a list of dicts of boxes,
    scores, labels, masks back). A file fixed to a size gets its input resized to it, and the outputs mapped
    back to the image's own size; every output is checked against the task's contract (`_check`)."""

    def __init__(self, runtime: ExportedRuntime, task: str, spec: InputSpec, source: str = "exported model"):
        self.runtime = runtime
        self.task = task
        self.spec = spec
        self.source = source
        self.num_classes = len(runtime.metadata["classes"]) if runtime.metadata else None

    def __call__(self, images: Any) -> Any:
        if self.task in DETECTION_TASKS:
            return [self._detect(image) for image in images]
        return self._dense(images)

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        try:
            out = self.runtime(x.detach().cpu().float().numpy())
        except Exception as exc:  # noqa: BLE001 (the file's graph refusing its own declared input: one line)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{self.source}: the model fails on an input of shape {list(x.shape)} "
                                  f"({printable(first, 300)})") from None
        self._check(out, x.shape[0])
        return {k: torch.from_numpy(np.asarray(v)) for k, v in out.items()}

    def _check(self, out: dict[str, np.ndarray], batch: int) -> None:
        """The outputs have the shapes the task's contract gives, with as many classes as the metadata names
        (a graph with a free class dimension, or a TorchScript file, shows its class count only here)."""
        k = self.num_classes
        shapes = {name: list(np.shape(value)) for name, value in out.items()}
        missing = [name for name in OUTPUTS[self.task] if name not in out]
        if missing:
            self._refuse(f"the model returned no {missing[0]!r} (its outputs: {printable(shapes, 200)})")
        if self.task in DETECTION_TASKS:
            d = shapes["boxes"][0] if shapes["boxes"] else None
            wanted = {"boxes": [d, 4], "scores": [d], "labels": [d], "masks": [d, 1] + shapes.get("masks", [])[2:]}
            labels = np.asarray(out["labels"])
            if any(shapes[name] != wanted[name] for name in OUTPUTS[self.task]) or \
                    ("masks" in out and len(wanted["masks"]) != 4) or labels.dtype.kind not in "iu":
                self._refuse(f"the outputs do not fit a {self.task} model's: {printable(shapes, 200)}, labels "
                             f"{labels.dtype} (docs/deploy.md: boxes [D, 4], scores [D], labels [D] int64)")
            wrong = labels[(labels < 1) | (labels > k)]
            if wrong.size:
                self._refuse(f"the metadata names {k} classes, the model outputs label {int(wrong[0])} "
                             f"(labels are 1..{k})")
            return
        rank = 2 if self.task == "classification" else 4
        logits = shapes["logits"]
        if len(logits) != rank or logits[0] != batch:
            self._refuse(f"the output 'logits' has shape {logits} for {batch} images; a {self.task} model's has "
                         f"{rank} dimensions, the first the images")
        if logits[1] != k:
            self._refuse(f"the metadata names {k} classes, the model's output 'logits' has {logits[1]} ({logits})")

    def _refuse(self, reason: str) -> None:
        raise CheckpointError(f"{self.source}: {reason}")

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


def exported_predictor(path: str | Path, allow_torchscript_code: bool = False) -> Any:
    """The task's Predictor (visiontl.predictor) for an exported file, made from the file and its metadata
    alone (a TorchScript file only with `allow_torchscript_code`: it holds code that runs,
    runtime.open_exported): its graph called in forward, pixels only scaled to [0, 1] in preprocess (the graph
    normalises them itself), on the CPU."""
    from visiontl.config import build_config
    from visiontl.predictor import PREDICTORS

    runtime = open_exported(path, allow_torchscript_code)
    meta = runtime.metadata  # checked: metadata.check_metadata
    cfg = build_config(meta["config"], source=f"{path} (stored config)")
    if cfg.task != meta["task"]:
        raise CheckpointError(f"{path}: metadata field 'config': a {printable(cfg.task, 40)} config, the file's "
                              f"task is {meta['task']}")
    batch = meta["input"]["shape"][0]
    size = meta.get("input_size")
    spec = InputSpec(batch if isinstance(batch, int) else None, tuple(size) if size else None)
    if cfg.task == "classification" and spec.size is not None and spec.size[0] == spec.size[1]:
        cfg.data.image_size = spec.size[0]  # the preprocessing then resizes as the parity check did
    label_map = LabelMap.from_dict(meta["label_map"]) if meta.get("label_map") else None
    return PREDICTORS[cfg.task](ExportedGraph(runtime, cfg.task, spec, str(path)), config=cfg,
                                classes=list(meta["classes"]), path=path, source=runtime.format,
                                epoch=(meta.get("checkpoint") or {}).get("epoch"), label_map=label_map)
