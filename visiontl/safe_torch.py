"""Torch files from elsewhere (checkpoints, weights) loaded without running code.

A `.pt`/`.pth` file is a pickle, and unpickling can call any function the file names (`__reduce__`): a
"checkpoint" can delete files or open a shell. `torch.load(..., weights_only=True)` only rebuilds tensors
and plain Python values and refuses everything else; `load` turns that refusal into one line naming the
file and what it tried to build, instead of torch's advice on how to load it unsafely.

A TorchScript archive (what `visiontl export --format torchscript` writes, whatever its name) is a zip too,
holding the model's code; torch.load hands it to torch.jit.load, which runs that code. `load` refuses it by
its contents before torch sees it: only `visiontl predict --allow-torchscript-code` loads one (export/runtime.py).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from visiontl.errors import VisiontlError


def load(path: Path, error: type[VisiontlError], what: str) -> Any:
    """torch.load(path, map_location="cpu", weights_only=True); `error` (one line) when it cannot."""
    if is_torchscript_archive(path):
        raise error(f"{path}: refused: a TorchScript archive (an exported model, holding code that torch would run), "
                    f"not a {what}; visiontl loads only tensors here (torch.load weights_only=True)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if "Weights only load failed" in text and found:
            raise error(f"{path}: refused: the {what} holds more than tensors and plain values (pickled "
                        f"{found.group(1)}, which could run code when loaded); visiontl loads only tensors "
                        "(torch.load weights_only=True)") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)  # past torch's advice to load it unsafely
        raise error(f"{path}: not a readable {what} ({detail.group(1) if detail else _first_line(text)})") from None
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds for a corrupt file)
        raise error(f"{path}: not a readable {what} ({_first_line(str(exc)) or type(exc).__name__})") from None


def is_torchscript_archive(path: str | Path) -> bool:
    """A zip holding TorchScript: code/ records (the model's code) or constants.pkl (what torch.load itself
    looks for before handing a file to torch.jit.load). A torch.save checkpoint is a zip without either."""
    path = Path(path)
    try:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(name.count("/") >= 1 and (name.split("/", 1)[1].startswith("code/")
                                                 or name.split("/", 1)[1] == "constants.pkl")
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):  # not a zip we can list: not TorchScript either
        return False


def _first_line(text: str) -> str:
    lines = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()  # torch colours parts of its messages
    return lines[0] if lines else ""
