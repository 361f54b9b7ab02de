from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import cli_run as run_cli
from conftest import run_main as _cli
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
    # train.epochs given: the run has that budget and the phases scale to it (finetune.plan_phases)
    cfg = load_config(write(tmp_path, {"finetune": {"strategy": "staged", "stages": stages}, "train": {"epochs": 4}}))
    assert cfg.train.epochs == 4 and [p.epochs for p in cfg.finetune.stages] == [2, 3]


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


# --- what the loader and the schema refuse (issue 15) --------------------------------------------------------


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("task: classification\ntrain:\n  epochs: 3\ndata:\n  image_size: 64\ntrain:\n  lr: 0.01\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: refused: key 'train' appears twice in one mapping (lines 2 and 6); "
                               "YAML would keep only the last")
    path.write_text("train:\n  lr: 0.1\n  epochs: 3\n  'lr': 0.2\n")  # quoted or not, the same key
    with pytest.raises(ConfigError, match=r"key 'lr' appears twice in one mapping \(lines 2 and 4\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"override 'train=\{lr: 1, lr: 2\}': refused: key 'lr' appears twice"):
        load_config(None, ["train={lr: 1, lr: 2}"])
    # a merge key is meant to be overridden: not a duplicate
    path.write_text("train: {<<: {lr: 0.5, epochs: 2}, lr: 0.25}\n")
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.epochs) == (0.25, 2)


def _float_fields() -> list[tuple[str, str]]:
    """(dotted key, YAML value holding the placeholder X) of every float in the schema, lists and tuples too."""
    from typing import get_args

    from visiontl.config import PhaseConfig

    def holds_float(annotation: object) -> bool:
        return annotation is float or any(holds_float(a) for a in get_args(annotation))

    fields = []
    for section, model in [(name, f.annotation) for name, f in Config.model_fields.items() if name != "task"]:
        for name, field in model.model_fields.items():
            text = str(field.annotation)
            if name == "early_stopping":
                fields.append((f"{section}.{name}", "{min_delta: X}"))
            elif holds_float(field.annotation):
                value = "[X, X]" if text.startswith("tuple") else "[X]" if text.startswith("list") else "X"
                fields.append((f"{section}.{name}", value))
    for name, field in PhaseConfig.model_fields.items():
        if holds_float(field.annotation):
            fields.append((f"finetune.stages.{name}", "X"))
    return fields


FLOAT_FIELDS = _float_fields()
TEXT_OR_FLOAT = ("data.val",)  # a split's name, or a fraction of the train split


def test_the_float_fields_are_all_found() -> None:
    keys = {key for key, _ in FLOAT_FIELDS}
    assert {"train.lr", "finetune.lr_mult", "model.aspect_ratios", "model.ssd_scale_range", "model.class_weights",
            "data.cache_max_gb", "train.early_stopping", "finetune.stages.lr"} <= keys
    assert len(keys) >= 18


@pytest.mark.parametrize("bad", ["1e400", "-1e400", ".inf", "-.inf", ".nan", "inf", "nan", "1.0e+400"])
@pytest.mark.parametrize(("key", "template"), FLOAT_FIELDS, ids=[k for k, _ in FLOAT_FIELDS])
def test_every_float_field_refuses_inf_and_nan(key: str, template: str, bad: str) -> None:
    if key in TEXT_OR_FLOAT and bad in ("1e400", "-1e400", "inf", "nan"):  # YAML reads these as text: a name
        assert load_config(None, [f"{key}={bad}"]).data.val == bad
        return
    value = template.replace("X", bad)
    if key.startswith("finetune.stages."):
        overrides = ["finetune.strategy=staged", f"finetune.stages=[{{epochs: 1, {key.rsplit('.', 1)[1]}: {value}}}]"]
    else:
        overrides = [f"{key}={value}"]
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "finite number" in message and "\n" not in message
    assert message.startswith(f"config: {key.split('.')[0]}")


