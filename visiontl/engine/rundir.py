"""The run directory: the one owner of its files. A RunDir knows the layout of a run directory (what each file
is called and where it lies) and writes every file of it: it checks the folder before any work, locks it for
the life of the run, lists every file in its manifest before it is written, and writes the config, data
record, log.csv, train.log, checkpoints, evaluation files, run.json and report (docs/run-directory.md).

    <run.dir>/config.yaml   the resolved config
    <run.dir>/data.json     what the data preparation decided (the val split taken from train, images left out)
    <run.dir>/log.csv       one row per epoch: phase, trainable params, LR per group, losses, metrics, time
    <run.dir>/train.log     the console log
    <run.dir>/metrics.json  final val metrics (and the best epoch's), with eval_raw.npz beside it
    <run.dir>/eval_images.json, gallery/   per-image scores; the worst and best images drawn
    <run.dir>/run.json      environment and timing
    <run.dir>/report.html, report.md   the run report (visiontl.report)
    <run.dir>/checkpoints/{last,best}.pt
    <run.dir>/visiontl-manifest.json, visiontl.lock

A RunDir that does not write (`writes=False`: the ranks other than 0 of a distributed run) checks, locks and
writes nothing: rank 0 alone writes the run directory.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import io
import itertools
import json
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from visiontl import __version__
from visiontl.atomic import (TMP_SUFFIX, atomic_write_bytes, atomic_write_json, atomic_write_text, observe_writes,
                             remove_stale_temporaries, stop_observing_writes)
from visiontl.config import Config, save_config
from visiontl.data.holdout import DATA_FILE
from visiontl.engine.checkpoint import save_checkpoint
from visiontl.engine.environment import Stopwatch, run_record
from visiontl.engine.gallery import GALLERY_PNG, write_gallery
from visiontl.errors import ConfigError, WriteError
from visiontl.text import PrintableFormatter, printable

log = logging.getLogger("visiontl")

LOCK_FILE = "visiontl.lock"  # flock'ed for the life of a run; holds the pid. Never removed (see RunDir.lock)
MANIFEST = "visiontl-manifest.json"  # every file visiontl wrote into the run directory: what --force removes
# Runs from before the manifest: the files `train` wrote by name (their gallery pictures by their name pattern).
LEGACY_FILES = ("config.yaml", "log.csv", "metrics.json", "eval_raw.npz", "eval_images.json", "run.json",
                "report.html", "report.md", "train.log", "mlflow.json", "checkpoints/last.pt", "checkpoints/best.pt",
                "gallery/index.json")
SHOWN = 4  # names shown when a folder is refused for what it holds
MANIFEST_MAX = 16 * 2**20  # bytes of a manifest read: far above any real run's (a few KB)


# fds of the run locks this process holds: a DataLoader worker (a fork) closes its copies, so that the lock
# goes with the main process when that is killed, not when its last worker notices.
_held_locks: set[int] = set()


def close_inherited_locks() -> None:
    """In a DataLoader worker: close the run locks' fds inherited from the main process (see _held_locks)."""
    for fd in list(_held_locks):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


def evaluation_dir(out_dir: str | Path | None) -> RunDir | None:
    """The RunDir an evaluation writes into (None: nothing is written), checked before any work: a folder that
    is not one, or is in use by a run, is refused; what is there is kept (resume=True), and the evaluation's
    files are added to its manifest."""
    if out_dir is None:
        return None
    out = RunDir(out_dir)
    out.check(resume=True, force=False, contents=False)
    return out


