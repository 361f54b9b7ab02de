"""Read a run directory (docs/run-directory.md) into one typed record.

Every file is optional except that a run needs metrics.json or log.csv: older runs lack the later files,
and an evaluation folder has no log.csv. A file that is there but cannot be read is a one-line DataError
naming it; a file that is not there is listed in `Run.missing` so the report can say so.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visiontl import safe_yaml
from visiontl.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# eval_raw.npz keys of runs written before they carried an IoU-type prefix.
LEGACY_COCO_KEYS = ("precision", "recall", "iou_thresholds", "rec_thresholds", "category_ids", "area_ranges",
                    "area_labels", "max_dets")

# The later files of the contract, in the order the report mentions them when absent.
OPTIONAL_FILES = ("config.yaml", "log.csv", "metrics.json", "eval_raw.npz", "run.json", "eval_images.json",
                  "gallery/index.json")


@dataclass
class GalleryImage:
    """One picture of the gallery: ground truth and prediction side by side, for one val image."""

    png_name: str
    file: str
    score: float | None
    kind: str  # "worst" or "best"
    png: bytes | None  # None when the PNG named by the index is missing or is not a PNG


@dataclass
class Run:
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    log_columns: list[str] = field(default_factory=list)
    log_rows: list[dict[str, float | None]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # run.json
    eval_images: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)  # data.json: val taken from train, images left out
    gallery: list[GalleryImage] | None = None  # None: the run has no gallery/index.json
    missing: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def task(self) -> str:
        """The config's task; else run.json's; else guessed from the metric keys (an evaluation folder)."""
        task = self.config.get("task") or self.info.get("task")
        if task:
            return str(task)
        if "segm/AP" in self.metrics:
            return "instance_segmentation"
        if "bbox/AP" in self.metrics:
            return "detection"
        if "mIoU" in self.metrics:
            return "segmentation"
        return "classification"

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key (`train.monitor`), or `default` when the config lacks it."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def column(self, name: str) -> list[float | None]:
        return [row.get(name) for row in self.log_rows]


def read_run(path: Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a run directory (no such folder)")
    if not (path / "metrics.json").is_file() and not (path / "log.csv").is_file():
        raise DataError(f"{path}: not a run directory (it holds neither metrics.json nor log.csv)")
    run = Run(path=path)
    run.missing = [name for name in OPTIONAL_FILES if not (path / name).is_file()]
    if (path / "config.yaml").is_file():
        run.config = _read_yaml_mapping(path / "config.yaml")
    if (path / "log.csv").is_file():
        run.log_columns, run.log_rows = _read_log(path / "log.csv")
    if (path / "metrics.json").is_file():
        run.metrics = _read_json(path / "metrics.json", dict)
    if (path / "eval_raw.npz").is_file():
        run.raw = with_iou_type_prefix(_read_npz(path / "eval_raw.npz"))
    if (path / "run.json").is_file():
        run.info = _read_json(path / "run.json", dict)
    if (path / "eval_images.json").is_file():
        run.eval_images = _read_json(path / "eval_images.json", dict)
    if (path / "data.json").is_file():
        run.data = _read_json(path / "data.json", dict)
    if (path / "gallery" / "index.json").is_file():
        run.gallery = _read_gallery(path)
    return run


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({_first_line(exc)})") from None
    except RecursionError:
        raise DataError(f"{path}: not readable JSON (nested too deeply)") from None
    if not isinstance(value, kind):
        raise DataError(f"{path}: expected a JSON {'object' if kind is dict else 'array'}, got {type(value).__name__}")
    return value


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        value = safe_yaml.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not readable YAML ({_first_line(exc)})") from None
    except RecursionError:
        raise DataError(f"{path}: not readable YAML (nested too deeply)") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a mapping of config sections, got {type(value).__name__}")
    return value


def _read_log(path: Path) -> tuple[list[str], list[dict[str, float | None]]]:
    """Columns and rows of log.csv, every cell a float (None where empty: val_loss of a task without one)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = [{k: _number(v) for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV log ({_first_line(exc)})") from None
    if "epoch" not in columns:
        raise DataError(f"{path}: not a visiontl log (no 'epoch' column; columns: {', '.join(columns[:8])})")
    return columns, rows


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    # allow_pickle=False: a report must never run code from a file it was handed.
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({_first_line(exc)})") from None


def with_iou_type_prefix(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs from before the `bbox_` / `segm_` prefixes stored one unprefixed set of COCO arrays, the boxes'."""
    if "precision" not in raw or "bbox_precision" in raw:
        return raw
    return {(f"bbox_{k}" if k in LEGACY_COCO_KEYS else k): v for k, v in raw.items()}


def _read_gallery(run_dir: Path) -> list[GalleryImage]:
    index_path = run_dir / "gallery" / "index.json"
    entries = _read_json(index_path, list)
    root = run_dir.resolve()
    images = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "png" not in entry:
            raise DataError(f"{index_path}: entry {n} is not an object with a 'png' name")
        png_name = str(entry["png"])
        images.append(GalleryImage(png_name=png_name, file=str(entry.get("file", "")), score=_score(entry.get("score")),
                                   kind=str(entry.get("kind", "")), png=_gallery_png(root, png_name)))
    return images


def _gallery_png(root: Path, name: str) -> bytes | None:
    """The PNG named by the index (relative to gallery/ or to the run), only from inside the run directory.
    A name no file can have (a NUL, longer than the system allows) names no picture, like a missing one."""
    for candidate in (root / "gallery" / name, root / name):
        try:
            resolved = candidate.resolve()
            if resolved.is_relative_to(root) and resolved.is_file():
                data = resolved.read_bytes()
                return data if data.startswith(PNG_SIGNATURE) else None
        except (OSError, ValueError):  # ENAMETOOLONG, EACCES, ...; ValueError: an embedded NUL
            continue
    return None


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
