"""Checkpoints, written atomically (`visiontl.atomic`). Checkpoints are plain
dicts of tensors and Python literals, read back with `weights_only=True`: loading one never runs code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visiontl import safe_torch
from visiontl.atomic import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from visiontl.errors import CheckpointError

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    ckpt = safe_torch.load(path, CheckpointError, "visiontl checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a visiontl checkpoint (no 'model' and 'config' entries)")
    return ckpt
