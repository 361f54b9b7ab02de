"""Optional experiment tracking: TensorBoard event files and MLflow runs, fed by the trainer's epoch rows.

Neither is needed for a run. A backend is imported only when the config asks for it (`run.tensorboard`,
`run.mlflow`), and a missing package or a store that cannot be opened stops the run before training, in one
line. Once training runs, a tracking failure never stops it: that backend is switched off with one warning
line and the run directory, the record of truth, is written as always. Only rank 0 tracks.

What each backend gets (docs/run-directory.md):
- per epoch, every numeric log.csv column under its own name (`train_loss`, `lr/head`, `bbox/AP`, ...), at
  step = epoch;
- TensorBoard, per epoch: the first few val images drawn with the model's predictions (`predictions/<i>`);
- MLflow: the resolved config flattened into params (`train.lr`, `model.backbone`, ...) at the start; the
  report, metrics, log, config and best checkpoint as artifacts at the end.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from visiontl.errors import ConfigError

log = logging.getLogger("visiontl")

IMAGES_PER_EPOCH = 4
MLFLOW_EXPERIMENT = "visiontl"  # unless MLFLOW_EXPERIMENT_NAME names another, as MLflow's own tools read it
MLFLOW_ARTIFACTS = ("report.html", "report.md", "metrics.json", "log.csv", "config.yaml", "checkpoints/best.pt")
MLFLOW_PARAM_CHARS = 6000  # MLflow's limit on a param value
INSTALL_HINT = "pip install 'visiontl[track]'"


# ----------------------------------------------------------------------------------------------------------
# Where an MLflow store is


def check_mlflow_uri(uri: str) -> str:
    """`run.mlflow` as written, if it names a store visiontl can use (called by the config schema)."""
    scheme = _scheme(uri)
    if not uri.strip():
        raise ValueError("run.mlflow: give a local folder, a sqlite:///FILE.db URI or an http(s):// server")
    if scheme in (None, "file", "http", "https") or (scheme == "sqlite" and uri.startswith("sqlite:///")):
        return uri
    raise ValueError(f"run.mlflow: {uri!r} is not a local folder, a sqlite:///FILE.db URI or an http(s):// server")


def mlflow_store(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment). A local folder becomes an SQLite store in it,
    with the artifacts beside it: MLflow 3 refuses its old file store unless told otherwise."""
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        return uri, None  # the server decides where artifacts go
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):])
        return uri, (db.resolve().parent / "artifacts").as_uri()
    folder = Path(uri.removeprefix("file://") if scheme == "file" else uri).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def _scheme(uri: str) -> str | None:
    """The URI scheme, or None for a plain path (a Windows drive letter is a path, not a scheme)."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]+):", uri)
    return match.group(1).lower() if match else None


# ----------------------------------------------------------------------------------------------------------
# The tracker the trainer talks to


class Tracker:
    """The configured backends behind one small interface; with none configured every call does nothing."""

    def __init__(self, backends: list[Any] | None = None):
        self.backends = list(backends or [])

    @classmethod
    def open(cls, cfg: Any, run_dir: Path, main: bool, resumed_epoch: int | None = None) -> Tracker:
        """Check the packages on every rank and open the stores on rank 0 (`main`), before training: a missing
        package or an unusable store is a ConfigError here, never a failure after hours of training."""
        run = cfg.run
        cls.require(cfg)
        if not main:
            return cls()
        backends: list[Any] = []
        if run.tensorboard:
            backends.append(TensorBoardLog(Path(run_dir) / "tensorboard", resumed_epoch))
        if run.mlflow:
            backends.append(MlflowLog(cfg, Path(run_dir), resumed_epoch))
        return cls(backends)

    @staticmethod
    def require(cfg: Any) -> None:
        """The packages the configured trackers need (a ConfigError naming them), checked without writing."""
        run = cfg.run
        if run.tensorboard:
            _require(("tensorboard",), "run.tensorboard")
        if run.mlflow:
            store, _ = mlflow_store(run.mlflow)
            _require(("mlflow", "sqlalchemy", "alembic") if store.startswith("sqlite:") else ("mlflow",), "run.mlflow")

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """One epoch's log.csv row (numbers only; `epoch` is the step)."""
        scalars = {k: float(v) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for backend in list(self.backends):
            self._safely(backend, lambda b: b.log_epoch(epoch, scalars))

    def log_images(self, epoch: int, task: Any, model: Any, dataset: Any, device: Any, autocast: Any,
                   classes: list[str]) -> None:
        """The first IMAGES_PER_EPOCH val images drawn with the model's predictions, for the backends that
        take pictures (drawn only when one does)."""
        takers = [b for b in self.backends if hasattr(b, "log_images")]
        if not takers:
            return
        indices = list(range(min(IMAGES_PER_EPOCH, len(dataset))))
        for backend in takers:
            self._safely(backend, lambda b: b.log_images(epoch, indices, task.render_examples(
                model, dataset, indices, device, autocast, classes)))

    def finish(self, run_dir: Path) -> None:
        for backend in list(self.backends):
            self._safely(backend, lambda b: b.finish(Path(run_dir)))
        self.backends = []

    def _safely(self, backend: Any, call: Any) -> None:
        try:
            call(backend)
        except Exception as exc:  # noqa: BLE001 (tracking is a copy of the run directory: never fatal)
            self.backends.remove(backend)
            first = (str(exc).strip().splitlines() or [""])[0]
            log.warning("%s tracking stopped (%s: %s); the run goes on and its run directory is complete",
                        backend.name, type(exc).__name__, first[:300])


def _require(packages: tuple[str, ...], key: str) -> None:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"{key}: needs the package(s) {', '.join(missing)}, which are not installed; "
                          f"{INSTALL_HINT}, or turn {key} off")


