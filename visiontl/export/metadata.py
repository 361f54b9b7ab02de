"""What an exported file says about itself: enough to use it without the checkpoint or visiontl.

ONNX keeps it in metadata_props (each key on its own, plus all of it as JSON under "visiontl"); TorchScript
in the archive's extra/visiontl.json and in a side-car FILE.json beside the file (docs/deploy.md).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from visiontl import __version__
from visiontl.errors import CheckpointError
from visiontl.export.graphs import DETECTION_TASKS, OUTPUTS, InputSpec
from visiontl.text import printable

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


# --- reading it back ---------------------------------------------------------------------------------------
# An exported file may come from anyone, and its metadata is only a claim: `visiontl predict` builds its
# pipeline from it, so every field it uses is checked here, once, before anything else reads it; a field that
# does not fit is refused in one line naming the file and the field.


def parse_metadata(text: str, source: str, where: str) -> Any:
    """The JSON in `text` (CheckpointError naming `source` and `where` if it is not JSON: malformed, nested
    past Python's recursion limit, or an integer of more digits than Python converts)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError, as is the digit limit
        reason = "nested too deeply" if isinstance(exc, RecursionError) else (str(exc).splitlines() or ["?"])[0]
        raise CheckpointError(f"{source}: metadata {where} is not JSON ({printable(reason, 200)})") from None


def check_metadata(meta: Any, source: str) -> dict[str, Any]:
    """`meta` if every field `visiontl predict` uses has the type and range `build_metadata` writes;
    otherwise CheckpointError naming `source` and the first field that does not."""
    from visiontl.data.images import MAX_SIDE

    def bad(field: str, expected: str, value: Any) -> CheckpointError:
        return CheckpointError(f"{source}: metadata field {field!r}: expected {expected}, got {_shown(value)}")

    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: metadata is {_kind(meta)}, not a JSON object")
    for key in ("task", "classes", "input", "outputs", "config"):
        if key not in meta:
            raise CheckpointError(f"{source}: metadata has no field {key!r}; export it again with `visiontl export`")

    task = meta["task"]
    if not isinstance(task, str) or task not in OUTPUTS:
        raise bad("task", f"one of {', '.join(OUTPUTS)}", task)
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise bad("classes", "a non-empty list of class names (strings)", classes)
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            raise bad("classes", "each class once", f"{name!r} twice")
        seen.add(name)

    spec = meta["input"]
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not isinstance(shape, list) or len(shape) != 4 or shape[1] != 3 or not all(
            isinstance(d, str) or _int_in(d, 1, MAX_SIDE) for d in shape):
        raise bad("input.shape", f"[N, 3, H, W], each a name or an integer in 1..{MAX_SIDE}",
                  shape if isinstance(spec, dict) else spec)
    size = meta.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(_int_in(d, 1, MAX_SIDE) for d in size)):
        raise bad("input_size", f"null or [H, W], integers in 1..{MAX_SIDE}", size)
    if size is not None and shape[2:] != size:
        raise bad("input_size", f"the H, W of input.shape {shape}", size)
    if size is None and any(isinstance(d, int) for d in shape[2:]):
        raise bad("input_size", f"[H, W] as fixed by input.shape {shape}", size)

    outputs = meta["outputs"]
    if not isinstance(outputs, dict) or tuple(outputs) != OUTPUTS[task]:
        raise bad("outputs", f"the {task} outputs {', '.join(OUTPUTS[task])}, in this order",
                  list(outputs) if isinstance(outputs, dict) else outputs)
    if not isinstance(meta["config"], dict):
        raise bad("config", "the model's config (a JSON object)", meta["config"])

    label_map = meta.get("label_map")
    if task in DETECTION_TASKS:
        ids = label_map.get("category_ids") if isinstance(label_map, dict) else None
        if not isinstance(ids, list) or len(ids) != len(classes) or len(set(map(repr, ids))) != len(ids) \
                or not all(_int_in(i, -2**63, 2**63 - 1) for i in ids):
            raise bad("label_map.category_ids", f"{len(classes)} distinct integers, one per class",
                      ids if isinstance(label_map, dict) else label_map)
        if label_map.get("names") != classes:
            raise bad("label_map.names", "the class names of 'classes'", label_map.get("names"))
    ckpt = meta.get("checkpoint")
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    if ckpt is not None and not (isinstance(ckpt, dict) and (epoch is None or _int_in(epoch, 0, 2**63 - 1))):
        raise bad("checkpoint", "null or an object whose epoch is null or an integer", ckpt)
    threshold = meta.get("score_threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                                      and 0 <= threshold <= 1):
        raise bad("score_threshold", "null or a number in 0..1", threshold)
    return meta


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A bounded, printable rendering of a value from the file: JSON as written, cut at 80 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return printable(text, 80)
