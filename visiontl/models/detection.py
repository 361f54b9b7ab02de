"""Detectors on any registry backbone: torchvision's Faster R-CNN and SSD / SSDlite, with our glue.

torchvision supplies the detectors (anchors, heads, losses, box coding, NMS, the resize-and-normalise
transform); this module only connects a `Backbone` to them through `DetectionFeatures`, which reads
channels and strides from the backbone's `feature_info` (no per-backbone tables):

- faster_rcnn + fpn: a feature pyramid over the deepest `feature_levels` stages, plus a max-pooled level;
- faster_rcnn + none: the deepest feature map alone;
- ssd / ssdlite: the two deepest stages plus four extra stride-2 blocks (six maps, as SSD300 / SSDlite320);
- mask_rcnn: faster_rcnn plus torchvision's mask head (instance segmentation).

Model label 0 is background; label k is the dataset category `LabelMap.category(k)`.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import Conv2dNormActivation

from visiontl.backbones import Backbone
from visiontl.models.defaults import model_default

# Where the backbone's own body sits in a detector's state dict (model.backbone = DetectionFeatures).
BACKBONE_PREFIX = "backbone.body.body."
SSD_EXTRA_CHANNELS = (512, 256, 256, 128)


class DetectionFeatures(nn.Module):
    """Backbone (+ neck) -> OrderedDict of feature maps for torchvision's detection heads."""

    def __init__(self, backbone: Backbone, levels: int, neck: str, fpn_channels: int = 256, extras: nn.ModuleList | None = None):
        super().__init__()
        if not 1 <= levels <= backbone.num_stages:
            raise ValueError(f"feature levels should be in the range [1, {backbone.num_stages}], got {levels}")
        self.body = backbone
        self.taps = [f.name for f in backbone.feature_info[-levels:]]
        in_channels = [f.channels for f in backbone.feature_info[-levels:]]
        self.strides = [f.stride for f in backbone.feature_info[-levels:]]
        self.fpn = None
        if neck == "fpn":
            self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
            self.out_channels = fpn_channels
            self.strides = [*self.strides, self.strides[-1] * 2]
        else:
            self.out_channels = in_channels[-1]
        self.extras = extras
        self.channels = in_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        maps = OrderedDict((str(i), feats[name]) for i, name in enumerate(self.taps))
        if self.fpn is not None:
            return self.fpn(maps)
        if self.extras is not None:
            x = maps[str(len(maps) - 1)]
            for block in self.extras:
                x = block(x)
                maps[str(len(maps))] = x
            return maps
        return maps


def build_faster_rcnn(
    backbone: Backbone, num_classes: int, *, neck: str = model_default("neck"),
    feature_levels: int = model_default("feature_levels"), fpn_channels: int = model_default("fpn_channels"),
    anchor_sizes: list[list[int]] | None = model_default("anchor_sizes"),
    aspect_ratios: list[float] = model_default("aspect_ratios"), min_size: int = model_default("min_size"),
    max_size: int = model_default("max_size"), score_threshold: float = model_default("score_threshold"),
    nms_threshold: float = model_default("nms_threshold"),
    detections_per_image: int = model_default("detections_per_image"), masks: bool = False,
) -> FasterRCNN:
    """num_classes counts the dataset's classes; background is added here. The options are `model.*` keys of
    the config (docs/config.md), with its defaults. masks=True builds Mask R-CNN (the same detector plus
    torchvision's mask head on the same feature maps)."""
    levels = 1 if neck == "none" else feature_levels
    features = DetectionFeatures(backbone, levels, neck, fpn_channels)
    names = [str(i) for i in range(levels)]
    if neck == "fpn":
        default_sizes = [[4 * s] for s in features.strides]  # the pooled level too
    else:
        default_sizes = [[32, 64, 128, 256, 512]]
    sizes = anchor_sizes or default_sizes
    if len(sizes) != len(default_sizes):
        raise ValueError(f"model.anchor_sizes: the detector has {len(default_sizes)} feature maps, so it needs "
                         f"{len(default_sizes)} lists of sizes, got {len(sizes)}")
    anchors = AnchorGenerator(tuple(tuple(s) for s in sizes), tuple(tuple(aspect_ratios) for _ in sizes))
    pooler = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    options = dict(
        num_classes=num_classes + 1, min_size=min_size, max_size=max_size, image_mean=list(backbone.mean),
        image_std=list(backbone.std), rpn_anchor_generator=anchors, box_roi_pool=pooler,
        box_score_thresh=score_threshold, box_nms_thresh=nms_threshold, box_detections_per_img=detections_per_image,
    )
    if masks:
        mask_pooler = MultiScaleRoIAlign(featmap_names=names, output_size=14, sampling_ratio=2)
        return MaskRCNN(features, mask_roi_pool=mask_pooler, **options)
    return FasterRCNN(features, **options)


def _ssd_extras(in_channels: int, lite: bool) -> nn.ModuleList:
    """Four stride-2 blocks after the deepest map: 1x1 reduce, then a 3x3 stride-2 conv (depthwise +
    pointwise for SSDlite)."""
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    blocks = []
    for out in SSD_EXTRA_CHANNELS:
        mid = out // 2
        if lite:
            block = nn.Sequential(
                Conv2dNormActivation(in_channels, mid, kernel_size=1, norm_layer=norm, activation_layer=nn.ReLU6),
                Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm, activation_layer=nn.ReLU6),
                Conv2dNormActivation(mid, out, kernel_size=1, norm_layer=norm, activation_layer=nn.ReLU6),
            )
        else:
            block = nn.Sequential(
                Conv2dNormActivation(in_channels, mid, kernel_size=1, norm_layer=norm),
                Conv2dNormActivation(mid, out, kernel_size=3, stride=2, norm_layer=norm),
            )
        blocks.append(block)
        in_channels = out
    return nn.ModuleList(blocks)


def build_ssd(
    backbone: Backbone, num_classes: int, *, lite: bool = False, ssd_size: int = model_default("ssd_size"),
    ssd_scale_range: tuple[float, float] = model_default("ssd_scale_range"),
    score_threshold: float = model_default("score_threshold"), nms_threshold: float = model_default("nms_threshold"),
    detections_per_image: int = model_default("detections_per_image"),
) -> SSD:
    """SSD, or SSDlite with lite=True; num_classes as `build_faster_rcnn`. The options are `model.*` keys of the
    config (docs/config.md), with its defaults."""
    levels = min(2, backbone.num_stages)
    extras = _ssd_extras(backbone.feature_info[-1].channels, lite)
    features = DetectionFeatures(backbone, levels, "none", extras=extras)
    channels = [*features.channels, *SSD_EXTRA_CHANNELS]
    anchors = DefaultBoxGenerator([[2, 3] for _ in channels], min_ratio=ssd_scale_range[0],
                                   max_ratio=ssd_scale_range[1])
    num_anchors = anchors.num_anchors_per_location()
    if lite:
        head = SSDLiteHead(channels, num_anchors, num_classes + 1, partial(nn.BatchNorm2d, eps=0.001, momentum=0.03))
    else:
        head = SSDHead(channels, num_anchors, num_classes + 1)
    return SSD(
        features, anchors, (ssd_size, ssd_size), num_classes + 1, image_mean=list(backbone.mean),
        image_std=list(backbone.std), head=head, score_thresh=score_threshold, nms_thresh=nms_threshold,
        detections_per_img=detections_per_image, topk_candidates=max(400, detections_per_image),
    )
