"""The typed config: YAML plus dotted overrides in, one validated `Config` out.

This schema is the only home of every default. The model builders' keyword defaults are read from it
(visiontl.models.defaults); nothing downstream invents its own. Every model forbids unknown keys, so a typo is
an error, not a silent no-op.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import reprlib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticUndefined

from visiontl import safe_yaml
from visiontl.data.formats.registry import FORMAT_NAMES, formats_for
from visiontl.errors import ConfigError
from visiontl.text import printable

Task = Literal["classification", "detection", "segmentation", "instance_segmentation"]
IMPLEMENTED_TASKS = ("classification", "detection", "segmentation", "instance_segmentation")

# Per-task defaults of keys whose right value depends on the task (filled in by Config's validator).
DEFAULT_MONITOR = {"classification": "accuracy", "detection": "bbox/AP", "segmentation": "mIoU",
                   "instance_segmentation": "segm/AP"}
DEFAULT_ARCH = {"classification": "classifier", "detection": "faster_rcnn", "segmentation": "unet",
                "instance_segmentation": "mask_rcnn"}
TASK_ARCHS = {"classification": ("classifier",), "detection": ("faster_rcnn", "ssd", "ssdlite"),
              "segmentation": ("unet", "fpn", "deeplabv3plus"), "instance_segmentation": ("mask_rcnn",)}
# classification's and semantic segmentation's own layouts come first; the annotation formats come from their
# registry (visiontl.data.formats.registry), which says which tasks read each.
TASK_FORMATS = {"classification": ("imagefolder", "csv"), "detection": formats_for("detection"),
                "segmentation": ("masks",) + formats_for("segmentation"),
                "instance_segmentation": formats_for("instance_segmentation")}
DataFormat = Literal[tuple(dict.fromkeys(("imagefolder", "csv", "masks") + FORMAT_NAMES))]  # type: ignore[valid-type]


# Bounds on sizes and counts. A value above them can only be a mistake (a digit too many, a pasted number), and
# without them it is accepted here and fails later, deep in torch or numpy, as a traceback or an allocation the
# machine cannot make. docs/config.md lists them with each key.
MAX_IMAGE_SIDE = 16_384  # pixels: training one image of this side through the lightest backbone
# (mobilenet_v3_small keeps ~480 bytes of activations per input pixel in fp32, ~240 in bf16) already needs
# ~64 GB; twice the side needs ~260 GB, more than any single GPU holds (H200: 141 GB)
MAX_CHANNELS = 8_192  # convolution channels: a 3x3 conv of 8192 in and out holds 604M parameters (2.4 GB fp32)
MAX_HIDDEN = 65_536  # units of the mlp head's hidden layer
MAX_BATCH = 65_536  # images per batch (and micro-batches per step): 65,536 224-px images are 39 GB of input
MAX_WORKERS = 1_024  # DataLoader processes: more than the hardware threads of the largest machines
MAX_EPOCHS = 1_000_000
MAX_STEPS = 1_000_000_000  # optimizer steps: years at a step a second; far inside int64 and exact in float
MAX_STAGES = 100  # backbone stages (a backbone has 4 to 8)
MAX_DETECTIONS = 100_000  # detections kept per image (COCO scores 100)
MAX_SEED = 2**63 - 1  # a signed 64-bit integer: torch's generators take 64 bits (2**64 is a traceback); numpy
# gets the seed modulo 2**32
INT32 = 2**31


class _Strict(BaseModel):
    # allow_inf_nan=False: every float of the schema (in lists and tuples too) refuses inf and NaN, which no
    # setting means (`train.lr=1e400` parses as inf, `.nan` as NaN)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _f(default: Any = ..., doc: str = "", **constraints: Any) -> Any:
    """A field with its one-line documentation (docs/config.md is generated from these)."""
    return Field(default, description=doc, **constraints)


Side = Annotated[int, Field(gt=0, le=MAX_IMAGE_SIDE)]
Channels = Annotated[int, Field(gt=0, le=MAX_CHANNELS)]
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Byte = Annotated[int, Field(ge=0, le=255)]


class ModelConfig(_Strict):
    arch: Literal["classifier", "faster_rcnn", "ssd", "ssdlite", "unet", "fpn", "deeplabv3plus", "mask_rcnn"] | None = _f(
        None, "the network around the backbone: classifier (classification); faster_rcnn, ssd, ssdlite "
        "(detection); unet, fpn, deeplabv3plus (segmentation); mask_rcnn (instance_segmentation); default per "
        "task: classifier, faster_rcnn, unet, mask_rcnn")
    backbone: str = _f("resnet50", "a name from `visiontl backbones`, or timm:<model> for any timm model")
    weights: str = _f("imagenet", "imagenet (the source's own, offline cache) | none (random) | path to a state dict, "
                      ".safetensors or visiontl checkpoint")
    head: Literal["linear", "mlp", "logistic_regression", "linear_svm"] = _f(
        "linear", "classification head; the scikit-learn heads fit on frozen features (feature_extraction)")
    mlp_hidden: int = _f(512, "hidden width of the mlp head", gt=0, le=MAX_HIDDEN)
    dropout: float = _f(0.0, "dropout before the last linear layer", ge=0.0, lt=1.0)
    sklearn_c: float = _f(1.0, "inverse regularisation strength C of the scikit-learn heads", gt=0.0)
    neck: Literal["fpn", "none"] = _f("fpn", "faster_rcnn / mask_rcnn: a feature pyramid over the deepest feature_levels stages, "
                                      "or none (the deepest map alone)")
    feature_levels: int = _f(3, "detection: how many of the deepest backbone stages feed the neck / SSD head", ge=1, le=5)
    fpn_channels: int = _f(256, "channels of the feature pyramid", gt=0, le=MAX_CHANNELS)
    anchor_sizes: list[list[Side]] | None = _f(None, "faster_rcnn: anchor sizes in pixels per feature map (default: 4x "
                                              "each map's stride; with neck none, 32..512 on the one map)")
    aspect_ratios: list[Positive] = _f([0.5, 1.0, 2.0], "faster_rcnn: anchor aspect ratios (height / width)")
    min_size: int = _f(800, "faster_rcnn: images are resized so their shorter side is min_size ...", gt=0,
                       le=MAX_IMAGE_SIDE)
    max_size: int = _f(1333, "... and their longer side at most max_size (stored in checkpoints)", gt=0,
                       le=MAX_IMAGE_SIDE)
    ssd_size: int = _f(320, "ssd / ssdlite: the square input size", ge=64, le=MAX_IMAGE_SIDE)
    ssd_scale_range: tuple[Positive, Positive] = _f((0.2, 0.95), "ssd / ssdlite: smallest and largest default box, as "
                                              "fractions of ssd_size")
    score_threshold: float = _f(0.05, "detection: keep detections scoring at least this", ge=0.0, le=1.0)
    nms_threshold: float = _f(0.5, "detection: IoU of non-maximum suppression", gt=0.0, le=1.0)
    detections_per_image: int = _f(100, "detection: at most this many detections per image", gt=0,
                                   le=MAX_DETECTIONS)
    display_threshold: float = _f(0.5, "detection: the score a detection needs to be shown: drawn by `visiontl "
                                  "predict --draw`, sent to Label Studio by `visiontl serve`, counted in the "
                                  "report's confusion matrix, per-image F1 and gallery (AP uses every detection "
                                  "above score_threshold); --display-threshold overrides it", ge=0.0, le=1.0)
    decoder_channels: list[Channels] = _f([256, 128, 64, 32, 16], "unet: channels of the five decoder blocks, deep to "
                                     "shallow")
    loss: Literal["ce", "dice", "focal", "ce+dice", "ce+focal"] = _f(
        "ce", "segmentation loss: cross-entropy, Dice, focal, or a sum of two")
    class_weights: list[NonNegative] | None = _f(None, "segmentation: per-class weights of the cross-entropy / Dice / "
                                           "focal terms")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from visiontl.backbones import check_backbone_name

        check_backbone_name(name)
        return name


class DataConfig(_Strict):
    format: DataFormat = _f(
        "imagefolder", "classification: imagefolder (root/<split>/<class>/*) or csv (path,label); detection: coco "
        "(JSON), voc (XML per image: Annotations/ + JPEGImages/ and the other usual folders), yolo (data.yaml, "
        "obj.data or images/ + labels/), cvat (XML export), labelstudio (JSON export), labelme (folder of JSON) or "
        "csv (a row per box: filename,width,height,class,xmin,ymin,xmax,ymax with a header, or path,x1,y1,x2,y2,"
        "class); instance_segmentation: coco, cvat, labelstudio, labelme; segmentation: masks (images + label PNGs) "
        "or coco (polygons / RLE rasterised). docs/data.md shows each layout")
    root: Path | None = _f(None, "dataset folder (checked before training)")
    train: str = _f("train", "train split: a folder (imagefolder), a CSV file (csv; detection: or a folder "
                    "holding _annotations.csv, or <name>.csv / <name>_labels.csv), a JSON file or split name (coco), "
                    "an ImageSets/Main list or split folder (voc), a data.yaml / obj.data key or images sub-folder "
                    "(yolo), an export file, a folder holding it or a subset (cvat), an export file (labelstudio) or "
                    "a JSON folder (labelme), relative to root")
    val: str | float = _f("val", "validation split, as data.train; or a fraction of the train split (0.2: a "
                          "seeded split, stratified by class, whose val images are listed in the run folder and "
                          "reused by evaluate and --resume)")
    classes: list[str] | None = _f(None, "class names in label order; default: sorted folder names / CSV labels")
    images: str | None = _f(None, "the image folder of both splits, relative to root (default: found among the "
                            "usual names next to the annotations; labelstudio: root)")
    train_images: str | None = _f(None, "the image folder of the train split, when the splits' images are in "
                                  "separate folders (default: data.images, else found)")
    val_images: str | None = _f(None, "the image folder of the val split, as data.train_images")
    annotations: str | None = _f(None, "voc: the folder of XML files, relative to root (default: found among "
                                 "Annotations/, annotations/, annots/, or beside the images)")
    train_masks: str | None = _f(None, "masks: the label-image folder of the train split when data.train is an "
                                 "image folder (pairs by file name); unused when data.train is a list file")
    val_masks: str | None = _f(None, "masks: the label-image folder of the val split, as data.train_masks")
    ignore_index: int = _f(255, "segmentation: label id that is neither trained on nor scored (CamVid: 11)",
                           ge=-INT32, lt=INT32)
    palette: list[tuple[Byte, Byte, Byte]] | None = _f(None, "masks: RGB colour of each class id, for colour-coded "
                                                    "label images (other colours become ignore_index)")
    drop_empty: bool = _f(False, "detection: drop training images without objects (kept as negatives by default)")
    image_size: int = _f(224, "classification: square input size; segmentation: square training crop", ge=16,
                         le=MAX_IMAGE_SIDE)
    augment: Literal["none", "light", "standard", "strong"] = _f(
        "standard", "train augmentation preset: none, light (flips), standard (classification: random resized crop "
        "+ flips + colour jitter; detection: flips + scale + colour), strong (detection: + crops, blur, noise)")
    pipeline: list[dict[str, dict[str, Any]]] | None = _f(
        None, "detection: an explicit albumentations pipeline replacing the preset, e.g. [{HorizontalFlip: {p: 0.5}}]")
    min_visibility: float = _f(0.3, "detection: a box cut by a crop below this visible fraction is dropped", ge=0.0, le=1.0)
    hflip: bool = _f(True, "random horizontal flips in the light and standard presets")
    vflip: bool = _f(False, "random vertical flips too (microscopy, aerial images)")
    group_aspect_ratio: bool = _f(True, "detection, instance_segmentation: batch landscape images with landscape and "
                                  "portrait with portrait, so padding to the batch's largest image wastes little")
    on_bad_image: Literal["error", "skip"] = _f(
        "error", "an image that fails the checks before training (truncated, unreadable, not its annotated size): "
        "error stops naming it; skip leaves it out, named in the log, data.json and the report. One that passed "
        "them but fails to decode mid-epoch (a file replaced, a network share failing): error stops training "
        "naming it; skip trains on the next image instead and names it in a warning (validation always stops)")
    cache: bool | Literal["auto"] = _f(
        "auto", "decode every image once, before training, and keep it in memory (shared with forked workers): true "
        "caches up to data.cache_max_gb; auto only when the whole decoded set fits data.cache_max_gb and a quarter of "
        "the available memory, shared by the machine's training processes; false never")
    cache_max_gb: float = _f(8.0, "data.cache: decoded bytes at most; images beyond it are decoded as usual", gt=0.0)
    augment_on: Literal["cpu", "device"] = _f(
        "cpu", "classification, segmentation: where augmentation runs. cpu: the DataLoader workers decode, augment "
        "and normalise; device: the workers decode and do the geometry (resize, crops, flips) on uint8, and colour "
        "jitter and normalisation run batched on the training device (segmentation val JPEGs are decoded there on "
        "CUDA). Same tensors up to float rounding without colour jitter; jitter has the same ranges, not the same "
        "pixels. cpu stays the default until a GPU measurement says otherwise (docs/performance.md)")
    # The pixel budget of inference (docs/serve.md); le: visiontl.data.images.MAX_PIXELS, what is read at all.
    max_pixels: int = _f(120_000_000, "predict, serve: an image whose header declares more pixels (width x height) "
                         "is refused before it is decoded (120 M: a 100-megapixel photo fits; --max-pixels overrides)",
                         gt=0, le=16384 * 16384)

    @field_validator("val", mode="before")
    @classmethod
    def _split_or_fraction(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{value} is not a finite number")
            if not 0 < value < 1:
                raise ValueError(f"{value} is neither a split nor a fraction of the train split (0 < val < 1)")
            return float(value)
        return value

    @field_validator("pipeline")
    @classmethod
    def _finite_arguments(cls, pipeline: list[dict[str, dict[str, Any]]] | None) -> Any:
        # the arguments are free-form (albumentations checks them), but inf and NaN are no setting there either
        stack: list[Any] = [pipeline]
        while stack:
            value = stack.pop()
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{value} is not a finite number")
            if isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, (list, tuple)):
                stack.extend(value)
        return pipeline


class PhaseConfig(_Strict):
    """One phase of a staged schedule: which backbone stages train, for how long, at which LR."""

    epochs: int = _f(..., "length of the phase in epochs", gt=0, le=MAX_EPOCHS)
    unfreeze: Annotated[int, Field(ge=0, le=MAX_STAGES)] | Literal["all"] = _f(
        0, "how many of the deepest backbone stages train (0 = head only, all)")
    lr: float | None = _f(None, "base LR of the phase (default: train.lr)", gt=0.0)
    lr_mult: NonNegative | list[NonNegative] | None = _f(
        None, "per-stage LR multipliers of the phase (default: finetune.lr_mult)")


class FinetuneConfig(_Strict):
    strategy: Literal["feature_extraction", "partial", "full", "staged"] = _f(
        "full", "what trains: head only | all but the first freeze_stages stages | everything | phases of stages")
    freeze_stages: int = _f(0, "partial: how many of the first backbone stages stay frozen", ge=0,
                            le=MAX_STAGES)
    stages: list[PhaseConfig] = _f([], "staged: the phases, in order ({epochs, unfreeze, lr, lr_mult} each)")
    lr_mult: NonNegative | list[NonNegative] = _f(
        1.0, "discriminative LR: a float m gives stage i of n (0-based) lr * m**(n - i); a list gives one "
        "multiplier per stage, shallow to deep; the head always gets lr")
    bn: Literal["train", "freeze"] = _f(
        "train", "freeze: every backbone norm layer keeps its statistics and affine parameters (frozen stages "
        "always do)")

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
    patience: int = _f(5, "epochs without improvement of train.monitor before stopping", gt=0,
                       le=MAX_EPOCHS)
    min_delta: float = _f(0.0, "smallest change that counts as an improvement", ge=0.0)


class TrainConfig(_Strict):
    epochs: int = _f(10, "epochs (staged: the sum of the phases unless set; set, the phases scale to it)", gt=0,
                     le=MAX_EPOCHS)
    max_steps: int | None = _f(None, "stop after this many optimizer steps (fewer than train.epochs give: the phases "
                               "and the LR schedule scale to it)", gt=0, le=MAX_STEPS)
    batch_size: int = _f(32, "images per batch (per optimizer step: batch_size * accumulate)", gt=0, le=MAX_BATCH)
    lr: float = _f(1e-3, "base learning rate of the head (backbone stages: times finetune.lr_mult)", gt=0.0)
    weight_decay: float = _f(1e-4, "weight decay of trainable parameters (frozen ones get none)", ge=0.0)
    optimizer: Literal["sgd", "adam", "adamw"] = _f("adamw", "optimizer")
    momentum: float = _f(0.9, "SGD momentum", ge=0.0, lt=1.0)
    schedule: Literal["constant", "cosine", "step"] = _f("cosine", "LR schedule within each phase (cosine: decays to near 0 "
                                                          "over the phase's steps)")
    warmup_steps: int = _f(0, "linear warm-up steps at the start of each phase", ge=0, le=MAX_STEPS)
    warmup_max_fraction: float = _f(0.2, "warm-up takes at most this share of a phase's steps (a short phase is not "
                                    "spent warming up)", ge=0.0, le=1.0)
    step_epochs: int = _f(10, "schedule step: multiply the LR by step_gamma every step_epochs epochs", gt=0,
                          le=MAX_EPOCHS)
    step_gamma: float = _f(0.1, "schedule step: the factor", gt=0.0)
    device: Literal["auto", "cpu", "cuda"] = _f("auto", "auto: CUDA when available, else CPU")
    amp: bool = _f(True, "mixed precision on CUDA: bf16 where supported, else fp16 with a gradient scaler")
    accumulate: int = _f(1, "micro-batches per optimizer step (gradient accumulation)", gt=0,
                         le=MAX_BATCH)
    sync_bn: bool = _f(False, "distributed runs (torchrun): batch-norm statistics over all ranks (SyncBatchNorm; "
                       "CUDA only); ignored in one process")
    clip_grad: float | None = _f(None, "clip the global gradient norm to this value", gt=0.0)
    skip_nonfinite: bool = _f(False, "skip an optimizer step whose loss is NaN or infinite (counted in log.csv) "
                              "instead of stopping with the step and its images named")
    seed: int = _f(0, "seeds torch, numpy, python and every sample's augmentation", ge=0,
                   le=MAX_SEED)
    deterministic: bool = _f(False, "deterministic algorithms (slower on GPU; exact resume on CPU)")
    workers: int = _f(2, "DataLoader worker processes (decode and augment)", ge=0, le=MAX_WORKERS)
    overfit_batches: int = _f(0, "sanity mode: train and validate on the same N fixed, unaugmented batches",
                              ge=0, le=MAX_EPOCHS)
    monitor: str | None = _f(None, "val metric that picks best.pt and drives early stopping (default per task: "
                             "classification accuracy)")
    monitor_mode: Literal["max", "min"] = _f("max", "whether a larger monitor value is better")
    early_stopping: EarlyStoppingConfig | None = _f(None, "stop when train.monitor stops improving ({patience, min_delta})")
    checkpoint_every: int | None = _f(None, "also write last.pt every N optimizer steps inside an epoch, so a killed "
                                      "run resumes from there (exactly, with train.deterministic on CPU)", gt=0,
                                      le=MAX_STEPS)
    compile: bool = _f(False, "classification, segmentation: torch.compile the training forward and backward "
                       "(the first steps compile; pays off on long runs with fixed shapes)")
    log_every: int = _f(20, "optimizer steps between loss readings on the progress bar (each syncs the device)",
                        gt=0, le=MAX_STEPS)
    progress: bool = _f(True, "progress bars")
    progress_seconds: int = _f(60, "with progress bars off: a progress line (step, loss, img/s, ETA) every this many "
                               "seconds of training; 0: none", ge=0, le=MAX_STEPS)


class RunConfig(_Strict):
    dir: Path = _f(Path("runs/default"), "run directory: config.yaml, log.csv, metrics.json, checkpoints/")
    tensorboard: bool = _f(False, "TensorBoard event files in <run.dir>/tensorboard: every log.csv column per epoch "
                           "and a few val images drawn with the predictions (needs the track extra)")
    mlflow: str | None = _f(None, "MLflow tracking store: a local folder (an SQLite store mlflow.db and artifacts/ in "
                            "it), a sqlite:/// URI or an http(s):// server; logs the config as params, the log.csv "
                            "columns per epoch, the report and best checkpoint at the end (needs the track extra)")

    @field_validator("mlflow")
    @classmethod
    def _known_store(cls, uri: str | None) -> str | None:
        from visiontl.tracking import check_mlflow_uri

        return None if uri is None else check_mlflow_uri(uri)


class Config(_Strict):
    task: Task = _f("classification", "classification, detection, segmentation or instance_segmentation")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the network")
    data: DataConfig = Field(default_factory=DataConfig, description="the dataset")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="what trains, when, at which LR")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the loop")
    run: RunConfig = Field(default_factory=RunConfig, description="where outputs go")

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.task not in IMPLEMENTED_TASKS:
            raise ValueError(f"task {self.task!r} is not available yet; available: {', '.join(IMPLEMENTED_TASKS)}")
        if self.model.arch is None:
            self.model.arch = DEFAULT_ARCH[self.task]
        if self.model.arch not in TASK_ARCHS[self.task]:
            raise ValueError(f"model.arch {self.model.arch!r} does not fit task {self.task!r}; use one of "
                             f"{', '.join(TASK_ARCHS[self.task])}")
        if "format" not in self.data.model_fields_set and self.task != "classification":
            self.data.format = TASK_FORMATS[self.task][0]
        if self.data.format not in TASK_FORMATS[self.task]:
            raise ValueError(f"data.format {self.data.format!r} does not fit task {self.task!r}; use one of "
                             f"{', '.join(TASK_FORMATS[self.task])}")
        if self.train.compile and self.task in ("detection", "instance_segmentation"):
            raise ValueError("train.compile is for classification and segmentation: torchvision's detectors change "
                             "shapes and control flow per image, so compiling them recompiles instead of speeding up")
        if self.data.augment_on == "device" and self.task not in ("classification", "segmentation"):
            raise ValueError(f"data.augment_on 'device' is for classification and segmentation, not task {self.task!r}: "
                             "detection keeps its boxes in the CPU workers' augmentation; use data.augment_on cpu")
        if self.data.augment_on == "device" and self.task == "segmentation" and self.data.augment == "strong":
            raise ValueError("data.augment_on 'device' has no device version of the 'strong' preset's blur; use "
                             "data.augment standard, or data.augment_on cpu")
        if self.task != "classification" and self.model.head != "linear":
            raise ValueError(f"model.head {self.model.head!r} is a classification head; task {self.task!r} uses model.arch")
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
        if self.train.monitor is None:
            self.train.monitor = DEFAULT_MONITOR[self.task]
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict (paths as strings): what run dirs and checkpoints store."""
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------------------------------------
# Loading


