"""What an exported file says about itself: enough to use it without the checkpoint or visiontl.

ONNX keeps it in metadata_props (each key on its own, plus all of it as JSON under "visiontl"); TorchScript
in the archive's extra/visiontl.json and in a side-car FILE.json beside the file (docs/deploy.md).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from visiontl import __version__
from visiontl.export.graphs import DETECTION_TASKS, OUTPUTS, InputSpec

INPUT_NOTE = ("float32 RGB images, NCHW, values in [0, 1] (8-bit pixels divided by 255); the mean/std "
              "normalisation is inside the graph")
OUTPUT_NOTES = {
    "classification": {"logits": "[N, K] class scores before softmax",
                       "probabilities": "[N, K] softmax of the logits; class k is classes[k]"},
    "segmentation": {"logits": "[N, K, H, W] per-pixel class scores at the input's size",
                     "labels": "[N, H, W] int64 class ids (argmax of the logits); id k is classes[k]"},
    "detection": {"boxes": "[D, 4] x1, y1, x2, y2 in input pixels",
                  "scores": "[D] descending; only scores above score_threshold are kept",
                  "labels": "[D] int64 in 1..K; label k is classes[k - 1]"},
}
OUTPUT_NOTES["instance_segmentation"] = {**OUTPUT_NOTES["detection"],
                                         "masks": "[D, 1, H, W] mask probabilities at the input's size (> 0.5: inside)"}


def build_metadata(loaded: Any, checkpoint: Path, fmt: str, exporter: str, spec: InputSpec,
                   parity: dict[str, Any]) -> dict[str, Any]:
    cfg = loaded.config
    task = cfg.task
    detector = task in DETECTION_TASKS
    meta: dict[str, Any] = {
        "producer": f"visiontl {__version__}",
        "visiontl_version": __version__,
        "task": task,
        "format": fmt,
        "exporter": exporter,
        "arch": cfg.model.arch,
        "backbone": cfg.model.backbone,
        "classes": list(loaded.classes),
        "input": {"name": "image", "shape": spec.shape(), "dtype": "float32", "channels": "RGB", "range": [0.0, 1.0],
                  "note": INPUT_NOTE},
        "input_size": list(spec.size) if spec.size is not None else None,
        "normalization": {"mean": list(loaded.backbone.mean), "std": list(loaded.backbone.std), "inside_graph": True},
        "outputs": {name: OUTPUT_NOTES[task][name] for name in OUTPUTS[task]},
        "score_threshold": cfg.model.score_threshold if detector else None,
        "label_map": loaded.checkpoint.get("label_map"),
        "checkpoint": {"file": checkpoint.name, "epoch": loaded.checkpoint.get("epoch"),
                       "visiontl_version": loaded.checkpoint.get("visiontl_version")},
        "parity": parity,
        "exported": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "config": cfg.to_dict(),
    }
    if detector:
        from visiontl.tasks.detection import eval_image_size

        meta["resize"] = f"inside the graph: {eval_image_size(loaded.model)}"
    return meta
