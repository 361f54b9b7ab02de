"""Fine-tuning policies: frozen means bit-identical, partial freezes the first stages, staged phases switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visiontl.backbones import create_backbone
from visiontl.config import Config
from visiontl.errors import ConfigError
from visiontl.engine.schedule import lr_factor
from visiontl.finetune import (apply_phase, describe_phases, group_lrs, param_groups, phase_at, phase_record, plan_phases,
                               scaled_steps, set_train_mode)
from visiontl.models import Classifier


def config(**finetune) -> Config:
    return Config.model_validate({"model": {"backbone": "resnet18", "weights": "imagenet"}, "finetune": finetune,
                                  "train": {"lr": 0.01}})


def train_steps(cfg: Config, steps: int = 3) -> tuple[dict, dict, Classifier]:
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", "none")
    model = Classifier(backbone, 3)
    phase = plan_phases(cfg, backbone.num_stages, steps_per_epoch=1)[0]
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
    phases = plan_phases(cfg, backbone.num_stages, steps_per_epoch=10)
    assert [phase_at(phases, step).index for step in (0, 9, 10, 29, 30, 39)] == [0, 0, 1, 1, 2, 2]
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
        plan_phases(config(strategy="partial", freeze_stages=7), 5, 1)
    with pytest.raises(ConfigError, match="needs 5 multipliers, got 2"):
        plan_phases(config(strategy="full", lr_mult=[0.1, 0.2]), 5, 1)


def staged(max_steps: int | None = None, **train) -> Config:
    return Config.model_validate({
        "model": {"backbone": "resnet18"},
        "finetune": {"strategy": "staged", "stages": [{"epochs": 2, "unfreeze": 0}, {"epochs": 18, "unfreeze": "all"}]},
        "train": {"lr": 0.01, "max_steps": max_steps, **train}})


def test_phases_scale_to_a_budget_shorter_than_they_are() -> None:
    # BCCD's recipe on a 202-image set at batch 2: 101 steps an epoch, 2 + 18 epochs written, 40 steps given
    phases = plan_phases(staged(max_steps=40), 5, steps_per_epoch=101)
    assert [(p.start_step, p.steps, p.trainable_stages) for p in phases] == [(0, 4, 0), (4, 36, 5)]
    full = plan_phases(staged(), 5, steps_per_epoch=101)  # no budget cut: the epochs as written
    assert [(p.start_step, p.steps) for p in full] == [(0, 202), (202, 1818)]
    # train.epochs below the phases' sum scales them too (it used to be refused)
    assert [p.steps for p in plan_phases(staged(epochs=5), 5, steps_per_epoch=10)] == [5, 45]
    # every phase keeps at least one step, the total stays the budget
    assert [p.steps for p in plan_phases(staged(max_steps=3), 5, steps_per_epoch=101)] == [1, 2]
    with pytest.raises(ConfigError, match="1 step.* cannot run the 2 phases"):
        plan_phases(staged(max_steps=1), 5, steps_per_epoch=101)


@pytest.mark.parametrize("epochs,budget", [([1, 1, 1], 4), ([1, 99], 2), ([5, 3, 2], 7), ([2, 18], 40), ([1, 1, 30], 3)])
def test_scaled_steps_share_the_budget(epochs: list[int], budget: int) -> None:
    steps = scaled_steps(epochs, budget)
    assert sum(steps) == budget and min(steps) >= 1
    exact = [budget * e / sum(epochs) for e in epochs]
    assert all(abs(s - x) < 1 or s == 1 for s, x in zip(steps, exact))


def test_warmup_is_capped_at_a_share_of_each_phase() -> None:
    phases = plan_phases(staged(max_steps=100, warmup_steps=50), 5, steps_per_epoch=101)
    assert [(p.steps, p.warmup_steps) for p in phases] == [(10, 2), (90, 18)]  # 0.2 of each phase
    lines = describe_phases(phases, 5, 101, staged(max_steps=100, warmup_steps=50).train)
    assert lines[0] == ("schedule: phase 1, steps 1-10 (10, scaled from 2 epoch(s) = 202 steps): head only, LR 0.01; "
                        "warm-up 2 steps (train.warmup_steps 50, capped at 0.2 of the phase)")
    assert lines[1].startswith("schedule: phase 2, steps 11-100 (90, scaled from 18 epoch(s) = 1818 steps): 5 of 5 backbone "
                               "stages + head, LR 0.01; warm-up 18 steps")
    cfg = staged(max_steps=100, warmup_steps=50)
    # warm-up ramps over the capped steps, then the cosine runs over the rest of the phase
    factors = [lr_factor(cfg.train, phases[1], step, 101) for step in range(10, 100)]
    assert factors[0] == pytest.approx(1 / 19) and factors[17] == pytest.approx(18 / 19)
    assert factors[18] == pytest.approx(1.0) and factors[-1] < 0.01
    assert lr_factor(cfg.train, phases[0], 9, 101) < 0.05  # phase 1's cosine ends inside the 10 steps


def test_phase_record_keeps_the_phases_that_ran() -> None:
    phases = plan_phases(staged(max_steps=40), 5, steps_per_epoch=101)
    assert phase_record(phases, 5, steps_taken=3) == [
        {"phase": 1, "first_step": 1, "last_step": 3, "planned_steps": 4, "written_epochs": 2, "trainable_stages": 0,
         "backbone_stages": 5, "lr": 0.01, "warmup_steps": 0}]
    assert [r["last_step"] for r in phase_record(phases, 5, steps_taken=40)] == [4, 40]
