"""One entry point for every network: `build_model` from names and `model.*` options, `build_network` from a
`ModelConfig`. Each arch's builder takes the options as keyword arguments named as the config's keys, so which
keys shape an arch is read from its builder's signature (no second list to keep in step)."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from torch import nn

from visiontl.backbones import Backbone, create_backbone
from visiontl.config import TASK_ARCHS, Config, ModelConfig, describe_validation_error
from visiontl.errors import ConfigError
from visiontl.models.classifier import build_classifier
from visiontl.models.detection import build_faster_rcnn, build_ssd
from visiontl.models.segmentation import SegmentationModel
from visiontl.text import printable

log = logging.getLogger("visiontl")

ARCH_TASK = {arch: task for task, archs in TASK_ARCHS.items() for arch in archs}


def _builder(arch: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    """The builder of `arch` and the keyword arguments the arch itself fixes."""
    if arch == "classifier":
        return build_classifier, {}
    if arch in ("faster_rcnn", "mask_rcnn"):
        return build_faster_rcnn, {"masks": arch == "mask_rcnn"}
    if arch in ("ssd", "ssdlite"):
        return build_ssd, {"lite": arch == "ssdlite"}
    return SegmentationModel, {"arch": arch}


def arch_options(arch: str) -> list[str]:
    """The `model.*` keys that shape `arch`'s network: its builder's keyword arguments."""
    builder, fixed = _builder(arch)
    return [p.name for p in inspect.signature(builder).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in fixed and p.name in ModelConfig.model_fields]


def build_network(model: ModelConfig, backbone: Backbone, num_classes: int) -> nn.Module:
    """The network of `model.arch` (set: a validated `Config` fills it in) around `backbone`, shaped by `model`'s
    options. num_classes as in `build_model`."""
    builder, fixed = _builder(model.arch)
    options = {key: getattr(model, key) for key in arch_options(model.arch)}
    return builder(backbone, num_classes, **fixed, **options)


def build_model(arch: str, *, backbone: str, num_classes: int, weights: str | os.PathLike[str] = "imagenet",
                **model_options: Any) -> nn.Module:
    """Build a network of any task, as a config with these `model.*` keys would, ready to train.

    Args:
        arch: the network around the backbone: 'classifier' (classification); 'faster_rcnn', 'ssd', 'ssdlite'
            (detection); 'mask_rcnn' (instance segmentation); 'unet', 'fpn', 'deeplabv3plus' (segmentation).
        backbone: a name from `visiontl backbones` (e.g. 'resnet50', 'mobilenet_v3_small'), or 'timm:<model>'
            for any timm model.
        num_classes: the classifier's logits; a detector's object classes (background is added inside); a
            segmenter's output maps (count background if it is a class).
        weights: the backbone's weights: 'imagenet' (its source's own, from the offline cache, fetched once if
            absent), 'none' (random), or a path to a state dict, a .safetensors file or a visiontl checkpoint
            (its backbone).
        **model_options: any other `model.*` key of the config that shapes `arch` (docs/config.md lists them with
            their defaults, which apply here too): classifier: head, mlp_hidden, dropout; faster_rcnn and
            mask_rcnn: neck, feature_levels, fpn_channels, anchor_sizes, aspect_ratios, min_size, max_size,
            score_threshold, nms_threshold, detections_per_image; ssd and ssdlite: ssd_size, ssd_scale_range,
            score_threshold, nms_threshold, detections_per_image; unet, fpn, deeplabv3plus: decoder_channels.

    Returns:
        a plain `nn.Module` in train mode, its backbone at `model.backbone`.

    Raises:
        ConfigError: an unknown arch or key, a value the config refuses, or a key that does not shape `arch`,
            in one line, as `visiontl train` words it.
        WeightsError: ImageNet weights neither cached nor downloadable, or a weights file that does not fit.

    >>> import torch
    >>> model = build_model("classifier", backbone="resnet18", num_classes=3, weights="none", head="mlp")
    >>> model(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 3])
    """
    task = ARCH_TASK.get(arch) if isinstance(arch, str) else None
    if task is None:
        raise ConfigError(f"build_model: unknown arch '{printable(str(arch), 80)}'; choose one of "
                          f"{', '.join(ARCH_TASK)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"build_model: num_classes must be a positive integer, got {printable(repr(num_classes), 80)}")
    weights = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    raw = {"arch": arch, "backbone": backbone, "weights": weights, **model_options}
    try:
        model_config = Config.model_validate({"task": task, "model": raw}).model
    except ValidationError as exc:
        raise ConfigError(f"build_model: {describe_validation_error(exc)}") from None
    options = arch_options(arch)
    for key in model_options:
        if key not in options:
            raise ConfigError(f"build_model: model.{key} does not shape arch {arch!r}; its options: "
                              f"{', '.join(options)}")
    net_backbone = create_backbone(model_config.backbone, model_config.weights, log=log.info)
    try:
        model = build_network(model_config, net_backbone, num_classes)
    except ValueError as exc:  # an option that does not fit this backbone (a stride, a count of feature maps)
        raise ConfigError(f"build_model: {exc}") from None
    return model.train()