def test_data_pipeline_arguments_must_be_finite() -> None:
    with pytest.raises(ConfigError, match=r"^config: data\.pipeline: nan is not a finite number$"):
        load_config(None, ["task=detection", "data.pipeline=[{GaussNoise: {std_range: [0.1, .nan]}}]"])
    assert load_config(None, ["task=detection", "data.pipeline=[{HorizontalFlip: {p: 0.5}}]"]).data.pipeline


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.image_size=100000", "data.image_size: Input should be less than or equal to 16384 (got 100000)"),
        ("model.min_size=20000", "model.min_size: Input should be less than or equal to 16384"),
        ("model.ssd_size=65536", "model.ssd_size: Input should be less than or equal to 16384"),
        ("model.anchor_sizes=[[32, 100000]]", "model.anchor_sizes.0.1: Input should be less than or equal to 16384"),
        ("model.decoder_channels=[256, 128, 64, 32, 0]", "model.decoder_channels.4: Input should be greater than 0"),
        ("model.fpn_channels=1000000", "model.fpn_channels: Input should be less than or equal to 8192"),
        ("model.mlp_hidden=1000000000", "model.mlp_hidden: Input should be less than or equal to 65536"),
        ("data.palette=[[0, 0, 256]]", "data.palette.0.2: Input should be less than or equal to 255"),
        ("data.ignore_index=9223372036854775808", "data.ignore_index: Input should be less than 2147483648"),
        ("train.seed=9223372036854775808", "train.seed: Input should be less than or equal to 9223372036854775807"),
        ("train.seed=-1", "train.seed: Input should be greater than or equal to 0"),
        ("train.batch_size=10000000", "train.batch_size: Input should be less than or equal to 65536"),
        ("train.workers=100000", "train.workers: Input should be less than or equal to 1024"),
        ("train.epochs=10000000000", "train.epochs: Input should be less than or equal to 1000000"),
        ("train.max_steps=100000000000000000000", "train.max_steps: Input should be less than or equal to 1000000000"),
        ("train.warmup_steps=100000000000000000000", "train.warmup_steps: Input should be less than or equal to"),
        ("train.accumulate=1000000", "train.accumulate: Input should be less than or equal to 65536"),
        ("finetune.lr_mult=-0.5", "finetune.lr_mult: Input should be greater than or equal to 0"),
        ("model.aspect_ratios=[1.0, -2.0]", "model.aspect_ratios.1: Input should be greater than 0"),
        ("model.detections_per_image=10000000000000000000", "model.detections_per_image: Input should be less than"),
    ],
)
def test_sizes_counts_and_seeds_are_bounded(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == f"config: {expected}" or str(info.value).startswith(f"config: {expected}")


def test_the_bounds_themselves_are_accepted() -> None:
    cfg = load_config(None, ["data.image_size=16384", "train.seed=9223372036854775807", "train.workers=1024",
                             "data.ignore_index=-100", "train.max_steps=1000000000", "finetune.lr_mult=0"])
    assert (cfg.data.image_size, cfg.train.seed, cfg.train.workers) == (16384, 2**63 - 1, 1024)


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "expected"),
    [
        ("task: classification\n", ["data.image_size=100000"], "data.image_size: Input should be less than or equal to 16384"),
        ("task: classification\ntrain:\n  seed: 9223372036854775808\n", [], "train.seed: Input should be less than"),
        ("task: classification\n", ["train.seed=9223372036854775808"], "train.seed: Input should be less than"),
        ("task: classification\ntrain:\n  lr: 1e400\n", [], "train.lr: Input should be a finite number"),
        ("task: classification\n", ["finetune.lr_mult=.nan"], "finetune.lr_mult: Input should be a finite number"),
        ("task: classification\ndata:\n  pipeline: " + "[" * 5000 + "]" * 5000 + "\n", [],
         "cfg.yaml: refused: nested more than 100 levels deep (line 3)"),
        ("task: classification\ndata:\n  pipeline: " + "{a: " * 150 + "1" + "}" * 150 + "\n", [],
         "cfg.yaml: refused: nested more than 100 levels deep"),
        ("task: classification\n", ["data.pipeline=" + "[" * 5000 + "]" * 5000], "refused: nested more than 100 levels"),
        ("task: classification\ntrain:\n  epochs: " + "7" * 5000 + "\n", [],
         "cfg.yaml: refused: line 3: an integer of 5,000 characters (at most 4,300)"),
        ("task: classification\n", ["train.seed=" + "7" * 5000], "refused: line 1: an integer of 5,000 characters"),
        ("task: classification\ntrain:\n  epochs: 3\ntrain:\n  lr: 0.1\n", [],
         "cfg.yaml: refused: key 'train' appears twice in one mapping (lines 2 and 4)"),
    ],
    ids=["image_size", "seed_yaml", "seed_override", "inf_lr", "nan_lr_mult", "nested_5000", "nested_maps",
         "nested_override", "int_5000_digits_yaml", "int_5000_digits_override", "duplicate_section"],
)
def test_train_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, yaml_text: str,
                                   overrides: list[str], expected: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text + f"run:\n  dir: {tmp_path / 'run'}\n")
    code, out, err = _cli(["train", str(path), *overrides], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("visiontl: error: ") and expected in lines[0], err
    assert len(lines[0]) < 400  # a 5000-digit value is not echoed whole
    assert "Traceback" not in out + err and not (tmp_path / "run").exists()


def test_a_config_larger_than_any_config_is_refused_before_parsing(tmp_path: Path) -> None:
    """500,000 plain keys (7.8 MB) were refused as an 'alias bomb' after a minute of parsing."""
    import time

    from visiontl.config import MAX_CONFIG_BYTES

    path = tmp_path / "cfg.yaml"
    path.write_text("task: classification\n" + "".join(f"k{i}: {i}\n" for i in range(500_000)))
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - started < 2.0  # read up to the bound, not parsed
    assert str(info.value).startswith(f"{path}: refused: larger than {MAX_CONFIG_BYTES:,} bytes, which no config needs")
    assert "alias" not in str(info.value)


def test_a_config_with_a_large_class_list_still_loads(tmp_path: Path) -> None:
    """The size bound leaves room for the largest legitimate config: ImageNet-21k's 21,841 class names."""
    names = [f"n{i:08d}_some_class_name" for i in range(21_841)]
    path = write(tmp_path, {"data": {"classes": names}})
    assert path.stat().st_size > 500_000
    assert load_config(path).data.classes == names


def test_an_unknown_key_is_shown_escaped_and_cut() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.\x1b[2Jepochs=3"])
    assert str(info.value).startswith("config: unknown key 'train.\\x1b[2Jepochs' (did you mean 'train.epochs'?)")
    with pytest.raises(ConfigError) as info:
        load_config(None, ["a" * 100_000 + "=1"])
    assert str(info.value).startswith("config: unknown key '" + "a" * 120 + "…'") and len(str(info.value)) < 400


STAGED = {"finetune": {"strategy": "staged", "lr_mult": 0.5,
                       "stages": [{"epochs": 2, "unfreeze": 0, "lr": 0.02}, {"epochs": 18, "unfreeze": "all", "lr": 0.01}]}}


def test_a_strategy_on_the_command_line_replaces_a_staged_recipe_and_keeps_its_lr(tmp_path: Path,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    recipe = write(tmp_path, STAGED)
    with caplog.at_level("WARNING", logger="visiontl"):
        cfg = load_config(recipe, ["finetune.strategy=full"])
    assert cfg.finetune.strategy == "full" and cfg.finetune.stages == [] and cfg.train.lr == 0.01
    assert cfg.finetune.lr_mult == 0.5  # what every strategy reads stays the recipe's
    assert [r.getMessage() for r in caplog.records] == [
        "finetune.strategy=full replaces the recipe's fine-tuning: dropped finetune.stages (2 phases); "
        "train.lr 0.01 from the recipe's phase 2"]
    caplog.clear()
    import visiontl as vtl

    with caplog.at_level("WARNING", logger="visiontl"):
        cfg = vtl.load_config(recipe, {"finetune.strategy": "feature_extraction"})  # the head-only phase's LR
    assert cfg.train.lr == 0.02 and "train.lr 0.02 from the recipe's phase 1" in caplog.records[0].getMessage()
    # an LR given, by the recipe or the overrides, is kept and named
    cfg = load_config(recipe, ["finetune.strategy=full", "train.lr=0.5"])
    assert cfg.train.lr == 0.5
    (tmp_path / "partial").mkdir()
    partial = write(tmp_path / "partial", {"finetune": {"strategy": "partial", "freeze_stages": 3}, "train": {"lr": 0.002}})
    caplog.clear()
    with caplog.at_level("WARNING", logger="visiontl"):
        cfg = load_config(partial, ["finetune.strategy=full"])
    assert cfg.finetune.freeze_stages == 0 and cfg.train.lr == 0.002
    assert caplog.records[0].getMessage().endswith("dropped finetune.freeze_stages=3; train.lr 0.002 from the recipe")
    # the recipe's own strategy given again, or the keys given with it: nothing dropped, nothing said
    caplog.clear()
    with caplog.at_level("WARNING", logger="visiontl"):
        assert load_config(recipe, ["finetune.strategy=staged"]).finetune.stages
        assert load_config(partial, ["finetune.strategy=staged", "finetune.stages=[{epochs: 1}]"]).train.lr == 0.002
    assert [r.getMessage() for r in caplog.records] == [
        "finetune.strategy=staged replaces the recipe's fine-tuning: dropped finetune.freeze_stages=3; "
        "train.lr 0.002 from the recipe"]

