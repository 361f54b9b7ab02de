"""Data-parallel training under torchrun on CPU (gloo), two processes: one set of run files written by rank 0,
identical weights on every rank, every val image scored once, resume; and the sharded sampler."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from test_detection import det_config
from visiontl.data.sampling import EpochSampler
from visiontl.data.synthetic import make_detection_coco
from visiontl.engine.distributed import ShardSampler, parameter_digest
from visiontl.engine.inference import load_trained

RUN_FILES = {"config.yaml", "log.csv", "metrics.json", "eval_images.json", "run.json", "train.log", "checkpoints"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cfg: dict, tmp_path: Path, *extra: str, via_nproc: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    """Two ranks under torch.distributed.run, or via `visiontl train --nproc 2` (which re-launches itself)."""
    path = tmp_path / f"cfg_{len(list(tmp_path.glob('cfg_*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    digests = tmp_path / f"digests_{path.stem}"
    env = {**os.environ, "VISIONTL_TEST_RANK_DIGEST_DIR": str(digests), "OMP_NUM_THREADS": "1"}
    if via_nproc:
        cmd = [sys.executable, "-m", "visiontl", "train", str(path), *extra, "--nproc", "2"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", "-m", "visiontl", "train", str(path), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, digests


def assert_one_run(run: Path, digests: Path, epochs: int) -> None:
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert len(list(run.rglob("metrics.json"))) == 1 and not list(run.rglob("*.tmp"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    with open(run / "log.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == [str(e + 1) for e in range(epochs)]  # one writer
    text = (run / "train.log").read_text()
    assert "distributed: rank 0 of 2, backend gloo" in text and "rank 1 of 2" not in text
    assert text.count(f"epoch {epochs}/{epochs}") == 1
    # Every rank ends with the same weights, and they are the weights of the saved checkpoint.
    ranks = {p.name: p.read_text().strip() for p in digests.iterdir()}
    assert set(ranks) == {"rank0.sha256", "rank1.sha256"}
    saved = parameter_digest(load_trained(run / "checkpoints" / "last.pt").model)
    assert ranks["rank0.sha256"] == ranks["rank1.sha256"] == saved


def test_classifier_staged_with_accumulation_and_resume_via_nproc(synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Staged: phase 1 trains the head only, phase 2 unfreezes two stages (a new DDP wrapper); accumulation
    # exercises no_sync. 24 train images, batch 4, 2 ranks: 3 batches per rank, 2 optimizer steps.
    cfg = tiny_config(synthetic_root, run, train={"epochs": 2, "batch_size": 4, "accumulate": 2},
                      finetune={"strategy": "staged",
                                "stages": [{"epochs": 1, "unfreeze": 0}, {"epochs": 1, "unfreeze": 2}]})
    _, digests = torchrun(cfg, tmp_path)
    assert_one_run(run, digests, epochs=2)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_samples"] == 12 and sum(map(sum, metrics["confusion_matrix"])) == 12  # each val image once
    images = json.loads((run / "eval_images.json").read_text())["images"]
    assert sorted(i["file"] for i in images) == sorted({i["file"] for i in images}) and len(images) == 12
    assert load_trained(run / "checkpoints" / "last.pt").checkpoint["step"] == 4

    cfg["finetune"]["stages"].append({"epochs": 1, "unfreeze": "all"})
    cfg["train"]["epochs"] = 3
    proc, digests = torchrun(cfg, tmp_path, "--resume", via_nproc=True)
    assert "resumed from" in proc.stdout
    assert_one_run(run, digests, epochs=3)
    assert load_trained(run / "checkpoints" / "last.pt").checkpoint["epoch"] == 3


def test_detector_with_its_val_split_taken_from_train(tmp_path: Path) -> None:
    """data.val=0.3: every rank takes the same 3 of the 10 images as val (checked across ranks before
    training), and rank 0 scores exactly those."""
    root = tmp_path / "shapes"
    make_detection_coco(root, images=10, split="train", seed=0)
    run = tmp_path / "run"
    _, digests = torchrun(det_config(root, run, data={"val": 0.3}), tmp_path)
    assert_one_run(run, digests, epochs=1)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 3
    images = json.loads((run / "eval_images.json").read_text())["images"]
    val = json.loads((run / "data.json").read_text())["val_from_train"]["images"]
    assert sorted(i["file"] for i in images) == sorted(val) and len(val) == 3


def test_the_api_under_torchrun_logs_on_rank_0_only_and_leaves_the_group(synthetic_root: Path, tmp_path: Path) -> None:
    """A script calling vtl.train, started by torchrun: one copy of the progress lines (rank 0's), a Run on
    every rank, the process group left when vtl.train returns."""
    run = tmp_path / "run"
    cfg = tiny_config(synthetic_root, run, train={"epochs": 1, "batch_size": 8})
    script = tmp_path / "script.py"
    script.write_text("import torch.distributed, visiontl as vtl\n"
                      f"run = vtl.train({cfg!r})\n"
                      "print('run', run.metrics['best']['epoch'], torch.distributed.is_initialized(), flush=True)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                           f"--master_port={free_port()}", str(script)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("epoch 1/1") == 1 and out.count("distributed: rank 0 of 2") == 1 and "rank 1 of 2" not in out
    assert out.count("data: ") == 1 and out.count("report: ") == 1
    assert out.count("run 1 False") == 2  # both ranks return the Run, out of the group
    assert "distributed: rank 0 of 2" in (run / "train.log").read_text()


@pytest.mark.parametrize("size,world", [(10, 3), (12, 2), (1, 2), (7, 1)])
def test_shards_are_disjoint_cover_the_epoch_and_have_equal_length(size: int, world: int) -> None:
    inner = EpochSampler(size, shuffle=True, seed=3)
    inner.set_epoch(5)
    order = list(inner)
    shards = [list(ShardSampler(inner, r, world)) for r in range(world)]
    assert {len(s) for s in shards} == {-(-size // world)} == {len(ShardSampler(inner, 0, world))}
    flat = [item for s in shards for item in s]
    assert set(flat) == set(order)  # together they cover the epoch, in the shared seeded order
    padding = len(flat) - size
    assert padding < world and sorted(flat) == sorted(order + order[:padding])  # padded by repeating the start


def test_a_session_quiets_the_other_ranks_and_leaves_only_a_group_it_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from visiontl.engine import distributed as d

    log = logging.getLogger("visiontl")
    group = {"joined": False}
    left: list[str] = []
    monkeypatch.setattr(d, "init", lambda device: group.update(joined=True))
    monkeypatch.setattr(d, "active", lambda: group["joined"])
    monkeypatch.setattr(d, "is_main", lambda: False)  # rank 1
    monkeypatch.setattr(d, "shutdown", lambda: left.append("left"))
    monkeypatch.setattr(log, "level", logging.INFO)
    with d.session("cpu"):
        assert log.level == logging.WARNING  # one copy of the progress lines: rank 0's
    assert log.level == logging.INFO and left == ["left"]
    with d.session("cpu"):  # a group joined before (by the caller) is the caller's to leave
        assert log.level == logging.WARNING
    assert log.level == logging.INFO and left == ["left"]
