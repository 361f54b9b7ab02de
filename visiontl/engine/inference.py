"""Rebuilding a trained model from its checkpoint alone (no weights download, no training data)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from visiontl.backbones import Backbone, create_backbone
from visiontl.config import Config, apply_overrides, build_config
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.errors import CheckpointError
from visiontl.tasks import TaskAdapter, get_task

if TYPE_CHECKING:
    from visiontl.engine.environment import Stopwatch
    from visiontl.engine.rundir import RunDir


@dataclass
class LoadedModel:
    model: nn.Module
    backbone: Backbone
    task: TaskAdapter
    config: Config
    classes: list[str]
    checkpoint: dict[str, Any]


def load_trained(path: str | Path, overrides: list[str] | None = None) -> LoadedModel:
    ckpt = load_checkpoint(path)
    raw = apply_overrides(copy.deepcopy(ckpt["config"]), list(overrides or []))
    cfg = build_config(raw, source=f"{path} (stored config)")
    task = get_task(cfg)
    backbone = create_backbone(cfg.model.backbone, "none")
    model = task.build_model(cfg, backbone, list(ckpt["classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({first})") from None
    model.eval()
    return LoadedModel(model, backbone, task, cfg, list(ckpt["classes"]), ckpt)


def evaluate_checkpoint(path: str | Path, overrides: list[str], out_dir: Path | None = None) -> dict[str, Any]:
    """Score a checkpoint on its config's val split (overrides may point elsewhere, e.g. data.val=test), on
    the config's train.device, and (`out_dir`) write the evaluation files of a run directory there
    (docs/run-directory.md)."""
    from visiontl.engine.environment import Stopwatch
    from visiontl.engine.rundir import evaluation_dir
    from visiontl.engine.trainer import resolve_device

    watch = Stopwatch()
    out = evaluation_dir(out_dir)
    loaded = load_trained(path, overrides)
    loaded.model.to(resolve_device(loaded.config.train.device))
    return evaluate_model(loaded, path, out, watch)


def evaluate_model(loaded: LoadedModel, checkpoint: str | Path, out: RunDir | None = None,
                   watch: Stopwatch | None = None) -> dict[str, Any]:
    """Score `loaded.model` as it is, on the device it is on, on the val split of `loaded.config` (with
    `loaded.task` built for that config); `checkpoint` is the file it came from (metrics["checkpoint"]).
    `out` (a RunDir): write the evaluation files there (metrics.json, eval_raw.npz, eval_images.json, the
    gallery, run.json, config.yaml, the report); without it nothing is written. `watch`: when the command
    started (for run.json)."""
    from visiontl.data.sampling import EpochSampler
    from visiontl.engine.environment import Stopwatch
    from visiontl.engine.trainer import autocast_for, make_loader

    watch = watch or Stopwatch()
    cfg, task, model = loaded.config, loaded.task, loaded.model
    # only the split evaluated is read (a named val split), or the train split it was taken from (a fraction)
    data = task.prepare_data(cfg, val_files=loaded.checkpoint.get("val_files"), trained=loaded.checkpoint)
    if data.classes != loaded.classes:
        raise CheckpointError(f"{checkpoint}: trained on classes {loaded.classes}, the data has {data.classes}")
    device = next(model.parameters()).device
    train_set, val_set = task.datasets(cfg, data, loaded.backbone, augment=False)
    loader = make_loader(val_set, EpochSampler(len(val_set), False, cfg.train.seed), cfg.train.batch_size,
                         cfg.train.workers, task.collate, device)
    autocast, _ = autocast_for(device, cfg.train.amp)
    metrics = task.evaluate(model, loader, device, loaded.classes, autocast)
    metrics["checkpoint"] = str(checkpoint)
    metrics["split"] = cfg.data.val
    if out is not None:
        with out.open(resume=True, force=False, contents=False):  # locked while its files are written
            out.write_evaluation(metrics, task, model, val_set, device, autocast, loaded.classes)
            # train_images: null when only the val split was read
            out.write_run_json("evaluate", cfg.task, device, watch, len(train_set) or None, len(val_set))
            out.write_config(cfg)  # what was evaluated, overrides included, for the report
            out.write_report()
    return metrics


def image_files(inputs: list[Path]) -> list[Path]:
    from visiontl.data.images import is_image_file
    from visiontl.errors import DataError

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(f for f in item.rglob("*") if f.is_file() and is_image_file(f))
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def check_pixel_budget(files: list[Path], max_pixels: int) -> None:
    """Every file's header against the pixel budget of inference, before any file is decoded, so a 32 KB PNG
    claiming 16384x16384 pixels (10 GB to predict) is refused in one line naming it, not half way through."""
    from visiontl.data.images import check_image

    for f in files:
        check_image(f, max_pixels)
