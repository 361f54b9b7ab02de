"""What YOLO's reader and writer share: reading a text file with one-line errors, data.yaml's `names` and
`visiontl_category_ids`, and where an image's label file is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from visiontl import safe_yaml
from visiontl.data.formats.common import note_input
from visiontl.errors import DataError

IDS_KEY = "visiontl_category_ids"  # data.yaml: class index -> dataset category id, when they differ


def load_yaml(yaml_path: Path) -> Any:
    try:
        return safe_yaml.load(read_text(yaml_path))
    except safe_yaml.YamlRefused as exc:
        raise DataError(f"{yaml_path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{yaml_path}: not valid YAML ({str(exc).strip().splitlines()[0]})") from None


def names_of(raw: Any, yaml_path: Path) -> dict[int, str]:
    if isinstance(raw, list):
        return {k: str(name) for k, name in enumerate(raw)}
    if isinstance(raw, dict):
        out = {}
        for k, name in raw.items():
            if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                raise DataError(f"{yaml_path}: names key {k!r} is not a class index (0, 1, ...)")
            out[k] = str(name)
        return out
    raise DataError(f"{yaml_path}: 'names' is missing or not a list or an {{index: name}} mapping")


def category_ids(data: dict[str, Any], names: dict[int, str], yaml_path: Path) -> dict[int, int]:
    raw = data.get(IDS_KEY)
    if raw is None:
        return {k: k for k in names}
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    ok = isinstance(raw, dict) and set(raw) == set(names) and len(set(raw.values())) == len(raw)
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raise DataError(f"{yaml_path}: '{IDS_KEY}' must map every class index of 'names' to a distinct integer "
                        "category id")
    return dict(raw)



def label_path(image: Path, folders: tuple[str, ...] = ("images",)) -> Path:
    """The label file of `image`: the last folder of its path named in `folders` becomes `labels`
    (Ultralytics: `images`; darknet also `JPEGImages`); with none of them, the .txt beside the image."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in folders:
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_text(path: Path) -> str:
    note_input(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot read ({reason})") from None


