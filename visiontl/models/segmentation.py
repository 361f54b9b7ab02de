"""Semantic segmenters on any registry backbone: segmentation-models-pytorch's U-Net, FPN and DeepLabV3+
decoders fed by the backbone contract.

smp's decoders take the encoder's feature list `[input, stride 2, 4, 8, 16, 32]`. `SegmentationModel`
builds that list from `feature_info`: a stride the backbone has no map for (ConvNeXt starts at 4) gets a
zero-channel placeholder of the right size, and maps whose size is a few pixels off the nominal
H/stride (Inception v3's unpadded convolutions) are resized to it for the decoders that add maps
elementwise (FPN, DeepLabV3+); U-Net upsamples to each skip's own size and needs no resize.

Any input size works: the input is padded (bottom and right, zeros after normalisation) to a multiple of
32 and the logits are cropped back, so masks have exactly the input's size with no resize artefacts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from visiontl.backbones import Backbone
from visiontl.config import DEFAULT_ARCH
from visiontl.models.defaults import model_default

STRIDES = (2, 4, 8, 16, 32)
# Where the backbone's own body sits in a segmenter's state dict.
BACKBONE_PREFIX = "backbone.body."


class SegmentationModel(nn.Module):
    """Args:
        backbone: any `Backbone` whose deepest map has stride 32.
        num_classes: output channels (one logit map per class).
        arch: 'unet', 'fpn' or 'deeplabv3plus'.
        decoder_channels: U-Net decoder block widths, deep to shallow (five of them).

    >>> from visiontl.backbones import create_backbone
    >>> model = SegmentationModel(create_backbone("resnet18", "none"), num_classes=4, arch="unet")
    >>> model(torch.zeros(1, 3, 153, 201)).shape
    torch.Size([1, 4, 153, 201])
    """

    def __init__(self, backbone: Backbone, num_classes: int, *, arch: str = DEFAULT_ARCH["segmentation"],
                 decoder_channels: tuple[int, ...] = model_default("decoder_channels")):
        super().__init__()
        by_stride = {f.stride: f for f in backbone.feature_info}
        if by_stride.get(32) is None:
            raise ValueError(f"backbone {backbone.name} has no stride-32 feature map; strides {sorted(by_stride)}")
        self.backbone = backbone
        self.arch = arch
        self.taps = [by_stride[s].name if s in by_stride else None for s in STRIDES]
        channels = [3] + [by_stride[s].channels if s in by_stride else 0 for s in STRIDES]
        if arch == "unet":
            self.decoder = UnetDecoder(channels, list(decoder_channels), n_blocks=5)
            self.head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)
        elif arch == "fpn":
            self.decoder = FPNDecoder(channels, encoder_depth=5, pyramid_channels=256, segmentation_channels=128,
                                      dropout=0.2, merge_policy="add")
            self.head = SegmentationHead(128, num_classes, kernel_size=1, upsampling=4)
        elif arch == "deeplabv3plus":
            self.decoder = DeepLabV3PlusDecoder(channels, encoder_depth=5, out_channels=256, atrous_rates=(12, 24, 36),
                                                output_stride=16, aspp_separable=True, aspp_dropout=0.5)
            self.head = SegmentationHead(256, num_classes, kernel_size=1, upsampling=4)
        else:
            raise ValueError(f"unknown segmentation arch {arch!r}; choose unet, fpn or deeplabv3plus")

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.backbone(x)
        h, w = x.shape[-2:]
        feats = [x]
        for stride, name in zip(STRIDES, self.taps):
            size = (math.ceil(h / stride), math.ceil(w / stride))
            if name is None:
                feats.append(x.new_zeros(x.shape[0], 0, *size))
                continue
            f = maps[name]
            if self.arch != "unet" and tuple(f.shape[-2:]) != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            feats.append(f)
        if self.arch == "deeplabv3plus":
            # DeepLabV3+ expects its ASPP input at stride 16 (a dilated encoder); ours ends at 32.
            feats[-1] = F.interpolate(feats[-1], size=feats[-2].shape[-2:], mode="bilinear", align_corners=False)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        logits = self.head(self.decoder(self._features(x)))
        return logits[..., :h, :w]
