"""A graph to file bytes, and metadata into the file: ONNX and TorchScript.

Both go through torch's tracer. ONNX uses torch.onnx.export's TorchScript-based exporter (`dynamo=False`),
TorchScript uses torch.jit.trace. On torch 2.14 the torch.export-based ONNX exporter (the default since
2.9) cannot export torchvision's detectors (a data-dependent guard in batched NMS) nor FPN / DeepLabV3+
segmenters with free image sizes; the traced exporters export every visiontl model, free sizes included
(docs/deploy.md has the measurements). Torch marks both deprecated: the parity check after every export
is what keeps them honest.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import torch
from torch import nn

from visiontl.export.graphs import InputSpec

ONNX_EXPORTER = "torch.onnx.export, TorchScript-based (dynamo=False)"
TORCHSCRIPT_EXPORTER = "torch.jit.trace"
DEFAULT_OPSET = 17
OPSET_RANGE = (11, 20)  # torchvision's detection ops need 11; the TorchScript-based exporter writes at most 20
METADATA_KEY = "visiontl"  # ONNX metadata_props entry, and TorchScript extra file visiontl.json, holding it all
TORCHSCRIPT_EXTRA = "visiontl.json"


def dynamic_axes(task: str, spec: InputSpec, outputs: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """The free dimensions of the input and of every output, by name (ONNX's dynamic_axes)."""
    batch = {0: "batch"} if spec.batch is None else {}
    size = {2: "height", 3: "width"} if spec.size is None else {}
    axes: dict[str, dict[int, str]] = {"image": {**batch, **size}}
    for name in outputs:
        if task == "classification":
            axes[name] = dict(batch)
        elif task == "segmentation":
            axes[name] = {**batch, **size} if name == "logits" else {**batch, **{k - 1: v for k, v in size.items()}}
        else:  # detectors: one image in, a free number of detections out
            axes[name] = {0: "detections", **(size if name == "masks" else {})}
    return {k: v for k, v in axes.items() if v}


def to_onnx(graph: nn.Module, example: torch.Tensor, task: str, spec: InputSpec, outputs: tuple[str, ...],
            opset: int) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the parity check is the verdict
        torch.onnx.export(graph, (example,), buf, dynamo=False, input_names=["image"], output_names=list(outputs),
                          dynamic_axes=dynamic_axes(task, spec, outputs), opset_version=opset)
    return buf.getvalue()


def to_torchscript(graph: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(graph, (example,), check_trace=False)


def torchscript_bytes(module: torch.jit.ScriptModule, metadata: dict[str, Any] | None = None) -> bytes:
    buf = io.BytesIO()
    extra = {TORCHSCRIPT_EXTRA: json.dumps(metadata)} if metadata is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(module, buf, _extra_files=extra)
    return buf.getvalue()


def onnx_with_metadata(data: bytes, metadata: dict[str, Any]) -> bytes:
    """The ONNX model with `metadata` in its metadata_props: every key readable on its own (strings as they
    are, anything else as JSON), plus the whole dict as JSON under "visiontl" for an exact read back."""
    import onnx

    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    for key, value in {**metadata, METADATA_KEY: metadata}.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    model.doc_string = f"visiontl {metadata.get('task')} model; input and outputs: metadata_props (docs/deploy.md)"
    return model.SerializeToString()
