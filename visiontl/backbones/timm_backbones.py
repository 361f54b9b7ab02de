"""Any timm model as a backbone, through timm's own `features_only` wrappers.

Registered names here (`xception`) are aliases; `timm:<model>` reaches every other timm model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from visiontl.backbones.base import Backbone
from visiontl.backbones.registry import BackboneSpec, WeightsFile, register_backbone
from visiontl.errors import WeightsError


class TimmBackbone(Backbone):
    def __init__(self, name: str, body: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], probe: int):
        super().__init__(name, mean, std, probe)
        self.body = body

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.body(x)
        return list(out.values()) if isinstance(out, dict) else list(out)


def _weights_file(timm_name: str) -> WeightsFile | None:
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return None
    url = cfg.url or ""
    if url:
        filename = url.rsplit("/", 1)[-1]
        digest = filename.rsplit("-", 1)[-1].split(".")[0] if "-" in filename else ""
        return WeightsFile(url=url, sha256=digest, label=f"timm {timm_name}")
    if cfg.hf_hub_id:
        return WeightsFile(url=f"hf-hub:{cfg.hf_hub_id}", sha256="", label=f"timm {timm_name} ({cfg.hf_hub_id})")
    return None


def timm_spec(timm_name: str, name: str) -> BackboneSpec:
    def build(imagenet_file: Path | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> TimmBackbone:
        import timm

        kwargs: dict[str, object] = {"features_only": True}
        if imagenet_file is not None:
            # timm's loader applies the model's own checkpoint filter (key renames of ported weights).
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(imagenet_file)})
        try:
            body = timm.create_model(timm_name, **kwargs)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            if imagenet_file is not None:
                raise WeightsError(f"{imagenet_file}: does not fit timm model {timm_name!r} ({first})") from None
            raise WeightsError(f"timm model {timm_name!r} cannot return feature maps ({first})") from None
        if state_dict is not None:
            from visiontl.backbones.weights import load_strict

            load_strict(body, state_dict, source=f"timm {timm_name}")
        cfg = body.pretrained_cfg
        probe = max(128, int(cfg.get("input_size", (3, 128, 128))[-1]))
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        return TimmBackbone(name, body, mean, std, probe)

    return BackboneSpec(name=name, source="timm", build=build, weights=_weights_file(timm_name), timm_name=timm_name)


# Xception is timm's port of the original Keras/Cadene weights.
register_backbone(timm_spec("legacy_xception", "xception"))
