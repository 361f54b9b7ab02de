"""Faults during training: a non-finite loss stops with the step and the images named, or is skipped and
counted; the last checkpoint is kept either way."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import resnet18_config, tiny_config
from visiontl.config import build_config
from visiontl.engine.trainer import train
from visiontl.errors import TrainingError
from visiontl.tasks.classification import ClassificationTask


def _nan_at(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int]) -> None:
    real = ClassificationTask.loss
    calls = [0]

    def loss(self, model, batch, device):
        calls[0] += 1
        value, n = real(self, model, batch, device)
        return (value * float("nan") if calls[0] in bad_calls else value), n

    monkeypatch.setattr(ClassificationTask, "loss", loss)


def test_nan_loss_stops_naming_step_and_images(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    _nan_at(monkeypatch, {5})  # 24 train images, batch 8: step 5 is the 2nd step of epoch 2
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss is nan at step 5 \(epoch 2\), batch images: .*\.png") as err:
        train(build_config(tiny_config(synthetic_root, run, train={"epochs": 3})))
    assert "train.skip_nonfinite" in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).count(".png") == 8  # the whole batch, by file
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1  # epoch 1's checkpoint is intact
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_nan_loss_skipped_and_counted(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    _nan_at(monkeypatch, {2, 5})
    run = tmp_path / "run"
    train(build_config(tiny_config(synthetic_root, run, train={"epochs": 2, "skip_nonfinite": True})))
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["skipped_steps"] for r in rows] == ["1", "1"]
    assert all(float(r["train_loss"]) == float(r["train_loss"]) for r in rows)  # not NaN: skipped steps left out
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# ---- the run directory --------------------------------------------------------------------------------


def test_finished_run_is_not_overwritten_without_force(synthetic_root: Path, tmp_path: Path) -> None:
    from visiontl.errors import ConfigError

    run = tmp_path / "run"
    raw = tiny_config(synthetic_root, run, train={"epochs": 1})
    train(build_config(raw))
    (run / "gallery" / "stale.png").write_bytes(b"old")
    with pytest.raises(ConfigError, match=r"holds a finished run \(run.json\); pass --force"):
        train(build_config(raw))
    assert (run / "gallery" / "stale.png").exists()  # nothing touched
    train(build_config(raw), force=True)
    assert (run / "gallery" / "stale.png").read_bytes() == b"old"  # not a file the run wrote: --force keeps it
    with open(run / "log.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]


def test_unfinished_run_needs_resume_or_force(synthetic_root: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    run = tmp_path / "run"
    raw = tiny_config(synthetic_root, run, train={"epochs": 1})
    train(build_config(raw))
    (run / "run.json").unlink()  # as if killed before the end
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "visiontl", "train", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"visiontl: error: run.dir {run} holds an unfinished run (checkpoints/last.pt); --resume continues it, "
        "--force starts over"]


# ---- signals and mid-epoch resume -------------------------------------------------------------------


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _deterministic(root: Path, run: Path, **train_extra) -> dict:
    return tiny_config(root, run, model={"dropout": 0.3}, data={"augment": "standard"},
                       train={"epochs": 2, "batch_size": 4, "deterministic": True, "seed": 3, **train_extra})


def test_sigterm_mid_epoch_checkpoints_and_resume_is_exact(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    import os
    import signal

    from visiontl.errors import Interrupted

    train(build_config(_deterministic(synthetic_root, tmp_path / "full")))
    real = ClassificationTask.loss
    calls = [0]

    def loss(self, model, batch, device):
        calls[0] += 1
        if calls[0] == 9:  # epoch 2, third batch of six
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, model, batch, device)

    monkeypatch.setattr(ClassificationTask, "loss", loss)
    run = tmp_path / "stopped"
    with pytest.raises(Interrupted, match=r"stopped by SIGTERM in epoch 2 after 3 batches \(step 9\)") as err:
        train(build_config(_deterministic(synthetic_root, run)))
    assert err.value.exit_code == 143
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["progress"]["batches"] == 3 and ckpt["step"] == 9
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers given back
    monkeypatch.setattr(ClassificationTask, "loss", real)
    train(build_config(_deterministic(synthetic_root, run)), resume=True)
    full, resumed = _weights(tmp_path / "full"), _weights(run)
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    with open(tmp_path / "full" / "log.csv", newline="") as f1, open(run / "log.csv", newline="") as f2:
        assert [r["train_loss"] for r in csv.DictReader(f1)] == [r["train_loss"] for r in csv.DictReader(f2)]


def test_sigkill_after_a_mid_epoch_checkpoint_resumes_exactly(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from visiontl.data.synthetic import make_imagefolder

    root = make_imagefolder(tmp_path / "data", classes=3, train_per_class=16, val_per_class=2, size=32, seed=2)
    paths = {}
    for name in ("full", "killed"):
        raw = _deterministic(root, tmp_path / name, epochs=2, checkpoint_every=3, workers=0)
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "visiontl", "train", str(paths["killed"])], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt.get("progress"), "killed after an epoch-end checkpoint, not a mid-epoch one"
    for args in ((paths["killed"], "--resume"), (paths["full"],)):
        done = subprocess.run([sys.executable, "-m", "visiontl", "train", *map(str, args)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


# ---- writes that fail ---------------------------------------------------------------------------------


def test_kill_during_checkpoint_write_keeps_the_previous_one(synthetic_root: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    run = tmp_path / "run"
    script = f"""