class RunDir:
    """A run directory: its layout, its lifecycle (`check` before any work, `open` to lock it and take it for
    this run, `close`) and the writing of each of its files. Every file visiontl writes into it (here, through
    visiontl.atomic while it is open, or named with `record`) is listed in its manifest before it is written."""

    def __init__(self, path: str | Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes  # False: a rank other than 0, which leaves the folder to rank 0
        self.files: set[str] = set()
        self.fd: int | None = None
        self.log_rows: list[dict[str, Any]] = []  # log.csv as written so far

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # The layout

    def checkpoint_path(self, name: str = "last") -> Path:
        """checkpoints/<name>.pt: `last` (after every epoch, and mid-epoch; what --resume continues) or `best`."""
        return self.path / "checkpoints" / f"{name}.pt"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    # The lifecycle

    def check(self, resume: bool, force: bool, contents: bool = True) -> None:
        """Everything that refuses the folder, before any work and without writing anything: a path that is not
        a folder or cannot be created, a folder in use by another run, and (`contents`) a folder that holds files
        of anything but a visiontl run, or a run that would be replaced without --force or started over without
        --resume. `evaluate --out` checks no contents: it writes its files into the folder it is given."""
        if not self.writes:
            return
        _check_location(self.path)
        if self.path.is_dir():
            _check_not_locked(self.path)
            if contents:
                _check_contents(self.path, resume, force)

    def open(self, resume: bool, force: bool, contents: bool = True) -> RunDir:
        """Create and lock the folder, check it again under the lock, and (a new run) remove the previous run's
        files: those its manifest lists, or for a run from before the manifest the files `train` writes by name.
        `resume` keeps what is there (and lists it on): a resumed run, or an evaluation added to a folder."""
        if not self.writes:
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
            if contents:  # again, under the lock: another start may have won the race
                _check_contents(self.path, resume, force)
            previous = self.previous_files()
            if resume:
                self.files = previous
            else:
                if previous:
                    log.info("removing the previous run's files from %s (%d files)", _p(self.path), len(previous))
                self.remove(previous)
            self.write_manifest()
            remove_stale_temporaries(self.path / "checkpoints")  # what a kill during a checkpoint write left behind
        except OSError as exc:
            self.close()
            raise WriteError(f"run.dir {_p(self.path)}: cannot write ({exc.strerror or exc}); nothing was changed") from None
        except BaseException:
            self.close()
            raise
        observe_writes(self.before_write)
        return self

    def lock(self) -> None:
        """flock, which the kernel drops when the process ends however it ends (SIGKILL too). The lock file is
        never deleted: a process that opened it before a deletion would lock a file nobody else sees."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            error = _in_use(self.path, fd)
            os.close(fd)
            raise error from None
        self.fd = fd
        _held_locks.add(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        stop_observing_writes(self.before_write)
        if self.fd is not None:
            _held_locks.discard(self.fd)
            os.close(self.fd)  # releases the flock
            self.fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def previous_files(self) -> set[str]:
        manifest = self.path / MANIFEST
        if manifest.is_file():
            with open(manifest, "rb") as f:
                text = f.read(MANIFEST_MAX + 1)
            try:
                if len(text) > MANIFEST_MAX:
                    raise ValueError("too large")
                listed = json.loads(text)["files"]
            except (ValueError, KeyError, TypeError, RecursionError):
                raise ConfigError(f"{_p(manifest)}: not a visiontl manifest (damaged?); remove the run's files "
                                  "yourself or choose another run.dir") from None
            return {name for name in listed if isinstance(name, str) and self._inside(name)}
        found = {name for name in LEGACY_FILES if (self.path / name).is_file()}
        gallery = self.path / "gallery"
        if gallery.is_dir():
            found |= {f"gallery/{p.name}" for p in gallery.iterdir() if GALLERY_PNG.fullmatch(p.name)}
        return found

    def _inside(self, name: str) -> bool:
        """A manifest entry is a relative path below the run directory (a tampered one must not reach out)."""
        parts = Path(name).parts
        return bool(parts) and not Path(name).is_absolute() and ".." not in parts and name != LOCK_FILE

    def remove(self, names: set[str]) -> None:
        """Delete the listed files (a folder entry, `tensorboard/`, whole), the temporaries a kill left of them,
        and the folders that held them once empty; nothing else."""
        folders = set()
        inside = self.path.resolve()
        for name in sorted(names):
            path = self.path / name
            if not path.parent.resolve().is_relative_to(inside):
                continue  # a folder of the run replaced by a link to elsewhere: not ours to delete in
            if name.endswith("/"):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                continue
            if path.is_file() or path.is_symlink():
                path.unlink()
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            if folder != self.path:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: a user's file there keeps it
        (self.path / MANIFEST).unlink(missing_ok=True)

    def record(self, name: str) -> None:
        """List `name` (relative to the run directory; `folder/` for a whole folder) in the manifest."""
        if name not in self.files:
            self.files.add(name)
            self.write_manifest()

    def before_write(self, path: Path) -> None:
        try:
            name = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.path)).as_posix()
        except ValueError:
            return  # outside the run directory
        if name != MANIFEST:
            self.record(name)

    def write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, {"visiontl": __version__, "files": sorted(self.files)})

    # The files

    def write_config(self, cfg: Config) -> None:
        """config.yaml: the resolved config (train: the run's; evaluate: what was evaluated, overrides included)."""
        if self.writes:
            save_config(cfg, self.config_file)

    def write_data_record(self, data: Any) -> None:
        """data.json: the val list of data.val as a fraction, and the images left out, for the report and for
        whoever evaluates the run later."""
        if not self.writes:
            return
        record: dict[str, Any] = {"val_from_train": None, "left_out": list(data.left_out)}
        if data.holdout is not None:
            h = data.holdout
            record["val_from_train"] = {"fraction": h.fraction, "seed": h.seed, "images": h.files}
        atomic_write_json(self.path / DATA_FILE, record)

    def start_train_log(self, early_log: EarlyLog) -> None:
        """train.log, from the first line the run logged (held by `early_log` until the run started)."""
        if self.writes:
            self.record("train.log")
            early_log.to_file(self.path / "train.log")

    def record_tensorboard(self) -> None:
        """tensorboard/, written by the tracker: listed whole (a resumed run's folder is listed already)."""
        if self.writes and not (self.path / "tensorboard").exists():
            self.record("tensorboard/")

    def keep_log_rows(self, epochs_done: int) -> None:
        """A resumed run: log.csv keeps the rows of the epochs its checkpoint holds; the next row follows them."""
        path = self.path / "log.csv"
        if self.writes and path.is_file():
            with open(path, newline="") as f:
                self.log_rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]

    def log_row(self, row: dict[str, Any]) -> None:
        """One epoch's row of log.csv (floats to 6 significant digits). The file is rewritten atomically after
        every epoch (it is small), so it never holds half a row."""
        if not self.writes:
            return
        self.log_rows.append({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
        fields: list[str] = []
        for r in self.log_rows:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.log_rows)
        atomic_write_text(self.path / "log.csv", buf.getvalue())

    def save_checkpoint(self, checkpoint: dict[str, Any], best: bool = False) -> None:
        """checkpoints/last.pt (and, `best`, checkpoints/best.pt)."""
        if not self.writes:
            return
        if best:
            save_checkpoint(self.checkpoint_path("best"), checkpoint)
        save_checkpoint(self.checkpoint_path("last"), checkpoint)

    def write_evaluation(self, metrics: dict[str, Any], task: Any, model: Any, dataset: Any, device: Any,
                         autocast: contextlib.AbstractContextManager, classes: list[str]) -> None:
        """The evaluation files: metrics.json, eval_raw.npz, eval_images.json, and the gallery of the worst and
        best images drawn with `model` (the one that made the metrics)."""
        if not self.writes:
            return
        self.write_metrics(metrics)
        per_image = metrics.get("per_image")
        if per_image is not None:  # absent when a finished run is resumed: no epoch ran, nothing was evaluated
            write_gallery(self.path, per_image["images"], task, model, dataset, device, autocast, classes)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json, with the evaluation's raw arrays (if any) in eval_raw.npz and its per-image scores (if
        any) in eval_images.json beside it."""
        if not self.writes:
            return
        metrics = dict(metrics)
        per_image = metrics.pop("per_image", None)
        if per_image is not None:
            atomic_write_json(self.path / "eval_images.json", per_image)
        raw = metrics.pop("raw", None)
        if raw is not None:
            import numpy as np

            buf = io.BytesIO()
            np.savez_compressed(buf, **{k: np.asarray(v) for k, v in raw.items()})
            atomic_write_bytes(self.path / "eval_raw.npz", buf.getvalue())
            metrics["raw"] = "eval_raw.npz"
        atomic_write_json(self.path / "metrics.json", metrics)

    def write_run_json(self, command: str, task: str, device: Any, watch: Stopwatch, train_images: int | None,
                       val_images: int, phases: list[dict] | None = None) -> None:
        """run.json: what the command ran on and how long it took (engine.environment); for a gradient-trained
        run, the fine-tuning phases that ran, in optimizer steps (finetune.phase_record)."""
        if self.writes:
            record = run_record(command, task, device, watch, train_images, val_images)
            if phases is not None:
                record["phases"] = phases
            atomic_write_json(self.path / "run.json", record)

    def write_report(self) -> None:
        """report.html and report.md of a finished run or evaluation. The report is drawn from files already
        written, so a failure here loses nothing: it is one warning line, and `visiontl report` redoes it."""
        if not self.writes:
            return
        from visiontl.report import write_report

        try:
            log.info("report: %s", write_report(self.path))
        except Exception as exc:  # noqa: BLE001 (any failure of a derived file must not fail a finished run)
            log.warning("report not written (%s: %s); run `visiontl report %s` to retry", type(exc).__name__, exc,
                        self.path)


def _check_contents(run_dir: Path, resume: bool, force: bool) -> None:
    foreign = not _is_run(run_dir) and _entries(run_dir, SHOWN)
    if foreign:
        shown = ", ".join(printable(name) for name in foreign[:SHOWN - 1]) + (", ..." if len(foreign) >= SHOWN else "")
        raise ConfigError(f"run.dir {_p(run_dir)} holds files that are not a visiontl run's ({shown}); visiontl "
                          "starts a run only in a new or empty folder or in one of its own runs: choose another run.dir")
    if resume:
        return
    finished = (run_dir / "run.json").is_file()
    unfinished = (run_dir / "checkpoints" / "last.pt").is_file()
    if force or not (finished or unfinished):
        return
    if finished:
        raise ConfigError(f"run.dir {_p(run_dir)} holds a finished run (run.json); pass --force to replace it, or "
                          "choose another run.dir")
    raise ConfigError(f"run.dir {_p(run_dir)} holds an unfinished run (checkpoints/last.pt); --resume continues it, "
                      "--force starts over")


def _p(path: Path) -> str:
    return printable(str(path))


def _check_location(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run.dir {_p(run_dir)} is not a folder ({_kind(run_dir)}); choose a folder")
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"run.dir {_p(run_dir)} cannot be created: {_p(existing)} is {_kind(existing)}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == run_dir else f"cannot be created: {_p(existing)} is not writable"
        raise ConfigError(f"run.dir {_p(run_dir)} {what} (permission denied); choose another run.dir")


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "not a regular file"


def _entries(folder: Path, limit: int) -> list[str]:
    """Up to `limit` names in `folder` other than the lock file, sorted (a huge folder is not listed whole)."""
    with os.scandir(folder) as it:
        names = [e.name for e in itertools.islice((e for e in it if e.name != LOCK_FILE), limit)]
    return sorted(names)


def _is_run(folder: Path) -> bool:
    """One of visiontl's own runs: it has a manifest, or (a run from before the manifest) run.json or last.pt."""
    return any((folder / name).is_file() for name in (MANIFEST, "run.json", "checkpoints/last.pt"))


def _check_not_locked(run_dir: Path) -> None:
    """Refuse early (and without creating anything) when another process holds the run's lock."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
    except OSError:
        return  # no lock file: nobody has run here yet (RunDir.lock settles a race)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise _in_use(run_dir, fd) from None
    finally:
        os.close(fd)


def _in_use(run_dir: Path, fd: int) -> ConfigError:
    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    who = f"process {holder}" if holder.isdigit() else "another process"
    return ConfigError(f"run.dir {_p(run_dir)} is in use by {who} ({LOCK_FILE}); wait for it to end, or choose "
                       "another run.dir")


class EarlyLog(logging.Handler):
    """train.log, from the first line: records are held until the run starts (RunDir.open) and then written
    ahead of the rest, so a start refused for its config or data leaves no train.log in the folder."""

    HELD = 10_000  # records held before the start (warnings about a big dataset's files, say); later ones dropped

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger
        self.held: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is not None:
            self.file.handle(record)
        elif len(self.held) < self.HELD:
            self.held.append(record)

    def to_file(self, path: Path) -> None:
        self.file = logging.FileHandler(path, encoding="utf-8")
        self.file.setFormatter(PrintableFormatter("%(asctime)s %(message)s"))  # one record, one line
        for record in self.held:
            self.file.handle(record)
        self.held = []

    def __enter__(self) -> EarlyLog:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self)
        if self.file is not None:
            self.file.close()
