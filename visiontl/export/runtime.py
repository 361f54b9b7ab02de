"""Running an exported file as a user would, without visiontl's model code: onnxruntime for ONNX, torch.jit for
TorchScript. Used by the parity check (on the bytes about to be written) and by `visiontl predict` on a file.

What can run code: a TorchScript archive holds the model's code (TorchScript, in code/), and torch.jit runs it;
that code can call torch.from_file and so read and overwrite any file the user can. visiontl therefore loads
a TorchScript file only when the user passes ALLOW_CODE_FLAG (the exporter's parity check runs the bytes it has
just traced itself). An ONNX graph is data: onnxruntime runs its operators, which read only the input given
and the external data files beside the model (onnxruntime refuses absolute paths and `..` there).
"""

from __future__ import annotations

import importlib.util
import io
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from visiontl.errors import CheckpointError, ConfigError
from visiontl.export.formats import METADATA_KEY, TORCHSCRIPT_EXTRA
from visiontl.export.graphs import OUTPUTS
from visiontl.export.metadata import check_metadata, parse_metadata
from visiontl.safe_torch import is_torchscript_archive
from visiontl.text import printable

INSTALL_HINT = "pip install 'visiontl[export]'"
ALLOW_CODE_FLAG = "--allow-torchscript-code"
MAX_METADATA_BYTES = 16 * 2**20  # a real file's metadata is tens of KB (its config, class names)


class ExportedRuntime:
    """`runtime(image)` -> {output name: array}, for a float32 NCHW image batch in [0, 1]."""

    def __init__(self, fmt: str, outputs: tuple[str, ...], call: Callable[[np.ndarray], list[np.ndarray]],
                 shapes: dict[str, list[Any]] | None = None, stored_metadata: str | None = None):
        self.format = fmt
        self.outputs = outputs
        self._call = call
        self.shapes = shapes or {}  # ONNX: the graph's shapes as onnxruntime knows them, by name (a str: free)
        self.stored_metadata = stored_metadata  # ONNX: the text under METADATA_KEY, unchecked
        self.metadata: dict[str, Any] | None = None  # set by open_exported once checked

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self._call(np.ascontiguousarray(image, dtype=np.float32))))


def require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the package {module}, which is not installed; {INSTALL_HINT}")


def onnx_runtime(model: bytes | Path) -> ExportedRuntime:
    """`model` in onnxruntime (CPU), with the graph's shapes and the text stored under METADATA_KEY, if any."""
    require("onnxruntime", "running an ONNX file")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its optimiser's notes are not the user's business
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                   providers=["CPUExecutionProvider"])
    outputs = tuple(o.name for o in session.get_outputs())
    shapes = {o.name: list(o.shape) for o in (*session.get_inputs(), *session.get_outputs())}
    stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return ExportedRuntime("onnx", outputs, lambda image: session.run(None, {"image": image}), shapes, stored)


def torchscript_runtime(model: bytes | Path, outputs: tuple[str, ...]) -> ExportedRuntime:
    """`model` in torch.jit. This runs the code stored in the archive: only for bytes visiontl traced itself,
    or a file the user allowed with ALLOW_CODE_FLAG (open_exported)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's own deprecation notice
        module = torch.jit.load(io.BytesIO(model) if isinstance(model, bytes) else str(model), map_location="cpu")

    def call(image: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            result = module(torch.from_numpy(image))
        return [t.numpy() for t in (result if isinstance(result, (tuple, list)) else (result,))]

    return ExportedRuntime("torchscript", outputs, call)


def is_exported_file(path: str | Path) -> bool:
    """An ONNX file (by its .onnx suffix) or a TorchScript archive (by its contents: a torch.save checkpoint
    is a zip too, without code)."""
    path = Path(path)
    return path.suffix.lower() == ".onnx" or is_torchscript_archive(path)


def open_exported(path: str | Path, allow_torchscript_code: bool = False) -> ExportedRuntime:
    """The runtime of an exported file, with its visiontl metadata checked (metadata.check_metadata) against
    itself and against the graph. CheckpointError naming the file if it cannot be read, carries no metadata
    or metadata that does not fit, or is a TorchScript archive and `allow_torchscript_code` is False."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported model {str(path)!r} not found")
    onnx = path.suffix.lower() == ".onnx"
    if not onnx and not allow_torchscript_code:
        raise CheckpointError(f"{path}: refused: a TorchScript archive holds code that runs when the model is used "
                              "(it can read and overwrite any of your files); visiontl runs it only with "
                              f"{ALLOW_CODE_FLAG}, for a file you trust as you would a program (an ONNX export "
                              "or the checkpoint needs no such trust)")
    kind = "ONNX" if onnx else "TorchScript"
    where = f"metadata_props[{METADATA_KEY!r}]" if onnx else f"extra/{TORCHSCRIPT_EXTRA} or {path.name}.json"
    text = None if onnx else _torchscript_metadata_text(path)  # read and checked before any of its code runs
    meta = None if text is None else check_metadata(parse_metadata(text, str(path), where), str(path))
    try:
        runtime = onnx_runtime(path) if onnx else torchscript_runtime(path, tuple(meta["outputs"]) if meta else ())
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 (any reader failure: a file we cannot use, in one line)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable {kind} file ({printable(first, 300)})") from None
    if onnx and runtime.stored_metadata is not None:
        meta = check_metadata(parse_metadata(runtime.stored_metadata, str(path), where), str(path))
    if meta is None:
        raise CheckpointError(f"{path}: no visiontl metadata in {where}; export it with `visiontl export`")
    runtime.metadata = meta
    if onnx:
        check_graph(runtime, str(path))
    return runtime


