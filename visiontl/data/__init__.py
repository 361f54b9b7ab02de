"""Data: decoding, datasets per task, augmentation presets, samplers and synthetic sets for tests."""

from pathlib import Path

from visiontl.config import DataConfig
from visiontl.errors import DataError


def dataset_root(data: DataConfig) -> Path:
    """data.root, checked: set and an existing folder (one line otherwise, before anything is built)."""
    if data.root is None:
        raise DataError("data.root is not set: point it at the dataset folder")
    if not data.root.is_dir():
        raise DataError(f"data.root: {str(data.root)!r} does not exist or is not a folder")
    return data.root
