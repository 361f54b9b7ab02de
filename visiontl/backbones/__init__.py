"""Backbones: one contract over torchvision and timm networks, with offline-first ImageNet weights.

>>> from visiontl.backbones import create_backbone
>>> bb = create_backbone("resnet18", weights="none")
>>> [(f.name, f.channels, f.stride) for f in bb.feature_info][-1]
('stage5', 512, 32)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from visiontl.backbones.base import Backbone, FeatureInfo, Stage
from visiontl.backbones.registry import (
    TIMM_PREFIX,
    BackboneSpec,
    check_backbone_name,
    get_spec,
    list_backbones,
    register_backbone,
)

__all__ = [
    "TIMM_PREFIX",
    "Backbone",
    "BackboneSpec",
    "FeatureInfo",
    "Stage",
    "check_backbone_name",
    "create_backbone",
    "get_spec",
    "list_backbones",
    "register_backbone",
]


def create_backbone(name: str, weights: str = "imagenet", log: Callable[[str], None] = print) -> Backbone:
    """Build backbone `name` with `weights`: 'imagenet' (its source's own, from the offline cache, fetched
    once if absent), 'none' (random), or a path (state dict, safetensors file or visiontl checkpoint)."""
    from visiontl.backbones.weights import read_state_dict, resolve_imagenet

    spec = get_spec(name)
    if weights == "imagenet":
        backbone = spec.build(imagenet_file=resolve_imagenet(spec, log=log))
    elif weights == "none":
        backbone = spec.build()
    else:
        backbone = spec.build(state_dict=read_state_dict(Path(weights)))
    backbone.describe()
    return backbone
