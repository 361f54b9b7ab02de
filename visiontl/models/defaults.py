"""The builders' keyword defaults, read from `ModelConfig`: the config schema stays the one home of every default."""

from __future__ import annotations

from typing import Any

from visiontl.config import ModelConfig


def model_default(key: str) -> Any:
    """`ModelConfig`'s default of `key` (a list comes back as a tuple: a signature's default must not be mutable)."""
    value = ModelConfig.model_fields[key].get_default(call_default_factory=True)
    return tuple(value) if isinstance(value, list) else value
