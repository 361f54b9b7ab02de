"""The Python API: what `import visiontl as vtl` offers (docs/python-api.md).

    cfg = vtl.load_config("recipe.yaml", overrides={"train.epochs": 3})
    run = vtl.train(cfg)
    model = vtl.load(run.best)
    preds = model.predict(["a.jpg", pil_image, numpy_array])
    metrics = vtl.evaluate(model, cfg.data, split="val")

The functions do what the commands do (`visiontl train`, `predict`, `evaluate`) through the same code, so a
run made here is the run the CLI makes from the same config. Log lines show without set-up, and every
problem the user can act on is a visiontl.errors.VisiontlError subclass with the CLI's one-line message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontl.config import Config, DataConfig, apply_overrides, build_config, compose_strategy, load_yaml
from visiontl.errors import CheckpointError, ConfigError

log = logging.getLogger("visiontl")

Overrides = Mapping[str, Any] | list[str] | tuple[str, ...] | None


def load_config(source: str | Path | Mapping[str, Any] | Config | None = None, overrides: Overrides = None) -> Config:
    """A validated Config.

    source: a YAML file, a dict of sections (as the YAML would hold), a Config (copied), or None (the
        defaults). A dict is the way to build a config in code with visiontl's errors: `vtl.Config(...)`
        itself raises pydantic's ValidationError, this raises ConfigError with one line naming the key.
    overrides: dotted keys and values, as a dict ({"train.epochs": 3, "data.root": "/data"}) or as the
        command line's "key=value" strings (["train.epochs=3"], values parsed as YAML).

    Raises ConfigError (a missing file, bad YAML, an unknown key, a bad value)."""
    if isinstance(source, Config):
        raw, name = source.to_dict(), "config"
    elif isinstance(source, Mapping):
        raw, name = json.loads(json.dumps(source, default=str)), "config"  # a deep copy; Paths become strings
    elif source is None:
        raw, name = {}, "config"
    else:
        raw, name = load_yaml(source), str(source)
    raw = _apply(raw, overrides)
    compose_strategy(raw, _overridden_keys(overrides))
    return build_config(raw, source=name)


def _apply(raw: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    if overrides is None:
        return raw
    if isinstance(overrides, (list, tuple)):
        return apply_overrides(raw, [str(o) for o in overrides])
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides: a dict of dotted keys or a list of 'key=value' strings, not "
                          f"{type(overrides).__name__}")
    for key, value in overrides.items():
        path = str(key).split(".")
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = child
        node[path[-1]] = json.loads(json.dumps(value, default=str))  # Paths (and nested ones) as strings
    return raw


def _overridden_keys(overrides: Overrides) -> set[str]:
    from visiontl.config import parse_override

    if isinstance(overrides, Mapping):
        return {str(k) for k in overrides}
    return {".".join(parse_override(str(o))[0]) for o in overrides or ()}


@contextlib.contextmanager
def _console_log() -> Iterator[None]:
    """visiontl's log lines on stdout as the CLI prints them, unless the caller has set up the 'visiontl'
    logger (a handler of its own); the handler is removed after, so nothing is left behind."""
    if log.handlers:
        yield
        return
    from visiontl.console import ConsoleHandler

    handler = ConsoleHandler()
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # a notebook's root handler would print every line twice
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


@dataclass
class Run:
    """A finished training run.

    dir: the run directory (docs/run-directory.md); config: the config it trained; metrics: the final val
    metrics, with metrics["best"] the monitored metric's best value and epoch (what `visiontl train` reports)."""

    dir: Path
    config: Config
    metrics: dict[str, Any] = field(repr=False)

    @property
    def best(self) -> Path:
        """The checkpoint of the best epoch (by train.monitor)."""
        return self.dir / "checkpoints" / "best.pt"

    @property
    def last(self) -> Path:
        """The checkpoint of the last epoch (what resume continues from)."""
        return self.dir / "checkpoints" / "last.pt"

    @functools.cached_property
    def model(self) -> Any:
        """The trained model of the best epoch as a Predictor (loaded on first use, on the CPU)."""
        return load(self.best)


