"""The typed config: YAML plus dotted overrides in, one validated `Config` out.

This schema is the only home of every default. Builders downstream take explicit arguments and never
invent their own defaults. Every model forbids unknown keys, so a typo is an error, not a silent no-op.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visiontl.errors import ConfigError

Task = Literal["classification", "detection", "segmentation", "instance_segmentation"]
IMPLEMENTED_TASKS = ("classification",)

# The metric that picks best.pt and drives early stopping when `train.monitor` is not set.
DEFAULT_MONITOR = {"classification": "accuracy"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    arch: Literal["classifier"] = "classifier"
    backbone: str = "resnet50"
    weights: str = "imagenet"  # imagenet | none | a path to a state dict, safetensors file or visiontl checkpoint
    head: Literal["linear", "mlp", "logistic_regression", "linear_svm"] = "linear"
    mlp_hidden: int = Field(512, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Regularisation strength C of the scikit-learn heads (inverse: smaller is stronger).
    sklearn_c: float = Field(1.0, gt=0.0)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from visiontl.backbones import check_backbone_name

        check_backbone_name(name)
        return name


class DataConfig(_Strict):
    format: Literal["imagefolder", "csv"] = "imagefolder"
    root: Path | None = None
    train: str = "train"  # a folder under root (imagefolder) or a CSV file (csv: columns path,label)
    val: str = "val"
    classes: list[str] | None = None  # fixes the class order; default: sorted folder names / labels
    image_size: int = Field(224, ge=16)
    augment: Literal["none", "light", "standard"] = "standard"
    hflip: bool = True
    vflip: bool = False


class PhaseConfig(_Strict):
    """One phase of a staged schedule: which backbone stages train, for how long, at which LR."""

    epochs: int = Field(gt=0)
    unfreeze: int | Literal["all"] = 0  # how many of the deepest backbone stages train; 0 = head only
    lr: float | None = Field(None, gt=0.0)  # default: train.lr
    lr_mult: float | list[float] | None = None  # default: finetune.lr_mult


class FinetuneConfig(_Strict):
    strategy: Literal["feature_extraction", "partial", "full", "staged"] = "full"
    freeze_stages: int = Field(0, ge=0)  # partial: freeze the first N backbone stages
    stages: list[PhaseConfig] = Field(default_factory=list)  # staged: the phases, in order
    # Discriminative LR: one float m gives stage i of n the LR lr * m**(n - i) (deepest stage lr*m);
    # a list gives one multiplier per backbone stage, shallow to deep. The head always gets lr.
    lr_mult: float | list[float] = 1.0
    bn: Literal["train", "freeze"] = "train"  # freeze: every backbone BatchNorm keeps its statistics

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneConfig:
        if self.strategy == "staged" and not self.stages:
            raise ValueError("finetune.stages must list at least one phase when finetune.strategy is 'staged'")
        if self.strategy != "staged" and self.stages:
            raise ValueError(f"finetune.stages is only used by finetune.strategy 'staged', not {self.strategy!r}")
        if self.strategy == "partial" and self.freeze_stages == 0:
            raise ValueError("finetune.freeze_stages must be at least 1 for finetune.strategy 'partial'")
        return self


class EarlyStoppingConfig(_Strict):
    patience: int = Field(5, gt=0)  # epochs without improvement of train.monitor before stopping
    min_delta: float = Field(0.0, ge=0.0)


class TrainConfig(_Strict):
    epochs: int = Field(10, gt=0)
    max_steps: int | None = Field(None, gt=0)  # optimizer steps; stops early when reached
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    step_epochs: int = Field(10, gt=0)  # schedule 'step': multiply the LR by step_gamma every step_epochs
    step_gamma: float = Field(0.1, gt=0.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # CUDA only: bf16 where supported, else fp16 with a gradient scaler
    accumulate: int = Field(1, gt=0)
    clip_grad: float | None = Field(None, gt=0.0)  # max global gradient norm
    seed: int = 0
    deterministic: bool = False
    workers: int = Field(2, ge=0)
    overfit_batches: int = Field(0, ge=0)  # >0: train and validate on the same N fixed batches
    monitor: str | None = None  # val metric for best.pt and early stopping; default per task
    monitor_mode: Literal["max", "min"] = "max"
    early_stopping: EarlyStoppingConfig | None = None
    log_every: int = Field(20, gt=0)  # steps between loss readings (each reading syncs with the device)
    progress: bool = True


class RunConfig(_Strict):
    dir: Path = Path("runs/default")


class Config(_Strict):
    task: Task = "classification"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.task not in IMPLEMENTED_TASKS:
            raise ValueError(f"task {self.task!r} is not available yet; available: {', '.join(IMPLEMENTED_TASKS)}")
        if self.finetune.strategy == "feature_extraction" and self.model.weights == "none":
            raise ValueError(
                "finetune.strategy 'feature_extraction' with model.weights 'none' would train a head on frozen "
                "random features; use model.weights imagenet (or a path), or finetune.strategy full"
            )
        if self.model.head in ("logistic_regression", "linear_svm") and self.finetune.strategy != "feature_extraction":
            raise ValueError(
                f"model.head {self.model.head!r} fits scikit-learn on frozen features and needs "
                f"finetune.strategy 'feature_extraction', not {self.finetune.strategy!r}"
            )
        if self.finetune.strategy == "staged":
            total = sum(p.epochs for p in self.finetune.stages)
            if "epochs" not in self.train.model_fields_set:
                self.train.epochs = total
            elif self.train.epochs != total:
                raise ValueError(
                    f"train.epochs is {self.train.epochs} but the phases of finetune.stages add up to {total} "
                    "epochs; leave train.epochs out or make them agree"
                )
        if self.train.monitor is None:
            self.train.monitor = DEFAULT_MONITOR[self.task]
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict (paths as strings): what run dirs and checkpoints store."""
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------------------------------------
# Loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3). Values are parsed as YAML, so types come out right."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def build_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or start from defaults when `path` is None), apply overrides, validate once."""
    raw = load_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, list(overrides or []))
    return build_config(raw, source=str(path) if path is not None else "config")


def save_config(config: Config, path: Path) -> None:
    from visiontl.engine.checkpoint import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


# ----------------------------------------------------------------------------------------------------------
# One-line error messages


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at `loc` (for suggesting a valid key)."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return model if isinstance(part, str) else None
        annotation = model.model_fields[part].annotation
        model = _first_model(annotation)
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def describe_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("function-after", "function-before")))
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        valid = sorted(owner.model_fields) if owner else []
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        suggestion = f" (did you mean {'.'.join([*map(str, loc[:-1]), hint[0]])!r}?)" if hint else ""
        return f"unknown key {key!r}{suggestion}; valid keys here: {', '.join(valid)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and kind not in ("missing", "value_error") and not isinstance(err["input"], dict):
        msg = f"{msg} (got {err['input']!r})"
    return f"{key}: {msg}" if key else msg