# ----------------------------------------------------------------------------------------------------------
# Backends


class TensorBoardLog:
    name = "tensorboard"

    def __init__(self, folder: Path, resumed_epoch: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops events after its checkpoint's epoch, as log.csv drops their rows.
        purge = resumed_epoch + 1 if resumed_epoch is not None else None
        self.writer = SummaryWriter(str(folder), purge_step=purge)

    def log_epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()  # readable after every epoch, also when the run dies later

    def log_images(self, epoch: int, indices: list[int], pictures: list[Any]) -> None:
        import numpy as np

        for index, picture in zip(indices, pictures):
            self.writer.add_image(f"predictions/{index}", np.asarray(picture.convert("RGB")), epoch, dataformats="HWC")
        self.writer.flush()

    def finish(self, run_dir: Path) -> None:
        self.writer.close()


class MlflowLog:
    name = "mlflow"

    def __init__(self, cfg: Any, run_dir: Path, resumed_epoch: int | None):
        from visiontl.atomic import atomic_write_json

        for noisy in ("mlflow", "alembic"):  # table creation and migrations log at INFO on every new store
            logging.getLogger(noisy).setLevel(logging.WARNING)
        uri = cfg.run.mlflow
        tracking_uri, artifacts = mlflow_store(uri)
        try:
            from mlflow.tracking import MlflowClient

            if tracking_uri.startswith("sqlite:///"):
                Path(tracking_uri[len("sqlite:///"):]).resolve().parent.mkdir(parents=True, exist_ok=True)
            self.client = MlflowClient(tracking_uri=tracking_uri)
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", MLFLOW_EXPERIMENT)
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(name, artifact_location=artifacts))
            self.run_id = self._previous_run(run_dir, tracking_uri) if resumed_epoch is not None else None
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={
                    "visiontl.run_dir": str(run_dir.resolve()), "visiontl.task": cfg.task})
                self.run_id = run.info.run_id
                self._log_params(cfg.to_dict())
        except Exception as exc:  # noqa: BLE001 (any failure to open the store: one line, before training)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"run.mlflow: cannot open the MLflow store {uri!r} ({first[:300]})") from None
        atomic_write_json(run_dir / "mlflow.json", {"tracking_uri": tracking_uri, "experiment_id": experiment_id,
                                                    "run_id": self.run_id})
        self.finished = False
        atexit.register(self._abandoned)

    @staticmethod
    def _previous_run(run_dir: Path, tracking_uri: str) -> str | None:
        """The MLflow run a resumed run continues: the one its run directory recorded, in the same store."""
        import json

        try:
            state = json.loads((run_dir / "mlflow.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state.get("run_id") if state.get("tracking_uri") == tracking_uri else None

    def _log_params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, v[:MLFLOW_PARAM_CHARS]) for k, v in flatten(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log_epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), v, now, epoch) for k, v in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path) -> None:
        for name in MLFLOW_ARTIFACTS:
            path = run_dir / name
            if path.is_file():
                folder = str(Path(name).parent) if "/" in name else None
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
        self.client.set_terminated(self.run_id, status="FINISHED")
        self.finished = True

    def _abandoned(self) -> None:
        """At interpreter exit: a run that never finished is marked FAILED rather than left RUNNING."""
        if not self.finished:
            try:
                self.client.set_terminated(self.run_id, status="FAILED")
            except Exception:  # noqa: BLE001 (best effort on the way out)
                pass


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.001}} -> {"train.lr": "0.001"}; lists and None as YAML flow text."""
    import yaml

    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, str):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return flat


def metric_key(name: str) -> str:
    """MLflow accepts letters, digits, _ - . space / in metric names; anything else becomes _."""
    return re.sub(r"[^\w\-. /]", "_", name)
