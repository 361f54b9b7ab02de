"""The backbone contract: what every head (classifier, detector, segmenter) may rely on.

A `Backbone` is an `nn.Module` whose forward returns an ordered dict of feature maps, shallow to deep, and
which describes itself:

- `feature_info`: one `FeatureInfo(name, channels, stride)` per returned map, strides increasing;
- `stages`: the units that "freeze the first N" and staged unfreezing count in, one per feature map:
  stage k holds every parameter that feature map k depends on and no shallower map does;
- `mean` / `std`: the input normalisation its weights expect.

Nothing downstream asks which library a backbone came from. The description is measured, not tabulated:
one probe forward (and one backward per map) at build time finds channels, strides and which parameter
feeds which map, so a new family needs no channel table and cannot get it wrong.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    channels: int
    stride: int


@dataclass(frozen=True)
class Stage:
    name: str
    param_names: tuple[str, ...]  # relative to the backbone module
    module_names: tuple[str, ...]  # modules whose own parameters all lie in this stage (norm layers included)


class Backbone(nn.Module):
    """Base class: subclasses set `self.body` and implement `forward_features`, then call `describe()`."""

    def __init__(self, name: str, mean: tuple[float, ...], std: tuple[float, ...], probe_size: int = 128):
        super().__init__()
        self.name = name
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.probe_size = probe_size
        self.feature_info: list[FeatureInfo] = []
        self.stages: list[Stage] = []

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(zip((f.name for f in self.feature_info), self.forward_features(x)))

    @property
    def out_channels(self) -> int:
        """Channels of the deepest feature map."""
        return self.feature_info[-1].channels

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_parameters(self, index: int) -> list[nn.Parameter]:
        params = dict(self.named_parameters())
        return [params[n] for n in self.stages[index].param_names]

    def stage_modules(self, index: int) -> list[nn.Module]:
        return [self.get_submodule(n) for n in self.stages[index].module_names]

    @torch.no_grad()
    def _probe_shapes(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)

    def describe(self) -> None:
        """Measure feature channels, strides and stage membership with one probe input."""
        was_training = self.training
        self.eval()
        size = self.probe_size
        x = torch.zeros(1, 3, size, size)
        with torch.enable_grad():
            feats = self.forward_features(x)
            names = [n for n, p in self.named_parameters()]
            params = [p for n, p in self.named_parameters()]
            owner: dict[str, int] = {}
            for k, f in enumerate(feats):
                needs = [i for i, n in enumerate(names) if n not in owner and params[i].requires_grad]
                if not needs:
                    continue
                grads = torch.autograd.grad(
                    f.sum(), [params[i] for i in needs], retain_graph=k < len(feats) - 1, allow_unused=True
                )
                for i, g in zip(needs, grads):
                    if g is not None:
                        owner[names[i]] = k
        self.train(was_training)
        # Parameters no feature map uses (none in the built-in families) belong with the deepest stage.
        last = len(feats) - 1
        feature_info = []
        for k, f in enumerate(feats):
            stride = 2 ** round(math.log2(size / f.shape[-1]))
            feature_info.append(FeatureInfo(f"stage{k + 1}", int(f.shape[1]), int(stride)))
        strides = [f.stride for f in feature_info]
        assert strides == sorted(strides), f"{self.name}: feature strides must not decrease, got {strides}"
        self.feature_info = feature_info
        self.stages = _group_stages(self, {n: owner.get(n, last) for n in names}, len(feats))


def _group_stages(module: nn.Module, owner: dict[str, int], count: int) -> list[Stage]:
    params: list[list[str]] = [[] for _ in range(count)]
    for name, _ in module.named_parameters():
        params[owner[name]].append(name)
    modules: list[list[str]] = [[] for _ in range(count)]
    previous = 0
    for mod_name, mod in module.named_modules():
        own = [f"{mod_name}.{p}" if mod_name else p for p, _ in mod.named_parameters(recurse=False)]
        if own:
            stages = {owner[p] for p in own}
            if len(stages) == 1:
                previous = stages.pop()
                modules[previous].append(mod_name)
        elif isinstance(mod, NORM_TYPES):
            # A norm layer without affine parameters still keeps statistics: it goes with its predecessor.
            modules[previous].append(mod_name)
    return [Stage(f"stage{k + 1}", tuple(params[k]), tuple(modules[k])) for k in range(count)]


class SequentialBackbone(Backbone):
    """A classification network run child by child; a feature map is taken wherever the stride is about to
    change (and at the end). Suits every torchvision family: ResNet, VGG, Inception v3, MobileNet,
    EfficientNet, ConvNeXt. `body` is the torchvision model itself with its classifier removed, so its
    state dict keys are the torchvision file's keys."""

    def __init__(
        self,
        name: str,
        body: nn.Module,
        sequence: list[str],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        probe_size: int = 128,
    ):
        super().__init__(name, mean, std, probe_size)
        self.body = body
        self.sequence = list(sequence)
        self._taps = self._find_taps()

    def _find_taps(self) -> list[int]:
        """Indices in `sequence` after which a feature map is taken: the last child at each stride."""
        self._taps = list(range(len(self.sequence)))
        was_training = self.training
        self.eval()
        outs = self._probe_shapes(torch.zeros(1, 3, self.probe_size, self.probe_size))
        self.train(was_training)
        strides = [2 ** round(math.log2(self.probe_size / o.shape[-1])) for o in outs]
        return [i for i in range(len(strides)) if i == len(strides) - 1 or strides[i + 1] != strides[i]]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        taps = self._taps
        t = 0
        for i, path in enumerate(self.sequence):
            x = self.body.get_submodule(path)(x)
            if t < len(taps) and taps[t] == i:
                feats.append(x)
                t += 1
        return feats
