"""The trainer end to end on tiny synthetic data: run directory, log, overfit mode, accumulation,
early stopping, exact resume after SIGKILL, evaluate and predict."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import resnet18_config, tiny_config  # resnet18 where a test counts its 512 features
from visiontl.config import build_config
from visiontl.data.synthetic import make_imagefolder
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.engine.trainer import train


def read_log(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_directory_contents(synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = build_config(tiny_config(synthetic_root, run, train={"epochs": 2}))
    metrics = train(cfg)
    assert (run / "config.yaml").is_file() and yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    rows = read_log(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    expected = {"epoch", "step", "phase", "trainable_params", "lr/head", "lr/backbone.stage1", "train_loss", "val_loss",
                "accuracy", "macro_f1", "seconds", "train_seconds", "img_per_s"}
    assert expected <= set(rows[0])
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    assert {"macro_f1", "f1/class_0", "confusion_matrix", "best"} <= set(saved)
    assert sum(map(sum, saved["confusion_matrix"])) == 12
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run / "checkpoints" / name)
        assert {"model", "optimizer", "epoch", "step", "config", "classes", "rng", "scheduler"} <= set(ckpt)
        assert ckpt["classes"] == ["class_0", "class_1", "class_2"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2
    assert not list(run.rglob("*.tmp"))


def test_overfit_batches_fits_its_own_labels(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = build_config(resnet18_config(synthetic_root, tmp_path / "run", train={"overfit_batches": 1, "epochs": 25, "lr": 0.01,
                                                                           "batch_size": 6}, data={"augment": "none"}))
    metrics = train(cfg)
    assert metrics["num_samples"] == 6  # validated on the same fixed batch
    assert metrics["accuracy"] == 1.0


def test_accumulation_counts_optimizer_steps(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = build_config(tiny_config(synthetic_root, tmp_path / "run", train={"epochs": 1, "batch_size": 4, "accumulate": 2}))
    train(cfg)
    # 24 images / batch 4 = 6 micro-batches = 3 optimizer steps
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 3


def test_max_steps_and_early_stopping(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = build_config(tiny_config(synthetic_root, tmp_path / "a", train={"epochs": 5, "max_steps": 4, "batch_size": 8}))
    train(cfg)
    assert load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["step"] == 4
    # lr 0 never improves after the first epoch: patience 2 stops after epoch 3
    cfg = build_config(tiny_config(synthetic_root, tmp_path / "b", train={"epochs": 6, "lr": 1e-12, "schedule": "constant",
                                                                         "early_stopping": {"patience": 2, "min_delta": 0.5}}))
    train(cfg)
    assert len(read_log(tmp_path / "b")) == 3


def test_sklearn_heads_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from visiontl.engine.inference import load_trained
    from visiontl.tasks.classification import extract_features

    for head in ("logistic_regression", "linear_svm"):
        run = tmp_path / head
        # random weights are refused for feature extraction; a visiontl checkpoint counts as pretrained
        cfg = build_config(resnet18_config(synthetic_root, run, model={"head": head, "weights": str(pretrained(tmp_path))},
                                       finetune={"strategy": "feature_extraction"}))
        metrics = train(cfg)
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["sklearn_head"]["num_features"] == 512
        assert len(list((run / "features").glob("train-*.pt"))) == 1
        rows = read_log(run)
        assert rows[0]["accuracy"] and int(rows[0]["trainable_params"]) == 512 * 3 + 3

    # The folded linear head reproduces scikit-learn's own decisions.
    loaded = load_trained(tmp_path / "logistic_regression" / "checkpoints" / "best.pt")
    train_set, val_set = loaded.task.datasets(loaded.config, loaded.task.prepare_data(loaded.config), loaded.backbone, augment=False)
    x, y = extract_features(loaded.model, train_set, torch.device("cpu"))
    xv, _ = extract_features(loaded.model, val_set, torch.device("cpu"))
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(x, y)
    ours = loaded.model.head(torch.from_numpy(xv)).softmax(1).detach().numpy()
    assert abs(ours - pipe.predict_proba(xv)).max() < 1e-4


_PRETRAINED: dict[Path, Path] = {}


def pretrained(tmp_path: Path) -> Path:
    """A 'pretrained' resnet18: a short visiontl run on the synthetic set, saved as a checkpoint."""
    if tmp_path not in _PRETRAINED:
        root = make_imagefolder(tmp_path / "pretrain_data", classes=4, train_per_class=6, val_per_class=2, seed=3)
        run = tmp_path / "pretrain"
        train(build_config(resnet18_config(root, run, train={"epochs": 1})))
        _PRETRAINED[tmp_path] = run / "checkpoints" / "last.pt"
    return _PRETRAINED[tmp_path]


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "visiontl", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, **kwargs)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data", classes=3, train_per_class=24, val_per_class=4, size=32, seed=1)
    epochs = 6

    def write_cfg(run: Path) -> Path:
        raw = tiny_config(root, run, model={"dropout": 0.3}, data={"augment": "standard"},
                          train={"epochs": epochs, "batch_size": 4, "deterministic": True, "seed": 7, "workers": 0})
        path = tmp_path / f"{run.name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    full_cfg, killed_cfg = write_cfg(tmp_path / "full"), write_cfg(tmp_path / "killed")
    proc = _cli("train", str(killed_cfg))
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = load_checkpoint(last)["epoch"]
    assert 1 <= killed_at < epochs

    resumed = _cli("train", str(killed_cfg), "--resume")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"resumed from {last} at epoch {killed_at}" in out
    full = _cli("train", str(full_cfg))
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out

    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == epochs and a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["epoch"] for r in read_log(tmp_path / "killed")] == [str(e) for e in range(1, epochs + 1)]


def test_evaluate_and_predict_cli(synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(build_config(tiny_config(synthetic_root, run)))
    ckpt = run / "checkpoints" / "best.pt"
    done = subprocess.run([sys.executable, "-m", "visiontl", "evaluate", str(ckpt), "--out", str(tmp_path / "eval")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["best"]["accuracy"])
    assert "confusion matrix" in done.stdout

    out = tmp_path / "pred.csv"
    done = subprocess.run([sys.executable, "-m", "visiontl", "predict", str(ckpt), str(synthetic_root / "val"), "--out",
                           str(out), "--topk", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and set(rows[0]) == {"file", "class_1", "score_1", "class_2", "score_2"}
    assert all(float(r["score_1"]) >= float(r["score_2"]) for r in rows)
    predicted = sum(r["class_1"] == Path(r["file"]).parent.name for r in rows) / len(rows)
    assert predicted == pytest.approx(metrics["accuracy"])


def test_staged_run_logs_phases_and_group_lrs(synthetic_root: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    stages = [{"epochs": 1, "unfreeze": 0, "lr": 0.01}, {"epochs": 1, "unfreeze": 2, "lr": 0.001}]
    cfg = build_config(resnet18_config(synthetic_root, tmp_path / "run", model={"head": "mlp", "mlp_hidden": 16},
                                   finetune={"strategy": "staged", "stages": stages, "lr_mult": 0.5},
                                   train={"schedule": "constant"}))
    assert cfg.train.epochs == 2
    with caplog.at_level("INFO", logger="visiontl"):
        train(cfg)
    starts = [r.getMessage().partition("; LR ")[2] for r in caplog.records if r.getMessage().startswith("phase ")]
    assert starts == ["backbone.stage1 0, backbone.stage2 0, backbone.stage3 0, backbone.stage4 0, backbone.stage5 0, "
                      "head 0.01",
                      "backbone.stage1 0, backbone.stage2 0, backbone.stage3 0, backbone.stage4 0.00025, "
                      "backbone.stage5 0.0005, head 0.001"]  # every group's LR where each phase starts
    rows = read_log(tmp_path / "run")
    assert [r["phase"] for r in rows] == ["1", "2"]
    head = 512 * 16 + 16 + 16 * 3 + 3
    assert int(rows[0]["trainable_params"]) == head < int(rows[1]["trainable_params"])
    assert float(rows[0]["lr/head"]) == pytest.approx(0.01) and float(rows[0]["lr/backbone.stage5"]) == 0.0
    assert float(rows[1]["lr/backbone.stage5"]) == pytest.approx(0.0005)
    assert float(rows[1]["lr/backbone.stage4"]) == pytest.approx(0.00025)
    assert float(rows[1]["lr/backbone.stage3"]) == 0.0


def test_throughput_bar_total_and_progress_lines(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Slow runs get feedback: throughput keeps its significant digits, the bar counts the batches that will
    run (train.max_steps included), and with bars off a line comes every train.progress_seconds."""
    from visiontl.engine import loop
    from visiontl.engine.resilience import EpochProgress

    assert [loop.rate(v) for v in (1234.4, 57.34, 0.0981, 0.0)] == ["1234", "57.3", "0.0981", "0"]
    assert loop.batches_to_run(66, None, 0, 1) == 66
    assert loop.batches_to_run(66, 20, 0, 1) == 20  # a 20-step run's bar ends at 20, not 19/66
    assert loop.batches_to_run(66, 20, 15, 2) == 10 and loop.batches_to_run(4, 20, 15, 2) == 4
    clock = [100.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    lines = loop.ProgressLines(60, epoch=2, total_batches=40)
    done = EpochProgress(0, torch.zeros(()), 0, 0)
    with caplog.at_level("INFO", logger="visiontl"):
        for batch in range(1, 41):
            clock[0] += 2.0  # 2 s a batch of 4 images
            done.batches, done.seen, done.loss_total = batch, 4 * batch, torch.tensor(0.5 * 4 * batch)
            lines.maybe(done, step=batch)
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 2: batch 30/40 (step 30)  loss 0.5000  2 img/s  epoch ends in 20s"]
    caplog.clear()
    with caplog.at_level("INFO", logger="visiontl"):
        off = loop.ProgressLines(0, epoch=1, total_batches=40)
        clock[0] += 1000
        off.maybe(done, step=40)
    assert not caplog.records


def test_staged_recipe_with_a_budget_below_its_first_phase_still_trains_the_backbone(
        synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """2 + 8 epochs written (3 steps an epoch: 6 + 24 steps), train.max_steps 4: the phases shrink to 1 + 3 steps,
    the backbone trains in the last three, and the log, log.csv, run.json and report say what ran."""
    from visiontl.engine import trainer as trainer_module
    from visiontl.report import write_report

    stages = [{"epochs": 2, "unfreeze": 0, "lr": 0.01}, {"epochs": 8, "unfreeze": "all", "lr": 0.01}]
    cfg = build_config(tiny_config(synthetic_root, tmp_path / "run", finetune={"strategy": "staged", "stages": stages},
                                   train={"max_steps": 4, "warmup_steps": 50, "schedule": "constant"}))
    before: dict[str, torch.Tensor] = {}
    run_epochs = trainer_module._run_epochs

    def snapshot_then_run(loop, state):  # the weights as training starts
        before.update({k: v.clone() for k, v in loop.run.model.state_dict().items()})
        return run_epochs(loop, state)

    monkeypatch.setattr(trainer_module, "_run_epochs", snapshot_then_run)
    with caplog.at_level("INFO", logger="visiontl"):
        train(cfg)
    messages = [r.getMessage() for r in caplog.records]
    assert ("schedule: phase 1, steps 1-1 (1, scaled from 2 epoch(s) = 6 steps): head only, LR 0.01; warm-up 0 steps "
            "(train.warmup_steps 50, capped at 0.2 of the phase)") in messages
    assert any(m.startswith("schedule: phase 2, steps 2-4 (3, scaled from 8 epoch(s) = 24 steps): 5 of 5 backbone")
               for m in messages)
    assert any(m.startswith("phase 2 (steps 2-4, epoch 1): 5 of 5 backbone stages train") for m in messages)
    assert any(m.startswith("epoch 2/2 ") for m in messages)  # the epochs that ran, not train.epochs' 10
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    stage_weights = [k for k in before if k.startswith("backbone.") and before[k].is_floating_point()
                     and "running" not in k]
    assert stage_weights and any(not torch.equal(before[k], after[k]) for k in stage_weights)
    rows = read_log(tmp_path / "run")
    assert [(r["epoch"], r["step"], r["phase"]) for r in rows] == [("1", "3", "2"), ("2", "4", "2")]
    ran = json.loads((tmp_path / "run" / "run.json").read_text())["phases"]
    assert [(p["first_step"], p["last_step"], p["trainable_stages"], p["warmup_steps"]) for p in ran] == [
        (1, 1, 0, 0), (2, 4, 5, 0)]
    report = (write_report(tmp_path / "run").parent / "report.md").read_text()
    assert "Ran: phase 1 steps 1-1 head only at lr 0.01; phase 2 steps 2-4 all stages at lr 0.01" in report


def test_a_freeze_stages_no_strategy_reads_is_said(synthetic_root: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg = build_config(tiny_config(synthetic_root, tmp_path / "run", finetune={"strategy": "full", "freeze_stages": 3},
                                   train={"epochs": 1, "max_steps": 1}))
    with caplog.at_level("INFO", logger="visiontl"):
        train(cfg)
    assert ("finetune.freeze_stages=3 is ignored: only finetune.strategy 'partial' reads it, this run's is 'full'"
            in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"])