def _torchscript_metadata_text(path: Path) -> str | None:
    """The archive's extra/visiontl.json, else the side-car FILE.json; None if neither exists. Read as bytes
    from the zip, so a file that is refused has run nothing; either is refused above MAX_METADATA_BYTES."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [i for i in archive.infolist()
                       if i.filename.endswith(f"/extra/{TORCHSCRIPT_EXTRA}") and i.filename.count("/") == 2]
            if entries and entries[0].file_size > MAX_METADATA_BYTES:  # the size a zip claims, before inflating
                raise CheckpointError(f"{path}: metadata extra/{TORCHSCRIPT_EXTRA} of {entries[0].file_size} "
                                      f"bytes, more than visiontl reads ({MAX_METADATA_BYTES})")
            data = archive.read(entries[0]) if entries else None
    except (OSError, zipfile.BadZipFile, KeyError, RuntimeError, ValueError, EOFError) as exc:  # zipfile's failures
        raise CheckpointError(f"{path}: not a readable TorchScript file ({printable(exc, 300)})") from None
    if data:  # torch.jit.save writes the entry empty when no metadata was given
        return data.decode("utf-8", errors="replace")
    sidecar = Path(str(path) + ".json")
    if not sidecar.is_file():
        return None
    if sidecar.stat().st_size > MAX_METADATA_BYTES:
        raise CheckpointError(f"{sidecar}: {sidecar.stat().st_size} bytes, more than visiontl reads as metadata "
                              f"({MAX_METADATA_BYTES})")
    return sidecar.read_text(encoding="utf-8", errors="replace")


def check_graph(runtime: ExportedRuntime, source: str) -> None:
    """What an ONNX graph declares against its metadata: one input `image` of rank 4, the task's outputs, and
    as many classes in the outputs as the metadata names (where the graph fixes that dimension; the rest is
    checked on every output, predict.ExportedGraph)."""
    meta = runtime.metadata
    task, classes = meta["task"], meta["classes"]
    inputs = [name for name in runtime.shapes if name not in runtime.outputs]
    if inputs != ["image"] or len(runtime.shapes["image"]) != 4:
        raise CheckpointError(f"{source}: the graph's inputs are {printable(inputs, 100)} "
                              f"(shape {printable(runtime.shapes.get(inputs[0]) if inputs else None, 100)}); "
                              "visiontl's exports take one input, image [N, 3, H, W]")
    missing = [name for name in OUTPUTS[task] if name not in runtime.outputs]
    if missing:
        raise CheckpointError(f"{source}: the graph has no output {missing[0]!r} (its outputs: "
                              f"{printable(', '.join(runtime.outputs), 200)}); a {task} export has "
                              f"{', '.join(OUTPUTS[task])}")
    for name in CLASS_AXIS.get(task, ()):
        shape = runtime.shapes[name]
        width = shape[1] if len(shape) > 1 else None
        if isinstance(width, int) and width != len(classes):
            raise CheckpointError(f"{source}: the metadata names {len(classes)} classes, the graph's output "
                                  f"{name!r} has {width} ({printable(shape, 100)})")


CLASS_AXIS = {"classification": ("logits", "probabilities"), "segmentation": ("logits",)}  # outputs [N, K, ...]
