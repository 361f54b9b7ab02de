from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visiontl.config import Config, load_config
from visiontl.errors import ConfigError


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_and_typed_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"model": {"backbone": "resnet18"}}),
                      ["train.epochs=3", "model.backbone=resnet50", "train.lr=0.01", "data.classes=[a, b]"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.model.backbone == "resnet50"
    assert cfg.train.lr == pytest.approx(0.01)
    assert cfg.data.classes == ["a", "b"]
    assert cfg.train.monitor == "accuracy"  # the task's default, filled by the schema
    assert Config().finetune.strategy == "full"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epoch=3"], "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        (["trian.epochs=3"], "unknown key 'trian' (did you mean 'train'?)"),
        (["train.epochs=three"], "train.epochs: Input should be a valid integer"),
        (["train.epochs=0"], "train.epochs: Input should be greater than 0"),
        (["model.backbone=resnet5"], "unknown backbone 'resnet5' (did you mean 'resnet50'?)"),
        (["model.backbone=timm:resnet50x"], "unknown timm model 'resnet50x'"),
        (["finetune.strategy=frozen"], "finetune.strategy: Input should be 'feature_extraction', 'partial', 'full' or 'staged'"),
        (["finetune.strategy=feature_extraction", "model.weights=none"], "would train a head on frozen random features"),
        (["model.head=linear_svm"], "needs finetune.strategy 'feature_extraction'"),
        (["train.epochs"], "is not of the form key.path=value"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {}), overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_staged_epochs_come_from_the_phases(tmp_path: Path) -> None:
    stages = [{"epochs": 2, "unfreeze": 0}, {"epochs": 3, "unfreeze": 2, "lr": 1e-4}]
    cfg = load_config(write(tmp_path, {"finetune": {"strategy": "staged", "stages": stages}}))
    assert cfg.train.epochs == 5
    with pytest.raises(ConfigError, match="add up to 5 epochs"):
        load_config(write(tmp_path, {"finetune": {"strategy": "staged", "stages": stages}, "train": {"epochs": 4}}))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visiontl", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("raw", "overrides", "expected"),
    [
        ({}, ["train.epoch=3"], "unknown key 'train.epoch'"),
        ({"train": {"batch_size": "big"}}, [], "train.batch_size: Input should be a valid integer"),
        ({"model": {"backbone": "resnet"}}, [], "unknown backbone 'resnet'"),
        ({"data": {"root": "/nonexistent/dataset"}, "train": {"device": "cpu"}}, [], "data.root: '/nonexistent/dataset' does not exist"),
    ],
)
def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path, raw: dict, overrides: list[str], expected: str) -> None:
    raw = {**raw, "run": {"dir": str(tmp_path / "run")}}
    done = run_cli("train", str(write(tmp_path, raw)), *overrides)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("visiontl: error: ") and expected in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_missing_and_invalid_yaml(tmp_path: Path) -> None:
    done = run_cli("train", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "not found" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    done = run_cli("train", str(bad))
    assert done.returncode == 2 and "not valid YAML" in done.stderr and "Traceback" not in done.stderr


def test_docs_config_reference_is_current() -> None:
    from visiontl.config import config_reference

    docs = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert docs.read_text(encoding="utf-8") == config_reference(), "run: python tools/config_reference.py"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.run.dir.parts[0] == "runs"
