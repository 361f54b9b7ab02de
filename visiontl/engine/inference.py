"""Rebuilding a trained model from its checkpoint alone (no weights download, no training data)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from visiontl.backbones import Backbone, create_backbone
from visiontl.config import Config, apply_overrides, build_config
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.errors import CheckpointError
from visiontl.tasks import TaskAdapter, get_task


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


def evaluate_checkpoint(path: str | Path, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    """Score a checkpoint on its config's val split (overrides may point elsewhere, e.g. data.val=test) and
    write the evaluation files of a run directory into `out_dir` (docs/run-directory.md)."""
    from visiontl.data.sampling import EpochSampler
    from visiontl.engine.environment import Stopwatch, write_run_json
    from visiontl.config import save_config
    from visiontl.engine.resilience import RunDir, check_run_dir
    from visiontl.engine.trainer import autocast_for, make_loader, resolve_device, write_evaluation, write_run_report

    watch = Stopwatch()
    out_dir = Path(out_dir)
    # A folder that is not one, or is in use by a run, is refused before any work; what is there is kept
    # (resume=True), and the evaluation's files are added to its manifest.
    check_run_dir(out_dir, resume=True, force=False, contents=False)
    loaded = load_trained(path, overrides)
    cfg, task = loaded.config, loaded.task
    # only the split evaluated is read (a named val split), or the train split it was taken from (a fraction)
    data = task.prepare_data(cfg, val_files=loaded.checkpoint.get("val_files"), trained=loaded.checkpoint)
    if data.classes != loaded.classes:
        raise CheckpointError(f"{path}: trained on classes {loaded.classes}, the data has {data.classes}")
    device = resolve_device(cfg.train.device)
    train_set, val_set = task.datasets(cfg, data, loaded.backbone, augment=False)
    loader = make_loader(val_set, EpochSampler(len(val_set), False, cfg.train.seed), cfg.train.batch_size,
                         cfg.train.workers, task.collate, device)
    autocast, _ = autocast_for(device, cfg.train.amp)
    model = loaded.model.to(device)
    metrics = task.evaluate(model, loader, device, loaded.classes, autocast)
    metrics["checkpoint"] = str(path)
    metrics["split"] = cfg.data.val
    with RunDir.open(out_dir, resume=True, force=False, contents=False):  # locked while its files are written
        write_evaluation(out_dir, metrics, task, model, val_set, device, autocast, loaded.classes)
        # train_images: null when only the val split was read
        write_run_json(out_dir, "evaluate", cfg.task, device, watch, len(train_set) or None, len(val_set))
        save_config(cfg, out_dir / "config.yaml")  # what was evaluated, overrides included, for the report
        write_run_report(out_dir)
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
