"""The contract between the trainer and a task."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from visiontl.backbones import Backbone
from visiontl.config import Config


class PreparedData(Protocol):
    """What a task found in the dataset before any model is built (everything validated)."""

    classes: list[str]
    holdout: Any  # visiontl.data.holdout.Holdout when data.val is a fraction of the train split, else None
    left_out: list[str]  # data.on_bad_image=skip: one line per image that failed the checks and was left out

    def summary(self) -> str: ...


@dataclass
class ClosedFormFit:
    """A head fitted without gradient steps (scikit-learn heads)."""

    record: dict[str, Any]  # what the checkpoint (sklearn_head) and metrics.json keep of the fit
    fitted_params: int  # the parameters the fit set: log.csv's trainable_params


class TaskAdapter(Protocol):
    """Built for one config (`get_task(cfg)`), which it keeps as `cfg`: the loss, the collate and whatever else
    it needs of the config are made then. No call leaves state behind for a later one."""

    cfg: Config
    name: str
    backbone_prefix: str  # where the backbone body sits in the model's state dict
    log_metrics: tuple[str, ...]  # scalar val metrics that go into log.csv
    fixed_shapes: bool  # training batches all have one shape: cudnn's autotuning pays off (else it re-tunes per shape)

    def prepare_data(self, cfg: Config, *, val_files: list[str] | None = None,
                     trained: dict[str, Any] | None = None) -> PreparedData:
        """Read and check the data. `val_files`: a run's recorded val list (data.val as a fraction).
        `trained`: the checkpoint being evaluated: its classes (and label map) are the model's, and with a
        named val split only that split is read."""
        ...

    def build_model(self, cfg: Config, backbone: Backbone, classes: list[str]) -> nn.Module: ...

    def datasets(self, cfg: Config, data: PreparedData, backbone: Backbone, augment: bool) -> tuple[Dataset, Dataset]: ...

    def collate(self, batch: list[Any]) -> Any: ...

    def batch_groups(self, dataset: Dataset) -> list[int] | None:
        """One group id per dataset index when every training batch must come from one group (make_loader),
        else None."""
        ...

    def checkpoint_extras(self, data: PreparedData) -> dict[str, Any]:
        """What else a checkpoint must carry to be used alone (e.g. the detection label map)."""
        ...

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        """Mean loss of a batch and its number of images."""
        ...

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, classes: list[str], autocast: AbstractContextManager,
        sharded: bool = False,
    ) -> dict[str, Any]:
        """Val metrics, plus `protocol` (how they were computed, as readable strings) and `per_image`
        (`{"metric", "higher_is_better", "images": [{"file", "score", "index", ...}]}`, one record per image
        evaluated, `index` its position in the loader's dataset); may hold `loss` and `raw` (numpy arrays
        the trainer saves beside metrics.json). `sharded`: under torchrun, the loader holds this rank's
        shard of the val set (distributed.ValShard) and every rank calls this at once; rank 0 returns the
        whole set's metrics, exactly what one process returns, and the other ranks {}."""
        ...

    def render_examples(
        self, model: nn.Module, dataset: Dataset, indices: list[int], device: torch.device,
        autocast: AbstractContextManager, classes: list[str],
    ) -> list[Image.Image]:
        """One picture per dataset index: the model run on that image, ground truth and prediction drawn."""
        ...

    def fits_in_closed_form(self, cfg: Config) -> bool:
        """True when the head is fitted without gradient steps (scikit-learn heads)."""
        ...

    def fit_closed_form(
        self, cfg: Config, model: nn.Module, train: Dataset, run_dir: Path, device: torch.device
    ) -> ClosedFormFit: ...


class ClassifierTask(TaskAdapter, Protocol):
    """The classification adapter: what prediction, ranking and serving call besides the trainer's methods."""

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a batch of normalised images (softmax of the logits)."""
        ...


class DetectorTask(TaskAdapter, Protocol):
    """The detection and instance segmentation adapters: what prediction, ranking, serving and pre-annotation
    call besides the trainer's methods."""

    def detect(self, model: nn.Module, images: list[torch.Tensor], device: torch.device,
               autocast: AbstractContextManager) -> list[dict[str, torch.Tensor]]:
        """torchvision's detections per image (boxes, labels, scores; masks for instance segmentation), on the CPU."""
        ...

