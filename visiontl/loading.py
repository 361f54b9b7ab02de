"""A trained model read from its file as a Predictor (visiontl.predictor): a checkpoint, or a file `visiontl
export` wrote (ONNX, TorchScript). `vtl.load`, `visiontl predict` and its pre-annotation read models here."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_predictor(path: str | Path, allow_torchscript_code: bool = False, device: str | None = None) -> Any:
    """The task's Predictor for a checkpoint or an exported file (told apart by export.runtime.is_exported_file).
    allow_torchscript_code: load a TorchScript file, whose stored code runs when it is used; device: where a
    checkpoint's model runs (default: the CPU; an exported file runs on the CPU)."""
    from visiontl.export.runtime import is_exported_file

    if is_exported_file(path):
        from visiontl.export.predict import exported_predictor

        return exported_predictor(path, allow_torchscript_code)
    from visiontl.engine.inference import load_trained
    from visiontl.predictor import checkpoint_predictor

    return checkpoint_predictor(load_trained(path), path, device)
