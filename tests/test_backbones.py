"""The backbone contract, checked for every registered backbone and a timm one, with random weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visiontl.backbones import create_backbone, list_backbones
from visiontl.backbones.weights import load_strict
from visiontl.errors import WeightsError
from visiontl.models import Classifier

TINY = ["timm:test_resnet", "timm:test_efficientnet"]
# the full-size registry grid is `slow` (`pytest -m "not slow"` skips it; `make test` runs it)
ALL = [*TINY, *(pytest.param(name, marks=pytest.mark.slow) for name in list_backbones())]
# Odd sizes; Inception v3's unpadded convolutions need at least 75 px.
INPUT = {"inception_v3": (99, 87)}


def test_registry_lists_the_seed_backbones() -> None:
    expected = {"vgg16", "vgg19", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101",
                "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
                "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "convnext_tiny", "xception"}
    assert expected <= set(list_backbones())


@pytest.mark.parametrize("name", ALL)
def test_contract_and_one_training_step(name: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name, weights="none")
    h, w = INPUT.get(name, (45, 67))
    feats = backbone(torch.randn(2, 3, h, w))

    # Feature maps: ordered, with the channels and strides the backbone claims.
    assert list(feats) == [f.name for f in backbone.feature_info]
    strides = [f.stride for f in backbone.feature_info]
    assert strides == sorted(strides) and strides[-1] == 32
    for info, fmap in zip(backbone.feature_info, feats.values()):
        assert fmap.shape[:2] == (2, info.channels)
        assert abs(fmap.shape[-1] - w / info.stride) <= 3 + (math.ceil(12 / info.stride) if name == "inception_v3" else 0)

    # Stages partition the parameters: each parameter in exactly one stage, one stage per feature map.
    names = [n for n, _ in backbone.named_parameters()]
    staged = [n for s in backbone.stages for n in s.param_names]
    assert sorted(staged) == sorted(names)
    assert len(backbone.stages) == len(backbone.feature_info)

    # One classification step from random weights moves the weights and gives a finite loss.
    model = Classifier(backbone, num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.head[-1].weight.detach().clone()
    loss = F.cross_entropy(model(torch.randn(2, 3, h, w)), torch.tensor([0, 2]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.head[-1].weight)


def test_stage_membership_follows_the_data_flow() -> None:
    bb = create_backbone("resnet18", weights="none")
    assert bb.stages[0].param_names == ("body.conv1.weight", "body.bn1.weight", "body.bn1.bias")
    assert all(n.startswith("body.layer4.") for n in bb.stages[-1].param_names)
    assert "body.bn1" in bb.stages[0].module_names


def test_strict_loading_reports_missing_unexpected_and_shapes() -> None:
    bb = create_backbone("resnet18", weights="none")
    state = {k: v.clone() for k, v in bb.body.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)  # the ImageNet classifier: dropped quietly
    assert load_strict(bb.body, state, "test") == ["fc.weight"]

    broken = dict(state)
    del broken["layer1.0.conv1.weight"]
    broken["layer1.0.conv3.weight"] = torch.zeros(1)
    broken["layer2.0.conv1.weight"] = torch.zeros(3, 3)
    with pytest.raises(WeightsError) as info:
        load_strict(bb.body, broken, "resnet50-file.pth")
    message = str(info.value)
    assert "1 missing (layer1.0.conv1.weight)" in message
    assert "1 unexpected (layer1.0.conv3.weight)" in message
    assert "1 wrong shape (layer2.0.conv1.weight (3, 3) vs (128, 64, 3, 3))" in message
    assert "\n" not in message