# A config is a few KB; the largest legitimate one lists the class names of a big dataset (ImageNet-21k's 21,841
# names are ~0.4 MB as a YAML list). A larger file is refused before it is parsed: PyYAML builds ~1 MB of YAML
# a second, so an unbounded file would hold the command for minutes before any check could name the problem.
MAX_CONFIG_BYTES = 2**20


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3). Values are parsed as YAML, so types come out right."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{printable(text, 200)}' is not of the form key.path=value")
    try:
        value = safe_yaml.load(raw) if raw.strip() else None
    except safe_yaml.YamlRefused as exc:  # valid YAML, refused (duplicate keys, nesting, a 5000-digit integer)
        raise ConfigError(f"override '{printable(text, 80)}': {exc}") from None
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


# Keys of the finetune section that one strategy alone reads: a strategy given as an override drops them.
STRATEGY_KEYS = {"stages": "staged", "freeze_stages": "partial"}


def compose_strategy(raw: dict[str, Any], overridden: set[str]) -> str | None:
    """Make a `finetune.strategy` given as an override replace the recipe's fine-tuning (`raw`: the recipe with
    the overrides applied; `overridden`: the dotted keys they set). The keys only the recipe's strategy reads
    (its `stages`, its `freeze_stages`) are dropped unless overridden too, and the LR does not change source
    silently: without a train.lr of the recipe's or the overrides', train.lr becomes the LR of the recipe's
    phase nearest the new strategy (the first head-only phase for feature_extraction, else the last phase).
    Logs (a warning, so that it shows without set-up) and returns the one line saying what was dropped and
    where the LR comes from; None when nothing was dropped."""
    ft = raw.get("finetune")
    if "finetune.strategy" not in overridden or not isinstance(ft, dict):
        return None
    strategy = ft.get("strategy")
    dropped = {key: ft.pop(key) for key, owner in STRATEGY_KEYS.items()
               if key in ft and owner != strategy and f"finetune.{key}" not in overridden}
    if not dropped:
        return None
    what = ", ".join(f"finetune.{key} ({len(v)} phases)" if key == "stages" and isinstance(v, list) else
                     f"finetune.{key}={v}" for key, v in dropped.items())
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    if "train.lr" in overridden:
        source = f"train.lr {train.get('lr')} as given"
    elif "lr" in train:
        source = f"train.lr {train['lr']} from the recipe"
    else:
        source = _phase_lr(raw, dropped.get("stages"), strategy)
    note = printable(f"finetune.strategy={strategy} replaces the recipe's fine-tuning: dropped {what}; {source}", 300)
    logging.getLogger("visiontl").warning("%s", note)
    return note


