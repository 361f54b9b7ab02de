"""Data-parallel training under torchrun on CPU (gloo), two processes: one set of run files written by rank 0,
identical weights on every rank, sharded validation giving exactly one process's metrics and per-image files,
resume; and the sharded samplers."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from test_detection import det_config
from test_segmentation import seg_config
from visiontl.data.sampling import EpochSampler
from visiontl.data.synthetic import make_detection_coco, make_segmentation_folders
from visiontl.engine.distributed import ShardSampler, ValShard, describe_shards, parameter_digest
from visiontl.engine.inference import evaluate_checkpoint, load_trained

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


def evaluate_in_one_process(run: Path, out: Path) -> tuple[dict, dict]:
    """metrics.json of the run (scored by its ranks) and of one process evaluating its last.pt into `out`, with
    one thread as each rank ran (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluate_checkpoint(run / "checkpoints" / "last.pt", [], out)
    finally:
        torch.set_num_threads(threads)
    return tuple(json.loads((folder / "metrics.json").read_text()) for folder in (run, out))


def assert_one_process_evaluation(run: Path, tmp_path: Path) -> None:
    """The run's final evaluation, made by two ranks each scoring its shard of the val set, is exactly what one
    process scoring the saved model over the whole val set gives: metrics.json (loss included, to the last bit)
    and eval_images.json."""
    ranks, one = evaluate_in_one_process(run, tmp_path / "one_process")
    for key in ("best", "checkpoint", "split"):  # what train and evaluate add beside the evaluation
        ranks.pop(key, None)
        one.pop(key, None)
    assert json.dumps(ranks, sort_keys=True) == json.dumps(one, sort_keys=True)  # (NaN per-class APs compare too)
    assert (run / "eval_images.json").read_text() == (tmp_path / "one_process" / "eval_images.json").read_text()


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
    # 12 val images in batches of 4: rank 0 scores the first two batches, rank 1 the third
    assert "validation: 12 images in 3 batches of 4, sharded over 2 ranks: rank 0 scores 8, rank 1 scores 4" in (
        run / "train.log").read_text()

    cfg["finetune"]["stages"].append({"epochs": 1, "unfreeze": "all"})
    cfg["train"]["epochs"] = 3
    proc, digests = torchrun(cfg, tmp_path, "--resume", via_nproc=True)
    assert "resumed from" in proc.stdout
    assert_one_run(run, digests, epochs=3)
    assert load_trained(run / "checkpoints" / "last.pt").checkpoint["epoch"] == 3
    assert_one_process_evaluation(run, tmp_path)  # (the last phase trains batch norm: ranks' statistics differ)


def test_detector_with_its_val_split_taken_from_train(tmp_path: Path) -> None:
    """data.val=0.3: every rank takes the same 3 of the 10 images as val (checked across ranks before
    training); the ranks score 2 and 1 of them, and rank 0 scores the gathered detections once."""
    root = tmp_path / "shapes"
    make_detection_coco(root, images=10, split="train", seed=0)
    run = tmp_path / "run"
    _, digests = torchrun(det_config(root, run, data={"val": 0.3}, train={"batch_size": 2}), tmp_path)
    assert_one_run(run, digests, epochs=1)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["num_detections"] > 0
    images = json.loads((run / "eval_images.json").read_text())["images"]
    val = json.loads((run / "data.json").read_text())["val_from_train"]["images"]
    assert sorted(i["file"] for i in images) == sorted(val) and len(val) == 3
    assert "validation: 3 images in 2 batches of 2, sharded over 2 ranks: rank 0 scores 2, rank 1 scores 1" in (
        run / "train.log").read_text()
    assert_one_process_evaluation(run, tmp_path)


def test_segmentation_validated_in_shards(tmp_path: Path) -> None:
    """A U-Net under DDP: 5 val images at their own size in batches of 2 (padded to the batch's largest), scored
    4 by rank 0 and 1 by rank 1, the confusion matrices summed: one process's mIoU, loss and per-image scores."""
    root = make_segmentation_folders(tmp_path / "data", train=6, val=5)
    run = tmp_path / "run"
    _, digests = torchrun(seg_config(root, run, train={"epochs": 1, "batch_size": 2}), tmp_path)
    assert_one_run(run, digests, epochs=1)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_pixels"] == sum(map(sum, metrics["confusion_matrix"])) > 0
    assert len(json.loads((run / "eval_images.json").read_text())["images"]) == 5
    assert "validation: 5 images in 3 batches of 2, sharded over 2 ranks: rank 0 scores 4, rank 1 scores 1" in (
        run / "train.log").read_text()
    assert_one_process_evaluation(run, tmp_path)


def test_the_api_under_torchrun_logs_on_rank_0_only_and_leaves_the_group(synthetic_root: Path, tmp_path: Path) -> None:
    """A script calling vtl.train, started by torchrun: one copy of the progress lines (rank 0's), a Run on
    every rank, the process group left when vtl.train returns."""
    run = tmp_path / "run"
    cfg = tiny_config(synthetic_root, run, train={"epochs": 1, "batch_size": 8})
    script = tmp_path / "script.py"
    script.write_text("import torch.distributed, visiontl as vtl\n"
                      f"run = vtl.train({cfg!r})\n"
                      # one write per line: the two ranks share the pipe
                      "print(f\"run {run.metrics['best']['epoch']} {torch.distributed.is_initialized()}\", flush=True)\n")
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


@pytest.mark.parametrize("size,batch,world", [(12, 4, 2), (5, 2, 2), (3, 4, 2), (10, 3, 4), (7, 1, 3), (0, 2, 2)])
def test_val_shards_are_whole_batches_once_each_without_padding(size: int, batch: int, world: int) -> None:
    inner = EpochSampler(size, shuffle=False, seed=3)
    shards = [list(ValShard(inner, batch, r, world)) for r in range(world)]
    assert [item for shard in shards for item in shard] == list(inner)  # every image once, in the val order
    assert [len(ValShard(inner, batch, r, world)) for r in range(world)] == [len(s) for s in shards]
    starts = [ValShard(inner, batch, r, world).start for r in range(world)]
    assert all(start % batch == 0 or start == size for start in starts)  # one process's batches, whole
    batches = [-(-len(s) // batch) for s in shards]
    assert batches == sorted(batches, reverse=True) and batches[0] - batches[-1] <= 1  # rank 0 never short
    shares = ", ".join(f"rank {r} scores {len(s)}" for r, s in enumerate(shards))
    assert describe_shards(size, batch, world).endswith(shares)


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
