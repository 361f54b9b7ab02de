"""Fine-tuning policies: frozen means bit-identical, partial freezes the first stages, staged phases switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visiontl.backbones import create_backbone
from visiontl.config import Config
from visiontl.errors import ConfigError
from visiontl.finetune import apply_phase, group_lrs, param_groups, phase_at, plan_phases, set_train_mode
from visiontl.models import Classifier


def config(**finetune) -> Config:
    return Config.model_validate({"model": {"backbone": "resnet18", "weights": "imagenet"}, "finetune": finetune,
                                  "train": {"lr": 0.01}})


def train_steps(cfg: Config, steps: int = 3) -> tuple[dict, dict, Classifier]:
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", "none")
    model = Classifier(backbone, 3)
    phase = plan_phases(cfg, backbone.num_stages)[0]
    apply_phase(model, backbone, phase, cfg.finetune.bn)
    groups = param_groups(model, backbone, weight_decay=0.1)
    opt = torch.optim.AdamW(groups, lr=cfg.train.lr)
    for g, lr in zip(opt.param_groups, group_lrs(phase, opt.param_groups).values()):
        g["lr"] = lr
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(steps):
        set_train_mode(model, backbone, phase, cfg.finetune.bn)
        loss = F.cross_entropy(model(torch.randn(4, 3, 48, 48) * 3 + 1), torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, model.state_dict(), model


def changed(before: dict, after: dict, prefix: str) -> set[bool]:
    return {not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix) and after[k].is_floating_point()}


def test_feature_extraction_keeps_backbone_bit_identical() -> None:
    before, after, model = train_steps(config(strategy="feature_extraction"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))  # BN stats included
    assert changed(before, after, "head.") == {True}
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_partial_freezes_the_first_stages_only() -> None:
    before, after, _ = train_steps(config(strategy="partial", freeze_stages=3))
    assert changed(before, after, "backbone.body.conv1.") == {False}
    assert changed(before, after, "backbone.body.bn1.") == {False}  # running stats of a frozen stage stay
    assert changed(before, after, "backbone.body.layer2.") == {False}
    assert changed(before, after, "backbone.body.layer3.") == {True}
    assert changed(before, after, "backbone.body.layer4.") == {True}


def test_bn_freeze_keeps_every_norm_layer() -> None:
    before, after, _ = train_steps(config(strategy="full", bn="freeze"))
    bn_keys = [k for k in before if ".bn" in k or ".downsample.1." in k]
    assert bn_keys and all(torch.equal(before[k], after[k]) for k in bn_keys)
    assert changed(before, after, "backbone.body.layer4.0.conv1.") == {True}


def test_staged_phases_and_discriminative_lrs() -> None:
    cfg = config(strategy="staged", lr_mult=0.5,
                 stages=[{"epochs": 1, "unfreeze": 0}, {"epochs": 2, "unfreeze": 2, "lr": 0.001},
                         {"epochs": 1, "unfreeze": "all", "lr_mult": [0.1, 0.2, 0.3, 0.4, 0.5]}])
    assert cfg.train.epochs == 4
    backbone = create_backbone("resnet18", "none")
    model = Classifier(backbone, 3)
    phases = plan_phases(cfg, backbone.num_stages)
    assert [phase_at(phases, e).index for e in range(4)] == [0, 1, 1, 2]
    groups = param_groups(model, backbone, 0.0)
    assert [g["name"] for g in groups] == [f"backbone.stage{i}" for i in range(1, 6)] + ["head"]
    counts = [apply_phase(model, backbone, p, "train") for p in phases]
    head = sum(p.numel() for p in model.head.parameters())
    assert counts[0] == head and head < counts[1] < counts[2] == sum(p.numel() for p in model.parameters())
    lrs = group_lrs(phases[1], groups)
    assert lrs["head"] == pytest.approx(0.001)
    assert lrs["backbone.stage5"] == pytest.approx(0.001 * 0.5)
    assert lrs["backbone.stage4"] == pytest.approx(0.001 * 0.25)
    assert lrs["backbone.stage3"] == 0.0  # frozen in this phase
    assert group_lrs(phases[2], groups)["backbone.stage1"] == pytest.approx(0.01 * 0.1)


def test_policy_errors_state_the_range() -> None:
    with pytest.raises(ConfigError, match=r"range \[1, 5\] for resnet18, got 7"):
        plan_phases(config(strategy="partial", freeze_stages=7), 5)
    with pytest.raises(ConfigError, match="needs 5 multipliers, got 2"):
        plan_phases(config(strategy="full", lr_mult=[0.1, 0.2]), 5)