def _phase_lr(raw: dict[str, Any], stages: Any, strategy: Any) -> str:
    """train.lr from the recipe's phase nearest `strategy` (see compose_strategy), set in `raw`; what it says."""
    phases = [p for p in stages if isinstance(p, dict)] if isinstance(stages, list) else []
    head_only = [i for i, p in enumerate(phases) if p.get("unfreeze") == 0]
    index = head_only[0] if strategy == "feature_extraction" and head_only else len(phases) - 1
    lr = phases[index].get("lr") if phases else None
    if lr is None:
        return f"train.lr {TrainConfig.model_fields['lr'].default} (the default: the recipe's phases gave none)"
    raw.setdefault("train", {})["lr"] = lr
    return f"train.lr {lr} from the recipe's phase {index + 1}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The sections of a config file, with its `base:` chain merged in (see merge_recipe)."""
    return _load_with_bases(Path(path), ())


def _load_with_bases(path: Path, children: tuple[Path, ...]) -> dict[str, Any]:
    raw = _read_yaml(path)
    if BASE_KEY not in raw:
        return raw
    base = raw.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {BASE_KEY}: must be the path of another config file (relative to this one), "
                          f"got {printable(repr(base), 80)}")
    base_path = path.parent / base
    chain = (*children, path.resolve())
    if base_path.resolve() in chain:
        loop = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise ConfigError(printable(f"{path}: {BASE_KEY}: {base} makes a cycle ({loop})", 400))
    if not base_path.is_file():
        raise ConfigError(printable(f"{path}: {BASE_KEY}: {base} not found (looked for {base_path})", 400))
    return merge_recipe(_load_with_bases(base_path, chain), raw)


