"""Running an exported file as a user would, without visiontl's model code: onnxruntime for ONNX, torch.jit for
TorchScript. Used by the parity check (on the bytes about to be written) and by `visiontl predict` on a file.
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from visiontl.errors import CheckpointError, ConfigError
from visiontl.export.formats import METADATA_KEY, TORCHSCRIPT_EXTRA

INSTALL_HINT = "pip install 'visiontl[export]'"


class ExportedRuntime:
    """`runtime(image)` -> {output name: array}, for a float32 NCHW image batch in [0, 1]."""

    def __init__(self, fmt: str, outputs: tuple[str, ...], call: Callable[[np.ndarray], list[np.ndarray]],
                 metadata: dict[str, Any] | None = None):
        self.format = fmt
        self.outputs = outputs
        self._call = call
        self.metadata = metadata

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self._call(np.ascontiguousarray(image, dtype=np.float32))))


def require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the package {module}, which is not installed; {INSTALL_HINT}")


def onnx_runtime(model: bytes | Path, metadata: dict[str, Any] | None = None) -> ExportedRuntime:
    require("onnxruntime", "running an ONNX file")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its optimiser's notes are not the user's business
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                   providers=["CPUExecutionProvider"])
    outputs = tuple(o.name for o in session.get_outputs())
    if metadata is None:
        stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        metadata = json.loads(stored) if stored else None
    return ExportedRuntime("onnx", outputs, lambda image: session.run(None, {"image": image}), metadata)


def torchscript_runtime(model: bytes | Path, outputs: tuple[str, ...] | None = None) -> ExportedRuntime:
    import torch

    extra = {TORCHSCRIPT_EXTRA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's own deprecation notice
        module = torch.jit.load(io.BytesIO(model) if isinstance(model, bytes) else str(model), map_location="cpu",
                                _extra_files=extra)
    metadata = json.loads(extra[TORCHSCRIPT_EXTRA]) if extra[TORCHSCRIPT_EXTRA] else None
    if metadata is None and not isinstance(model, bytes):
        sidecar = Path(str(model) + ".json")
        if sidecar.is_file():
            metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    if outputs is None:
        outputs = tuple(metadata["outputs"]) if metadata else ()

    def call(image: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            result = module(torch.from_numpy(image))
        return [t.numpy() for t in (result if isinstance(result, (tuple, list)) else (result,))]

    return ExportedRuntime("torchscript", outputs, call, metadata)


def is_exported_file(path: str | Path) -> bool:
    """An ONNX file (by its .onnx suffix) or a TorchScript archive (a zip with code/ in it; a torch.save
    checkpoint is a zip too, without code)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith(f"/extra/{TORCHSCRIPT_EXTRA}") for name in archive.namelist())


def open_exported(path: str | Path) -> ExportedRuntime:
    """The runtime of an exported file, with its visiontl metadata (CheckpointError naming the file if it
    cannot be read or carries none)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported model {str(path)!r} not found")
    kind = "ONNX" if path.suffix.lower() == ".onnx" else "TorchScript"
    try:
        runtime = onnx_runtime(path) if kind == "ONNX" else torchscript_runtime(path)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 (any reader failure: a file we cannot use, in one line)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable {kind} file ({first[:300]})") from None
    if not runtime.metadata or runtime.metadata.get("task") is None:
        where = "metadata_props" if kind == "ONNX" else f"extra/{TORCHSCRIPT_EXTRA} or {path.name}.json"
        raise CheckpointError(f"{path}: no visiontl metadata in {where}; export it with `visiontl export`")
    return runtime
