"""The backbone registry: a plain dict from name to a `BackboneSpec`, filled by `register_backbone`.

`timm:<model>` names any timm model without registering it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from visiontl.errors import ConfigError

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class WeightsFile:
    """One published ImageNet weights file and how to check it."""

    url: str
    sha256: str  # the full digest, or the prefix its publisher put in the file name (torch.hub's own check)
    label: str  # e.g. "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    index_package: str | None = None  # a package-index distribution that carries the same bytes
    index_member: str | None = None  # the file's path inside that distribution

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    source: str  # "torchvision" or "timm"
    # build(weights_path) -> Backbone; weights_path is a verified ImageNet file or None for random init
    build: Callable[..., object]
    weights: WeightsFile | None
    timm_name: str | None = None  # for timm sources: the timm model name


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _BACKBONES[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Registered names (`timm:<model>` names are accepted too but not listed)."""
    _ensure_loaded()
    return sorted(_BACKBONES)


def check_backbone_name(name: str) -> None:
    """Raise ConfigError with the nearest valid name when `name` is not a backbone."""
    _ensure_loaded()
    if name in _BACKBONES:
        return
    if name.startswith(TIMM_PREFIX):
        import timm

        model = name[len(TIMM_PREFIX) :]
        if timm.is_model(model):
            return
        close = difflib.get_close_matches(model, timm.list_models(), n=1)
        hint = f" (did you mean 'timm:{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown timm model {model!r}{hint}")
    close = difflib.get_close_matches(name, list(_BACKBONES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"unknown backbone {name!r}{hint}; see `visiontl backbones`, or use 'timm:<model>' for any timm model"
    )


def get_spec(name: str) -> BackboneSpec:
    check_backbone_name(name)
    if name in _BACKBONES:
        return _BACKBONES[name]
    from visiontl.backbones.timm_backbones import timm_spec

    return timm_spec(name[len(TIMM_PREFIX) :], name)


def _ensure_loaded() -> None:
    if not _BACKBONES:
        from visiontl.backbones import timm_backbones, torchvision_backbones  # noqa: F401  (they register)
