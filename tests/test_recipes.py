"""Recipes that build on recipes: `base:` in config files (issue 18), and the starting recipes per task."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run_main as _cli
from conftest import tiny_config
from visiontl import api as vtl
from visiontl.config import load_config, load_yaml, save_config
from visiontl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STARTING = {"classification": "classification", "detection": "detection", "segmentation": "segmentation",
            "instance_segmentation": "instance_segmentation"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_recipe_merges_onto_its_base_key_by_key_and_lists_replace(tmp_path: Path) -> None:
    write(tmp_path / "recipes" / "base.yaml", "task: classification\nmodel: {backbone: resnet18, dropout: 0.2}\n"
          "data: {classes: [a, b, c], image_size: 128}\ntrain: {epochs: 7, lr: 0.01, optimizer: sgd}\n")
    child = write(tmp_path / "mine" / "child.yaml", "base: ../recipes/base.yaml  # relative to this file\n"
                  "data: {classes: [x, y]}\ntrain: {lr: 0.002}\n")
    raw = load_yaml(child)
    assert raw == {"task": "classification", "model": {"backbone": "resnet18", "dropout": 0.2},
                   "data": {"classes": ["x", "y"], "image_size": 128},
                   "train": {"epochs": 7, "lr": 0.002, "optimizer": "sgd"}}
    cfg = load_config(child, ["train.epochs=2"])  # overrides apply on the merged whole
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.optimizer, cfg.model.dropout) == (2, 0.002, "sgd", 0.2)


def test_bases_chain_and_the_nearest_wins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "train: {epochs: 1, lr: 0.1, batch_size: 4}\n")
    write(tmp_path / "sub" / "b.yaml", "base: ../a.yaml\ntrain: {lr: 0.2, batch_size: 8}\n")
    c = write(tmp_path / "sub" / "c.yaml", "base: b.yaml\ntrain: {batch_size: 16}\n")
    assert load_yaml(c) == {"train": {"epochs": 1, "lr": 0.2, "batch_size": 16}}


def test_a_recipe_naming_its_own_strategy_drops_the_bases_strategy_keys(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "finetune: {strategy: partial, freeze_stages: 3, bn: freeze}\n")
    staged = write(tmp_path / "staged.yaml", "base: base.yaml\nfinetune:\n  strategy: staged\n  stages:\n"
                   "    - {epochs: 1, unfreeze: 0}\n    - {epochs: 2, unfreeze: all}\n")
    assert load_yaml(staged)["finetune"] == {"strategy": "staged", "bn": "freeze",
                                             "stages": [{"epochs": 1, "unfreeze": 0}, {"epochs": 2, "unfreeze": "all"}]}
    assert load_config(staged).train.epochs == 3
    full = write(tmp_path / "full.yaml", "base: staged.yaml\nfinetune: {strategy: full}\n")
    assert load_yaml(full)["finetune"] == {"strategy": "full", "bn": "freeze"}
    partial = write(tmp_path / "partial.yaml", "base: base.yaml\nfinetune: {freeze_stages: 1}\n")
    assert load_yaml(partial)["finetune"] == {"strategy": "partial", "freeze_stages": 1, "bn": "freeze"}


@pytest.mark.parametrize(("files", "expected"), [
    ({"a.yaml": "base: a.yaml\n"}, "{a}: base: a.yaml makes a cycle ({ra} -> {ra})"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "{b}: base: a.yaml makes a cycle ({ra} -> {rb} -> {ra})"),
    ({"a.yaml": "base: missing.yaml\n"}, "{a}: base: missing.yaml not found (looked for {missing})"),
    ({"a.yaml": "base: [b.yaml]\n"}, "{a}: base: must be the path of another config file (relative to this one), "
                                     "got ['b.yaml']"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "[1, 2]\n"}, "{b}: the top level must be a mapping of sections, got list"),
])
def test_cycles_missing_and_bad_bases_are_one_line_errors(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.yaml")
    names = {"a": tmp_path / "a.yaml", "b": tmp_path / "b.yaml", "missing": tmp_path / "missing.yaml",
             "ra": (tmp_path / "a.yaml").resolve(), "rb": (tmp_path / "b.yaml").resolve()}
    assert str(info.value) == expected.format(**names)
    assert "\n" not in str(info.value)


def test_config_show_prints_the_merged_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "base.yaml", "task: detection\nmodel: {backbone: mobilenet_v2, min_size: 320}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\nmodel: {max_size: 427}\n")
    code, out, _ = _cli(["config", "show", str(child), "train.lr=0.02"], capsys)
    assert code == 0
    shown = yaml.safe_load(out)
    assert "base" not in shown
    assert (shown["task"], shown["model"]["backbone"], shown["model"]["min_size"], shown["model"]["max_size"],
            shown["train"]["lr"], shown["model"]["arch"]) == ("detection", "mobilenet_v2", 320, 427, 0.02, "faster_rcnn")


def test_the_stored_run_config_holds_the_merged_result(tmp_path: Path) -> None:
    """What a run stores (config.yaml, through save_config) is the whole merged config: it reloads without the
    base file."""
    base = write(tmp_path / "base.yaml", yaml.safe_dump(tiny_config(tmp_path / "data", tmp_path / "run")))
    child = write(tmp_path / "child.yaml", f"base: {base.name}\ntrain: {{lr: 0.0123}}\n")
    cfg = load_config(child)
    save_config(cfg, tmp_path / "stored.yaml")
    base.unlink()
    again = load_config(tmp_path / "stored.yaml")
    assert again == cfg and again.train.lr == 0.0123


@pytest.mark.parametrize("task", sorted(STARTING))
def test_starting_recipes_are_one_per_task_on_mobilenet_v2(task: str) -> None:
    path = CONFIGS / "starting" / f"{STARTING[task]}.yaml"
    cfg = vtl.load_config(path)
    assert cfg.task == task and cfg.model.backbone == "mobilenet_v2" and cfg.model.weights == "imagenet"
    assert cfg.data.vflip is False and cfg.train.schedule == "cosine"
    assert cfg.train.warmup_steps <= 20  # a short budget has no room for a long warm-up
    assert cfg.finetune.strategy in ("partial", "full")  # no head-only phase that eats a short budget
    comments = [line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]
    assert any(word in c for c in comments for word in (" when ", " try "))  # says when to change what


def test_dataset_recipes_build_on_the_starting_recipes() -> None:
    bccd = CONFIGS / "detection" / "bccd_faster_rcnn_mobilenet_v2.yaml"
    assert yaml.safe_load(bccd.read_text())["base"] == "../starting/detection.yaml"
    cfg = load_config(bccd)
    assert cfg.data.vflip is True and cfg.data.format == "voc"  # BCCD's own: blood smears have no up or down
    assert cfg.train.optimizer == "sgd" and cfg.train.clip_grad == 10.0  # from the starting recipe
    for path in sorted(CONFIGS.rglob("*.yaml")):
        if "starting" not in path.parts:
            base = yaml.safe_load(path.read_text()).get("base")
            assert base is not None and "starting/" in base, path
