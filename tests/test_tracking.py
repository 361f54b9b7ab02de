"""Experiment tracking: TensorBoard event files that read back equal to log.csv, an MLflow run in a local
store with the config as params, the epochs as metrics and the run's files as artifacts; bad stores and
missing packages refused before training; a failing backend never stops a run."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
from pathlib import Path

import pytest

from conftest import resnet18_config, tiny_config
from visiontl.config import build_config
from visiontl.engine.trainer import train
from visiontl.errors import ConfigError


def read_log(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def numeric_columns(rows: list[dict]) -> list[str]:
    return [k for k in rows[0] if k != "epoch" and all(r[k] not in ("", None) for r in rows)]


@pytest.fixture(scope="module")
def tracked_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One two-epoch run with TensorBoard and MLflow both on: (run directory, MLflow store folder)."""
    pytest.importorskip("tensorboard", reason="the track extra (pip install 'visiontl[track]') is not installed")
    pytest.importorskip("mlflow", reason="the track extra (pip install 'visiontl[track]') is not installed")
    pytest.importorskip("sqlalchemy", reason="the track extra (pip install 'visiontl[track]') is not installed")
    base = tmp_path_factory.mktemp("tracked")
    run, store = base / "run", base / "mlstore"
    # resnet18: the MLflow test reads its name back from the run's params
    train(build_config(resnet18_config(synthetic_root, run, run={"dir": str(run), "tensorboard": True, "mlflow": str(store)},
                                       train={"epochs": 2, "overfit_batches": 1})))  # one batch an epoch: fast
    return run, store


def test_tensorboard_events_equal_log_csv(tracked_run: tuple[Path, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tracked_run
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    rows = read_log(run)
    columns = numeric_columns(rows)
    assert {"train_loss", "val_loss", "accuracy", "macro_f1", "lr/head", "lr/backbone.stage1"} <= set(columns)
    assert set(columns) <= set(events.Tags()["scalars"])
    for key in columns:
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2], key
        for event, row in zip(logged, rows):
            assert event.value == pytest.approx(float(row[key]), rel=1e-5, abs=1e-7), key
    pictures = [t for t in events.Tags()["images"] if t.startswith("predictions/")]
    assert len(pictures) == 4
    assert [e.step for e in events.Images(pictures[0])] == [1, 2]
    assert events.Images(pictures[0])[0].width > 0


def test_mlflow_run_has_params_metrics_and_artifacts(tracked_run: tuple[Path, Path], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run, store = tracked_run
    state = json.loads((run / "mlflow.json").read_text())
    assert state["tracking_uri"] == f"sqlite:///{store.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    record = client.get_run(state["run_id"])
    assert record.info.status == "FINISHED" and record.info.run_name == "run"
    params = record.data.params
    assert params["train.lr"] == "0.003" and params["model.backbone"] == "resnet18" and params["task"] == "classification"
    assert params["train.epochs"] == "2" and params["run.mlflow"] == str(store) and params["run.tensorboard"] == "true"
    rows = read_log(run)
    for key in numeric_columns(rows):
        history = client.get_metric_history(state["run_id"], key)
        assert [m.step for m in history] == [1, 2], key
        for metric, row in zip(history, rows):
            assert metric.value == pytest.approx(float(row[key]), rel=1e-5, abs=1e-9), key
    top = {a.path for a in client.list_artifacts(state["run_id"])}
    assert {"report.html", "metrics.json", "log.csv", "config.yaml", "checkpoints"} <= top
    assert [a.path for a in client.list_artifacts(state["run_id"], "checkpoints")] == ["checkpoints/best.pt"]
    local = Path(client.download_artifacts(state["run_id"], "metrics.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text())["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]
    assert (store / "artifacts").is_dir()  # artifacts beside the store, not in the working directory


def test_bad_mlflow_uri_is_refused_by_the_config(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run\.mlflow: 's3://bucket/x' is not a local folder"):
        build_config(tiny_config(synthetic_root, tmp_path / "run", run={"mlflow": "s3://bucket/x"}))


def test_unusable_store_stops_before_training(synthetic_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="the track extra (pip install 'visiontl[track]') is not installed")
    pytest.importorskip("sqlalchemy", reason="the track extra (pip install 'visiontl[track]') is not installed")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    run = tmp_path / "run"
    cfg = build_config(tiny_config(synthetic_root, run, run={"dir": str(run), "mlflow": f"sqlite:///{blocker}/m.db"}))
    with pytest.raises(ConfigError, match=r"^run\.mlflow: cannot open the MLflow store") as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not (run / "checkpoints").exists() and not (run / "log.csv").exists()


def test_missing_package_is_one_line_before_training(synthetic_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    run = tmp_path / "run"
    cfg = build_config(tiny_config(synthetic_root, run, run={"dir": str(run), "tensorboard": True}))
    with pytest.raises(ConfigError, match=r"^run\.tensorboard: needs the package\(s\) tensorboard.*visiontl\[track\]"):
        train(cfg)
    assert not (run / "log.csv").exists()


def test_a_failing_backend_warns_once_and_the_run_finishes(synthetic_root: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("tensorboard", reason="the track extra (pip install 'visiontl[track]') is not installed")
    from visiontl import tracking

    def broken(self, epoch, scalars):
        raise OSError("disk full")

    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking.TensorBoardLog, "log_epoch", broken)
        with caplog.at_level(logging.WARNING, logger="visiontl"):
            metrics = train(build_config(tiny_config(synthetic_root, run, run={"dir": str(run), "tensorboard": True},
                                                     train={"epochs": 2, "overfit_batches": 1})))
    warnings = [r.getMessage() for r in caplog.records if "tracking stopped" in r.getMessage()]
    assert warnings == ["tensorboard tracking stopped (OSError: disk full); the run goes on and its run directory "
                        "is complete"]
    assert "accuracy" in metrics and len(read_log(run)) == 2 and (run / "report.html").is_file()


def test_tracking_off_imports_nothing(synthetic_root: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from visiontl.config import build_config; from visiontl.engine.trainer import train; "
            "from visiontl.tracking import Tracker; import conftest; "
            f"cfg = build_config(conftest.tiny_config({str(synthetic_root)!r}, {str(tmp_path / 'r')!r})); "
            f"t = Tracker.open(cfg, cfg.run.dir, True); t.log_epoch(1, {{'train_loss': 1.0}}); t.finish(cfg.run.dir); "
            "print(t.backends, sorted(m for m in ('mlflow', 'tensorboard', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[] []"


def test_flatten_and_metric_keys() -> None:
    from visiontl.tracking import check_mlflow_uri, flatten, metric_key, mlflow_store

    assert flatten({"a": {"b": 1, "c": [1, 2], "d": None, "e": "x"}}) == {"a.b": "1", "a.c": "[1, 2]", "a.d": "null",
                                                                           "a.e": "x"}
    assert metric_key("IoU/traffic light (x)") == "IoU/traffic light _x_"
    assert mlflow_store("https://mlflow.example:5000") == ("https://mlflow.example:5000", None)
    uri, artifacts = mlflow_store("sqlite:////tmp/store/m.db")
    assert uri == "sqlite:////tmp/store/m.db" and artifacts == "file:///tmp/store/artifacts"
    for ok in ("runs/mlflow", "file:///tmp/x", "sqlite:///m.db", "http://localhost:5000", "C:\\mlflow"):
        assert check_mlflow_uri(ok) == ok
    for bad in ("s3://b/x", "postgresql://u@h/db", "sqlite:m.db", " "):
        with pytest.raises(ValueError, match="run.mlflow"):
            check_mlflow_uri(bad)