def train(config: Config | str | Path | Mapping[str, Any], overrides: Overrides = None, *, resume: bool = False,
          force: bool = False) -> Run:
    """Train as `visiontl train` does and return the Run (directory, metrics, best/last checkpoints, model).

    config: a Config, a YAML file or a dict of sections (see load_config).
    overrides: dotted keys and values applied to the config first, a dict or "key=value" strings.
    resume: continue the run in config.run.dir from its last.pt (`--resume`).
    force: replace a finished run already in config.run.dir (`--force`); without resume or force a
        folder holding another run is refused.

    Log lines (data, model, one per epoch, report) print to stdout unless the 'visiontl' logger has a
    handler of the caller's; the log also goes to <run.dir>/train.log, as with the CLI.
    Raises a VisiontlError subclass (ConfigError, DataError, WeightsError, CheckpointError, TrainingError,
    Interrupted) with the CLI's one-line message."""
    from visiontl.engine.trainer import train as run_training

    cfg = load_config(config, overrides)  # a Config too: validated as a whole again, whatever was assigned to it
    with _console_log():
        metrics = run_training(cfg, resume=resume, force=force, log_file=True)
    return Run(Path(os.path.abspath(cfg.run.dir)), cfg, metrics)


def load(path: str | Path, *, device: str | None = None, allow_torchscript_code: bool = False) -> Any:
    """A Predictor (visiontl.predictor) for a checkpoint (.pt) or a file `visiontl export` wrote (.onnx,
    TorchScript), built from the file alone: no training data, no weights download.

    path: the file.
    device: where a checkpoint's model runs: "cpu" (what None means), "cuda", "cuda:1" or "auto"; exported
        files run on the CPU (onnxruntime, torch.jit).
    allow_torchscript_code: load a TorchScript file, whose stored code runs when it is used (docs/deploy.md,
        "Which files can run code"); ONNX files and checkpoints run no code.

    Raises CheckpointError (not a visiontl file, weights that do not fit), ConfigError."""
    from visiontl.loading import load_predictor

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such file")
    return load_predictor(path, allow_torchscript_code, device)


def evaluate(model: Any, data: DataConfig | Mapping[str, Any] | None = None, split: str = "val",
             out_dir: str | Path | None = None, *, overrides: Overrides = None) -> dict[str, Any]:
    """Score a trained model on a labelled split as `visiontl evaluate` does, and return its metrics dict.

    model: a Predictor from vtl.load of a checkpoint, scored as it is in memory on the device it was loaded
        on; a Run (its model, run.model); or a checkpoint path, loaded on the config's train.device as
        `visiontl evaluate` loads it. An exported file cannot be scored: evaluate its checkpoint.
    data: the dataset (a DataConfig such as cfg.data, or a dict of data keys); default: the one stored in
        the checkpoint's config.
    split: "val" (data.val), "train" (data.train, with data.train_masks), or another split name or path
        (it becomes data.val, as `visiontl evaluate CKPT data.val=test` does).
    out_dir: write the evaluation files there as `visiontl evaluate --out` does (metrics.json, eval_raw.npz,
        eval_images.json, gallery, run.json, config.yaml, report); default: nothing is written.
    overrides: further dotted keys for the stored config (e.g. {"train.batch_size": 4}), a dict or
        "key=value" strings; model.* keys change the model, which is then rebuilt from its checkpoint with
        them, as `visiontl evaluate CKPT model.x=...` does.

    The metrics: the task's scores (accuracy / bbox/AP / mIoU ...), `protocol` (how they were computed),
    `per_image` and `raw` (arrays), `checkpoint` and `split`.
    Raises CheckpointError, DataError, ConfigError."""
    from visiontl.engine.inference import LoadedModel, evaluate_checkpoint

    if isinstance(model, Run):
        model = model.model
    path = _checkpoint_of(model)
    loaded = getattr(model, "loaded", None)  # a Predictor's LoadedModel: the model in memory
    if not isinstance(loaded, LoadedModel):
        loaded = None
    keys = _data_keys(data, split, loaded.config.data.model_dump(mode="json") if loaded is not None else path)
    # JSON is YAML; the caller's "key=value" strings go as given, as the command line's do
    strings = [f"{k}={json.dumps(v, default=str)}" for k, v in keys.items()] + _override_strings(overrides)
    out = Path(out_dir) if out_dir is not None else None
    with _console_log():
        if loaded is None or any(s.partition("=")[0].strip().startswith("model.") for s in strings):
            return evaluate_checkpoint(path, strings, out)
        return _evaluate_in_memory(loaded, path, strings, out)