import os, signal
import visiontl.atomic as atomic
from conftest import tiny_config
from visiontl.config import build_config
from visiontl.engine.trainer import train
real, calls = atomic.os.fsync, [0]
def fsync(fd):
    # the first epoch writes config, log, best.pt, last.pt; die inside epoch 2's best.pt/last.pt write
    if os.readlink(f"/proc/self/fd/{{fd}}").endswith(".tmp") and "last.pt" in os.readlink(f"/proc/self/fd/{{fd}}"):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real(fd)
atomic.os.fsync = fsync
train(build_config(tiny_config({str(synthetic_root)!r}, {str(run)!r}, train={{"epochs": 3}})))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    leftovers = list((run / "checkpoints").glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1  # the half-written file, under its temporary name
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    train(build_config(tiny_config(synthetic_root, run, train={"epochs": 3})), resume=True)
    assert not list((run / "checkpoints").glob(".*.tmp"))  # cleared on the next start
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3


def test_disk_full_while_writing_a_checkpoint(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    import errno
    import os

    import visiontl.atomic as atomic
    from visiontl.errors import WriteError

    run = tmp_path / "run"
    real, calls = atomic.os.fsync, [0]

    def fsync(fd: int) -> None:
        if "last.pt" in os.readlink(f"/proc/self/fd/{fd}"):
            calls[0] += 1
            if calls[0] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(WriteError, match=r"last.pt: cannot write \(No space left on device\); the previous version is "
                                         "intact") as err:
        train(build_config(tiny_config(synthetic_root, run, train={"epochs": 3})))
    assert "\n" not in str(err.value)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert not list((run / "checkpoints").glob(".*.tmp"))


# ---- the device and the workers ----------------------------------------------------------------------


def test_out_of_memory_says_what_to_change(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    real = ClassificationTask.loss
    calls = [0]

    def loss(self, model, batch, device):
        calls[0] += 1
        if calls[0] == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, model, batch, device)

    monkeypatch.setattr(ClassificationTask, "loss", loss)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"ran out of memory at step 4 \(train.batch_size 8, amp on\): lower "
                                            r"train.batch_size and raise train.accumulate to keep the batch \(4 x 2\)"):
        train(build_config(tiny_config(synthetic_root, run, train={"epochs": 2})))
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_a_dataloader_worker_that_dies(synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    import os
    import signal

    from visiontl.data.classification import ClassificationDataset

    real = ClassificationDataset.__getitem__

    def getitem(self, item):
        if os.environ.get("VISIONTL_TEST_KILL_WORKER") and item[0] == 5:
            os.kill(os.getpid(), signal.SIGKILL)  # in the worker process: as the OOM killer would
        return real(self, item)

    monkeypatch.setattr(ClassificationDataset, "__getitem__", getitem)
    monkeypatch.setenv("VISIONTL_TEST_KILL_WORKER", "1")
    with pytest.raises(TrainingError, match=r"a DataLoader worker died at step 1 \(DataLoader worker \(pid") as err:
        train(build_config(tiny_config(synthetic_root, tmp_path / "run", train={"epochs": 1, "workers": 1})))
    assert "lower train.workers (1)" in str(err.value) and "\n" not in str(err.value)


def _breaks_mid_epoch(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An image that passes every check before training and then fails to decode (a file replaced or a network
    share failing mid-run): read_image raises for it from the first training read on."""
    import visiontl.data.classification as classification
    from visiontl.errors import DataError

    victim = sorted((synthetic_root / "train").rglob("*.png"))[3]
    real = classification.read_image

    def read_image(path):
        if Path(path) == victim:
            raise DataError(f"{path}: cannot decode image (broken data stream when reading image file)")
        return real(path)

    monkeypatch.setattr(classification, "read_image", read_image)
    return victim


@pytest.mark.parametrize("workers", [0, 1])
def test_image_that_fails_mid_epoch_is_named(synthetic_root: Path, tmp_path: Path, workers: int, monkeypatch) -> None:
    from visiontl.errors import DataError

    victim = _breaks_mid_epoch(synthetic_root, monkeypatch)
    with pytest.raises(DataError) as err:
        train(build_config(tiny_config(synthetic_root, tmp_path / "run", train={"epochs": 1, "workers": workers})))
    # from a worker too: torch's multi-line wrapper is reduced to the worker's own line
    assert str(err.value) == f"{victim}: cannot decode image (broken data stream when reading image file)"


def test_image_that_fails_mid_epoch_can_be_skipped(synthetic_root: Path, tmp_path: Path, caplog, monkeypatch) -> None:
    import logging

    victim = _breaks_mid_epoch(synthetic_root, monkeypatch)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="visiontl"):
        train(build_config(tiny_config(synthetic_root, run, data={"on_bad_image": "skip"}, train={"epochs": 2})))
    assert caplog.text.count(f"skipped (data.on_bad_image: skip): {victim}: cannot decode image") == 2  # each epoch
    assert (run / "run.json").is_file()


def test_disk_full_inside_torch_save(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC in the middle of torch.save surfaces as a RuntimeError raised while handling the OSError
    (seen on a full disk): still one line, and the previous file intact."""
    import errno

    from visiontl.engine.checkpoint import save_checkpoint
    from visiontl.errors import WriteError

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})

    def failing_save(obj, f):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 105912512 vs 105912400")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(WriteError, match=r"last.pt: cannot write \(No space left on device\); the previous version is intact"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*.tmp"))


