"""`visiontl export`: checkpoint -> graph -> file bytes -> parity check on those bytes -> the file, written
atomically only when the check passes (a file on disk is one that passed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontl.atomic import atomic_write_bytes, atomic_write_json
from visiontl.errors import ConfigError, ExportError, ParityError, VisiontlError
from visiontl.export.formats import (DEFAULT_OPSET, ONNX_EXPORTER, OPSET_RANGE, TORCHSCRIPT_EXPORTER, onnx_with_metadata,
                                     to_onnx, to_torchscript, torchscript_bytes)
from visiontl.export.graphs import DETECTION_TASKS, OUTPUTS, example_input, export_graph, input_spec
from visiontl.export.metadata import build_metadata
from visiontl.export.parity import DEFAULT_TOLERANCE, Parity, check_images, measure
from visiontl.export.runtime import onnx_runtime, require, torchscript_runtime

FORMATS = ("onnx", "torchscript")
DETECTION_TRACE_SIZE = (101, 133)  # any size works: the detectors resize inside; odd, so nothing divides evenly


@dataclass
class ExportResult:
    path: Path
    sidecar: Path | None  # TorchScript's FILE.json
    size_bytes: int
    metadata: dict[str, Any]
    parity: Parity


def export_checkpoint(checkpoint: str | Path, fmt: str, out: Path, opset: int | None = None, dynamic_batch: bool = False,
                      image_size: tuple[int, int] | None = None, check_folder: Path | None = None,
                      tolerance: float | None = None) -> ExportResult:
    from visiontl.engine.inference import load_trained
    from visiontl.predictor import checkpoint_predictor

    checkpoint, out = Path(checkpoint), Path(out)
    opset = _check_options(fmt, out, opset, tolerance)
    loaded = load_trained(checkpoint)
    cfg = loaded.config
    task = cfg.task
    spec = input_spec(task, cfg.data.image_size, dynamic_batch, image_size)
    graph = export_graph(task, loaded.model, loaded.backbone.mean, loaded.backbone.std)
    s = cfg.data.image_size
    example = example_input(spec, DETECTION_TRACE_SIZE if task in DETECTION_TASKS else (s + 7, s + 21))
    what = f"{cfg.model.arch} on {cfg.model.backbone}"
    try:
        if fmt == "onnx":
            data = to_onnx(graph, example, task, spec, OUTPUTS[task], opset)
            runtime = onnx_runtime(data)
        else:
            module = to_torchscript(graph, example)
            runtime = torchscript_runtime(torchscript_bytes(module), OUTPUTS[task])
    except VisiontlError:
        raise
    except Exception as exc:  # noqa: BLE001 (whatever the exporter cannot do: said in one line)
        raise ExportError(f"{checkpoint}: {what} cannot be exported to {fmt} by {_exporter(fmt, opset)} "
                          f"({_first_line(exc)})") from None

    tol = DEFAULT_TOLERANCE[task] if tolerance is None else tolerance
    images, source = check_images(loaded, check_folder)
    try:
        parity = measure(checkpoint_predictor(loaded, checkpoint), runtime, spec, images, tol, source)
    except VisiontlError:
        raise
    except Exception as exc:  # noqa: BLE001 (the file was written by the exporter but does not run)
        runner = "onnxruntime" if fmt == "onnx" else "torch.jit"
        raise ExportError(f"{checkpoint}: the {fmt} export of {what} does not run in {runner} "
                          f"({_first_line(exc)}); nothing written") from None
    if not parity.passed:
        raise ParityError(f"{out}: parity check failed (difference {parity.difference:.3g} > tolerance {tol:g}, on "
                          f"{parity.worst}); nothing written; {parity.summary()}")

    meta = build_metadata(loaded, checkpoint, fmt, _exporter(fmt, opset), spec, parity.to_dict())
    if fmt == "onnx":
        meta["opset"] = opset
        payload = onnx_with_metadata(data, meta)
        sidecar = None
    else:
        payload = torchscript_bytes(module, meta)
        sidecar = Path(f"{out}.json")
    atomic_write_bytes(out, payload)
    if sidecar is not None:
        atomic_write_json(sidecar, meta)
    return ExportResult(out, sidecar, len(payload), meta, parity)


def _check_options(fmt: str, out: Path, opset: int | None, tolerance: float | None) -> int | None:
    """The options that need no model, checked first; returns the opset (ONNX) or None."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if tolerance is not None and not tolerance >= 0:
        raise ConfigError(f"--tolerance: must be at least 0, got {tolerance}")
    if fmt == "torchscript":
        if opset is not None:
            raise ConfigError("--opset is an ONNX setting; leave it out with --format torchscript")
        if out.suffix.lower() == ".onnx":
            raise ConfigError(f"--out: {out.name} ends in .onnx, which `visiontl predict` reads as ONNX; "
                              "name a TorchScript file .torchscript or .pt")
        return None
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out: an ONNX file's name ends in .onnx (`visiontl predict` tells formats by it), "
                          f"got {out.name}")
    require("onnx", "--format onnx")
    require("onnxruntime", "--format onnx (its parity check)")
    opset = DEFAULT_OPSET if opset is None else opset
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ConfigError(f"--opset: {opset} is outside {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (torchvision's detection "
                          f"ops need 11; torch's TorchScript-based exporter writes at most {OPSET_RANGE[1]})")
    return opset


def _exporter(fmt: str, opset: int | None) -> str:
    return f"{ONNX_EXPORTER}, opset {opset}" if fmt == "onnx" else TORCHSCRIPT_EXPORTER


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:300]