def _evaluate_in_memory(loaded: Any, path: Path, overrides: list[str], out_dir: Path | None) -> dict[str, Any]:
    """evaluate_model on a Predictor's own model, with the stored config and its overrides (no model.* key)."""
    from dataclasses import replace

    from visiontl.config import build_config
    from visiontl.engine.inference import evaluate_model
    from visiontl.engine.rundir import evaluation_dir
    from visiontl.tasks import get_task

    out = evaluation_dir(out_dir)  # refused before any work, as `visiontl evaluate --out` does
    cfg = build_config(apply_overrides(loaded.config.to_dict(), overrides), source=f"{path} (stored config)")
    return evaluate_model(replace(loaded, config=cfg, task=get_task(cfg)), path, out)


def _checkpoint_of(model: Any) -> Path:
    if isinstance(model, (str, Path)):
        return Path(model)
    path = getattr(model, "path", None)
    if path is None:
        raise CheckpointError(f"evaluate: give a Predictor from vtl.load, a Run or a checkpoint path, not "
                              f"{type(model).__name__}")
    from visiontl.export.runtime import is_exported_file

    if is_exported_file(path):
        raise CheckpointError(f"{path}: an exported file cannot be evaluated; evaluate the checkpoint it was "
                              "exported from")
    return Path(path)


def _data_keys(data: DataConfig | Mapping[str, Any] | None, split: str, stored: dict[str, Any] | Path) -> dict[str, Any]:
    """The dotted data.* keys that make the stored config score `split` of `data`. `stored`: the stored
    config's data section, or the checkpoint that holds it (read only when needed)."""
    if isinstance(data, DataConfig):
        values = data.model_dump(mode="json", exclude_unset=False)
    elif isinstance(data, Mapping):
        values = dict(data)
    elif data is None:
        values = {}
    else:
        raise ConfigError(f"evaluate: data must be a DataConfig (cfg.data) or a dict, not {type(data).__name__}")
    keys = {f"data.{k}": v for k, v in values.items()}
    if split == "train":
        if not keys:
            if isinstance(stored, Path):
                from visiontl.engine.checkpoint import load_checkpoint

                stored = load_checkpoint(stored)["config"]["data"]
            keys = {"data.train": stored.get("train"), "data.train_masks": stored.get("train_masks")}
        keys["data.val"] = keys.get("data.train")
        keys["data.val_masks"] = keys.get("data.train_masks")
    elif split != "val":
        keys["data.val"] = split
    return keys


def _override_strings(overrides: Overrides) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v, default=str)}" for k, v in overrides.items()]
    if not isinstance(overrides, (list, tuple)):
        raise ConfigError(f"overrides: a dict of dotted keys or a list of 'key=value' strings, not "
                          f"{type(overrides).__name__}")
    return [str(o) for o in overrides]


def build_model(arch: str, *, backbone: str, num_classes: int, weights: str = "imagenet", **options: Any) -> Any:
    """A task model (a torch nn.Module) as training builds it, untrained beyond its backbone's weights.

    arch: classifier, faster_rcnn, ssd, ssdlite, mask_rcnn, unet, fpn or deeplabv3plus (the config's model.arch).
    backbone: a name from `visiontl backbones`, or timm:<model>.
    num_classes: the classes to predict (detectors add their background class themselves).
    weights: "imagenet" (the offline cache), "none" (random) or a path (the config's model.weights).
    options: further model.* keys of the config (e.g. min_size=512, neck="none"); their defaults are the
        config schema's.

    Raises ConfigError for an unknown arch or option, WeightsError for weights that cannot be loaded.
    (visiontl.models.build_model; this is its public name.)"""
    from visiontl.models import build_model as builder

    return builder(arch, backbone=backbone, num_classes=num_classes, weights=weights, **options)