# ---- the run directory: only visiontl's own files, one run at a time (issue 15, items 4, 5, 11, 13) ------


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_removes_only_the_files_the_run_wrote(synthetic_root: Path, tmp_path: Path) -> None:
    import json

    run = tmp_path / "run"
    raw = tiny_config(synthetic_root, run, train={"epochs": 1})
    train(build_config(raw))
    listed = json.loads((run / "visiontl-manifest.json").read_text())["files"]
    assert {"config.yaml", "log.csv", "run.json", "checkpoints/last.pt", "gallery/index.json",
            "gallery/worst_1.png"} <= set(listed)
    ours = {"gallery/holiday.jpg": b"a", "gallery/holiday.png": b"b", "checkpoints/other_model.pt": b"c",
            "notes.txt": b"d"}
    for name, data in ours.items():
        (run / name).write_bytes(data)
    (run / "gallery" / "worst_4.png").unlink()  # a file of the run already gone: no matter
    train(build_config(raw), force=True)
    assert {name: (run / name).read_bytes() for name in ours} == ours  # the user's files, untouched
    with open(run / "log.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]
    assert (run / "gallery" / "worst_4.png").is_file()  # the new run's own


def test_force_on_a_run_from_before_the_manifest(synthetic_root: Path, tmp_path: Path) -> None:
    """A run directory written before the manifest existed: --force removes the files train writes by name (the
    gallery's pictures by their worst_N / best_N names) and nothing else; --resume starts its manifest."""
    import json

    run = tmp_path / "run"
    raw = tiny_config(synthetic_root, run, train={"epochs": 1})
    train(build_config(raw))
    (run / "visiontl-manifest.json").unlink()
    (run / "gallery" / "holiday.png").write_bytes(b"mine")
    (run / "checkpoints" / "other_model.pt").write_bytes(b"mine")
    train(build_config(raw), force=True)
    assert (run / "gallery" / "holiday.png").read_bytes() == (run / "checkpoints" / "other_model.pt").read_bytes() == b"mine"
    (run / "visiontl-manifest.json").unlink()
    (run / "run.json").unlink()
    train(build_config(tiny_config(synthetic_root, run, train={"epochs": 2})), resume=True)
    listed = set(json.loads((run / "visiontl-manifest.json").read_text())["files"])
    assert {"checkpoints/best.pt", "checkpoints/last.pt", "config.yaml", "gallery/best_1.png"} <= listed
    assert "gallery/holiday.png" not in listed


def test_a_folder_that_is_not_a_run_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    from visiontl.errors import ConfigError

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "report.md").write_text("my report")
    (folder / "metrics.json").write_text("{}")
    for force in (False, True):
        with pytest.raises(ConfigError) as err:
            train(build_config(tiny_config(synthetic_root, folder)), force=force)
        assert str(err.value) == (f"run.dir {folder} holds files that are not a visiontl run's (metrics.json, report.md); "
                                  "visiontl starts a run only in a new or empty folder or in one of its own runs: "
                                  "choose another run.dir")
    assert _tree(folder) == {"metrics.json": b"{}", "report.md": b"my report"}
    with pytest.raises(ConfigError, match=r"^run.dir / holds files that are not a visiontl run's \("):
        train(build_config(tiny_config(synthetic_root, Path("/"))), force=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    train(build_config(tiny_config(synthetic_root, empty, train={"epochs": 1})))  # an empty folder is fine
    assert (empty / "run.json").is_file()


@pytest.mark.parametrize("where", ["file", "under_file", "dev_null", "cannot_create", "unwritable"])
def test_a_run_dir_that_cannot_be_used_is_one_line(synthetic_root: Path, tmp_path: Path, where: str) -> None:
    import os

    from visiontl.errors import ConfigError, WriteError

    (tmp_path / "a_file").write_text("x")
    run, expected = {
        "file": (tmp_path / "a_file", f"run.dir {tmp_path / 'a_file'} is not a folder (a file); choose a folder"),
        "under_file": (tmp_path / "a_file" / "run",
                       f"run.dir {tmp_path / 'a_file' / 'run'} cannot be created: {tmp_path / 'a_file'} is a file, "
                       "not a folder"),
        "dev_null": (Path("/dev/null"), "run.dir /dev/null is not a folder (a device); choose a folder"),
        "cannot_create": (Path("/proc/visiontl-run"), None),  # /proc takes no new folder, not even from root
        "unwritable": (tmp_path / "ro" / "run", f"run.dir {tmp_path / 'ro' / 'run'} cannot be created: "
                                                f"{tmp_path / 'ro'} is not writable (permission denied); choose another run.dir"),
    }[where]
    if where == "unwritable":
        if os.geteuid() == 0:
            pytest.skip("root may write into any folder")
        (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises((ConfigError, WriteError)) as err:
        train(build_config(tiny_config(synthetic_root, run, train={"epochs": 1})), log_file=True)
    if expected is not None:
        assert str(err.value) == expected
    assert str(err.value).startswith(f"run.dir {run}") and "\n" not in str(err.value)
    assert (tmp_path / "a_file").read_text() == "x"


def test_a_failed_resume_changes_nothing(synthetic_root: Path, tmp_path: Path) -> None:
    from visiontl.errors import CheckpointError

    run = tmp_path / "run"
    raw = resnet18_config(synthetic_root, run, train={"epochs": 2, "max_steps": 2})  # the message names resnet18
    train(build_config(raw), log_file=True)
    (run / "run.json").unlink()  # as if stopped in epoch 1
    before = _tree(run)
    other = tiny_config(synthetic_root, run, model={"backbone": "mobilenet_v2", "weights": "none"}, train={"epochs": 2})
    with pytest.raises(CheckpointError) as err:
        train(build_config(other), resume=True, log_file=True)
    assert str(err.value) == (f"--resume: {run / 'checkpoints' / 'last.pt'} was trained with model.backbone resnet18, "
                              f"the config says mobilenet_v2; resume with the run's own config ({run / 'config.yaml'}), "
                              "or choose another run.dir")
    head = resnet18_config(synthetic_root, run, model={"head": "mlp"}, train={"epochs": 2})
    with pytest.raises(CheckpointError, match=r"does not fit the model this config builds \(Error\(s\) in loading "
                                              r"state_dict for Classifier: .*Missing key"):
        train(build_config(head), resume=True, log_file=True)
    assert _tree(run) == before  # config.yaml, train.log, the manifest: nothing rewritten


def test_a_refused_start_writes_nothing(synthetic_root: Path, tmp_path: Path) -> None:
    from visiontl.errors import DataError

    bad = tiny_config(tmp_path / "no_data", tmp_path / "new", train={"epochs": 1})
    with pytest.raises(DataError):
        train(build_config(bad), log_file=True)
    assert not (tmp_path / "new").exists()
    run = tmp_path / "run"
    train(build_config(tiny_config(synthetic_root, run, train={"epochs": 1})), log_file=True)
    before = _tree(run)
    with pytest.raises(DataError):  # not even --force removes the previous run before the new one can start
        train(build_config(tiny_config(tmp_path / "no_data", run, train={"epochs": 1})), force=True, log_file=True)
    assert _tree(run) == before


def test_a_run_dir_in_use_is_refused_naming_the_process(synthetic_root: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from visiontl.engine.rundir import RunDir
    from visiontl.errors import ConfigError

    run = tmp_path / "run"
    with RunDir(run).open(resume=False, force=False):
        with pytest.raises(ConfigError) as err:
            train(build_config(tiny_config(synthetic_root, run, train={"epochs": 1})))
        assert str(err.value) == (f"run.dir {run} is in use by process {os.getpid()} (visiontl.lock); wait for it to "
                                  "end, or choose another run.dir")
        from visiontl.engine.inference import evaluate_checkpoint

        with pytest.raises(ConfigError, match=rf"is in use by process {os.getpid()} "):  # before any work
            evaluate_checkpoint(tmp_path / "any.pt", [], run)
    other = tmp_path / "other"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from visiontl.engine.rundir import "
         f"RunDir; RunDir(Path({str(other)!r})).open(False, False); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError, match=rf"is in use by process {holder.pid} \(visiontl.lock\)"):
            RunDir(other).check(resume=False, force=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunDir(other).check(resume=False, force=False)  # the kernel dropped the lock with the process


# ---- a stop signal to the whole process group (issue 15, item 6) --------------------------------------

_SLOW_AT = """
import sys, time
from pathlib import Path
import visiontl.data.classification as classification
from visiontl.cli import main
from visiontl.data.sampling import split_item
from visiontl.tasks.classification import ClassificationTask
marker, where = Path(sys.argv[1]), sys.argv[2]
real_loss, real_item = ClassificationTask.loss, classification.ClassificationDataset.__getitem__
calls = [0]
def loss(self, model, batch, device):
    calls[0] += 1
    if where == "train" and calls[0] == 5:  # epoch 2, the second of its three batches
        marker.touch()
        time.sleep(1.5)  # the signal arrives while this step is in hand
    return real_loss(self, model, batch, device)
def getitem(self, item):  # in a DataLoader worker
    if where == "val" and "val" in Path(self.file_of(split_item(item)[0])).parts:
        marker.touch()
        time.sleep(0.3)  # validation is under way in the workers when the signal arrives
    return real_item(self, item)
ClassificationTask.loss = loss
classification.ClassificationDataset.__getitem__ = getitem
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize(("where", "sig"), [("train", "SIGINT"), ("val", "SIGTERM")])
def test_stop_signal_to_the_process_group(synthetic_root: Path, tmp_path: Path, where: str, sig: str) -> None:
    """scancel, timeout(1) and Ctrl-C signal every process of the job: the DataLoader workers too. The run
    stops as if the trainer alone had been signalled: the step (or the epoch's training) is kept in last.pt,
    the exit status is 128 + the signal, and --resume finishes the run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(synthetic_root, run, train={"epochs": 2, "workers": 2})))
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_AT, str(marker), where, "train", str(config)],
                            cwd=Path(__file__).parent, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, getattr(signal, sig))  # the trainer and its workers
    stderr = proc.communicate(timeout=240)[1]
    number = getattr(signal, sig)
    last = run / "checkpoints" / "last.pt"
    assert proc.returncode == 128 + number, stderr
    where_stopped = "in epoch 2 after 2 batches (step 5)" if where == "train" else "while validating epoch 1 (step 3)"
    assert stderr.strip().splitlines()[-1] == (f"visiontl: error: stopped by {sig} {where_stopped}: {last} written; add "
                                               "--resume to continue")
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["epoch"], ckpt["step"], ckpt["progress"]["batches"]) == ((1, 5, 2) if where == "train" else (0, 3, 3))
    done = subprocess.run([sys.executable, "-m", "visiontl", "train", str(config), "--resume"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    with open(run / "log.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    assert torch.load(last, weights_only=True)["step"] == 6