# A config file may name the recipe it builds on; its own keys then change only what they name.
BASE_KEY = "base"


def merge_recipe(base: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """`recipe` on top of `base`: sections merge key by key at every depth, while a value that is not a
    mapping (a number, a string, a list such as finetune.stages or data.classes) replaces the base's whole.
    A recipe naming its own finetune.strategy drops the base's keys that only the base's strategy reads (its
    stages, its freeze_stages), as a strategy given on the command line does (compose_strategy): a staged
    recipe on a partial base does not inherit freeze_stages, nor a partial one the base's phases."""
    merged = dict(base)
    for key, value in recipe.items():
        old = merged.get(key)
        merged[key] = merge_recipe(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    ft, own = merged.get("finetune"), recipe.get("finetune")
    if isinstance(ft, dict) and isinstance(own, dict) and "strategy" in own:
        for key, owner in STRATEGY_KEYS.items():
            if owner != own["strategy"] and key not in own:
                ft.pop(key, None)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: refused: larger than {MAX_CONFIG_BYTES:,} bytes, which no config needs "
                          "(a config is a few KB; a list of 20,000 class names ~0.4 MB)")
    try:
        raw = safe_yaml.load(data.decode("utf-8"))
    except safe_yaml.YamlRefused as exc:
        raise ConfigError(f"{path}: {exc}") from None
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
    compose_strategy(raw, {".".join(parse_override(o)[0]) for o in overrides or []})
    return build_config(raw, source=str(path) if path is not None else "config")


def with_absolute_paths(config: Config) -> Config:
    """A copy whose data.root is absolute, so the run's stored config (config.yaml, checkpoints) finds the
    data from any working folder; the other data paths are relative to data.root and follow it."""
    import os

    if config.data.root is None or config.data.root.is_absolute():
        return config
    out = config.model_copy(deep=True)
    out.data.root = Path(os.path.abspath(config.data.root))
    return out


def save_config(config: Config, path: Path) -> None:
    from visiontl.atomic import atomic_write_text

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


_SHORT_REPR = reprlib.Repr()  # a bounded repr: the value in an error message may be huge (or alias-shared)
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict, _SHORT_REPR.maxstring = 2, 6, 6, 60


_UNION_LABELS = ("function-after", "function-before", "constrained-int", "constrained-float", "int", "float", "str",
                 "bool")


def _is_union_label(part: Any) -> bool:
    """pydantic names the member of a union it tried (`float`, `list[float]`) and validator wrappers in an error's
    location; the user's key is the location without them."""
    return isinstance(part, str) and (part in _UNION_LABELS or re.fullmatch(r"[a-z-]+\[.*\]", part) is not None)


def describe_validation_error(exc: ValidationError) -> str:
    errors = exc.errors()
    # of the errors a union collects (one per member), the value's own problem (not finite, too large) says more
    # than "not a valid list" from a member the value was never meant to be
    err = next((e for e in errors if not e["type"].endswith("_type")), errors[0])
    loc = tuple(p for p in err["loc"] if not _is_union_label(p))
    key = printable(".".join(str(p) for p in loc), 120)  # a key from the file: escaped and cut, one line
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        valid = sorted(owner.model_fields) if owner else []
        hint = difflib.get_close_matches(str(loc[-1])[:100], valid, n=1)
        suggestion = f" (did you mean {'.'.join([*map(str, loc[:-1]), hint[0]])!r}?)" if hint else ""
        return f"unknown key '{key}'{suggestion}; valid keys here: {', '.join(valid)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if "input" in err and kind not in ("missing", "value_error") and not isinstance(err["input"], dict):
        msg = f"{msg} (got {_SHORT_REPR.repr(err['input'])})"
    return f"{key}: {msg}" if key else msg


# ----------------------------------------------------------------------------------------------------------
# Reference documentation, generated from the schema (docs/config.md)


def config_reference() -> str:
    lines = ["# Config reference", "",
             "Generated from `visiontl/config.py` by `python tools/config_reference.py`; the schema is the only home",
             "of every default. Override any key on the command line as `section.key=value` (values parse as YAML).",
             "",
             f"A config file is at most {MAX_CONFIG_BYTES // 2**20} MiB and writes each key once per mapping (a",
             "second `train:` is refused, not merged). Every float is finite (`inf`, `.nan` and `1e400` are refused)",
             "and every number stays within the bounds in brackets: beyond them a value can only be a mistake that",
             "would fail later, deep in torch. Image sides (data.image_size, model.min_size, max_size, ssd_size,",
             f"anchor sizes) stop at {MAX_IMAGE_SIDE:,} pixels: training one image of that side through the lightest",
             "backbone (mobilenet_v3_small, ~240 bytes of activations per input pixel in bf16) already needs ~64 GB,",
             "and twice the side (~260 GB) more than any GPU holds. Seeds are 0 to 2**63 - 1 (a signed 64-bit",
             f"integer; torch's generators take 64 bits); step counts stop at {MAX_STEPS:,}.",
             "",
             f"`{BASE_KEY}: other.yaml` at the top of a file builds it on another recipe (a path relative to the file;",
             "bases chain): sections merge key by key, any other value (a list too) replaces the base's, and a",
             "finetune.strategy of the file's own drops the base's stages / freeze_stages. `visiontl config show FILE`",
             "prints the merged result, which is what a run stores. configs/starting/ holds one recipe per task.",
             ""]

    def section(model: type[BaseModel], prefix: str) -> None:
        rows = []
        nested = []
        for name, field in model.model_fields.items():
            sub = _first_model(field.annotation)
            if sub is not None and prefix == "":
                nested.append((name, sub, field.description))
                continue
            default = field.get_default(call_default_factory=True)
            default = "required" if default is PydanticUndefined else f"`{_yaml_value(default)}`"
            doc = (field.description or "").replace("|", "\\|")
            kind = _type_name(field.annotation) + _bounds(field.annotation, field.metadata)
            rows.append(f"| `{prefix}{name}` | {kind.replace('|', chr(92) + '|')} | {default} | {doc} |")
        if rows:
            lines.extend(["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""])
        for name, sub, doc in nested:
            lines.extend([f"## `{name}`: {doc}", ""])
            section(sub, f"{name}.")

    section(Config, "")
    lines.extend(["## A phase of `finetune.stages`", ""])
    section(PhaseConfig, "")
    return "\n".join(lines).rstrip() + "\n"


def _yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Path):
        value = str(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(annotation: Any, metadata: list[Any]) -> str:
    """The field's bounds (its own, or its items'), as ` (> 0, ≤ 16384)`."""
    found: list[Any] = list(metadata)
    stack = [annotation]
    while stack:
        node = stack.pop()
        args = get_args(node)
        if get_origin(node) is Annotated:
            found.extend(m for info in args[1:] for m in getattr(info, "metadata", [info]))
            args = args[:1]
        stack.extend(args)
    signs = {"Gt": "> ", "Ge": "≥ ", "Lt": "< ", "Le": "≤ "}  # pydantic's constraints (annotated_types)
    parts = []
    for bound in found:
        name = type(bound).__name__
        if name in signs:
            value = getattr(bound, name.lower())
            parts.append(signs[name] + (f"{value:,}" if isinstance(value, int) else str(value)))
    parts = list(dict.fromkeys(parts))  # the same bound on every item of a tuple once
    return f" ({', '.join(parts)})" if parts else ""
