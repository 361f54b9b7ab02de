"""visiontl: transfer learning for computer vision.

Pretrained classification backbones plug into task heads and are fine-tuned with explicit policies
(feature extraction, partial, full, staged) by one trainer. Start with `visiontl --help`, or in Python:

    import visiontl as vtl
    cfg = vtl.load_config("recipe.yaml", overrides={"train.epochs": 3})
    run = vtl.train(cfg)
    model = vtl.load(run.best)
    preds = model.predict(["a.jpg"])

(docs/python-api.md). The names below load on first use, so `import visiontl` stays fast and imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "Config": "visiontl.config",
    "load_config": "visiontl.api",
    "train": "visiontl.api",
    "Run": "visiontl.api",
    "load": "visiontl.api",
    "evaluate": "visiontl.api",
    "build_model": "visiontl.api",
    "Predictor": "visiontl.predictor",
    "ClassPrediction": "visiontl.predictions",
    "Detections": "visiontl.predictions",
    "SegmentationPrediction": "visiontl.predictions",
    "VisiontlError": "visiontl.errors",
    "ConfigError": "visiontl.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'visiontl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
