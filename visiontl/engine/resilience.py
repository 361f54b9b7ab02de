"""What keeps a run's work safe: the run-directory guard, SIGINT/SIGTERM turned into a checkpoint and a
clean stop, mid-epoch progress that --resume continues exactly, images that fail to decode mid-epoch, and
the one-line messages for a dead DataLoader worker or a device out of memory (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import itertools
import json
import logging
import os
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from visiontl import __version__
from visiontl.atomic import TMP_SUFFIX, atomic_write_json, observe_writes, stop_observing_writes
from visiontl.data.sampling import split_item
from visiontl.engine.gallery import GALLERY_PNG
from visiontl.engine.seed import worker_init
from visiontl.errors import ConfigError, DataError, TrainingError, WriteError
from visiontl.text import PrintableFormatter, printable

log = logging.getLogger("visiontl")

LOCK_FILE = "visiontl.lock"  # flock'ed for the life of a run; holds the pid. Never removed (see RunDir.lock)
MANIFEST = "visiontl-manifest.json"  # every file visiontl wrote into the run directory: what --force removes
# Runs from before the manifest: the files `train` wrote by name (their gallery pictures by their name pattern).
LEGACY_FILES = ("config.yaml", "log.csv", "metrics.json", "eval_raw.npz", "eval_images.json", "run.json",
                "report.html", "report.md", "train.log", "mlflow.json", "checkpoints/last.pt", "checkpoints/best.pt",
                "gallery/index.json")
SHOWN = 4  # names shown when a folder is refused for what it holds


def check_run_dir(run_dir: Path, resume: bool, force: bool, contents: bool = True) -> None:
    """Everything that refuses a run directory, before any work and without writing anything: a path that is not
    a folder or cannot be created, a folder in use by another run, and (`contents`) a folder that holds files of
    anything but a visiontl run, or a run that would be replaced without --force or started over without
    --resume. `evaluate --out` checks no contents: it writes its files into the folder it is given."""
    _check_location(run_dir)
    if run_dir.is_dir():
        _check_not_locked(run_dir)
        if contents:
            _check_contents(run_dir, resume, force)


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


# fds of the run locks this process holds: a DataLoader worker (a fork) closes its copies, so that the lock
# goes with the main process when that is killed, not when its last worker notices.
_held_locks: set[int] = set()


class RunDir:
    """A run directory this process writes: locked for the life of the run, and every file visiontl writes into
    it (through visiontl.atomic, or named with `record`) listed in its manifest before it is written."""

    def __init__(self, run_dir: Path):
        self.path = run_dir
        self.files: set[str] = set()
        self.fd: int | None = None

    @classmethod
    def open(cls, run_dir: Path, resume: bool, force: bool, contents: bool = True) -> RunDir:
        """Create and lock `run_dir`, check it again under the lock, and (a new run) remove the previous run's
        files: those its manifest lists, or for a run from before the manifest the files `train` writes by name."""
        run = cls(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            run.lock()
            if contents:  # again, under the lock: another start may have won the race
                _check_contents(run_dir, resume, force)
            previous = run.previous_files()
            if resume:
                run.files = previous
            else:
                if previous:
                    log.info("removing the previous run's files from %s (%d files)", _p(run_dir), len(previous))
                run.remove(previous)
            run.write_manifest()
        except OSError as exc:
            run.close()
            raise WriteError(f"run.dir {_p(run_dir)}: cannot write ({exc.strerror or exc}); nothing was changed") from None
        except BaseException:
            run.close()
            raise
        observe_writes(run.before_write)
        return run

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


MANIFEST_MAX = 16 * 2**20  # bytes of a manifest read: far above any real run's (a few KB)


class StopRequest:
    """SIGINT and SIGTERM set `signal` instead of killing the process; the trainer finishes the optimizer
    step in hand, writes last.pt and stops. A second signal of the same kind acts as usual (the handler is
    given back after the first), so a stuck run can still be killed from the keyboard."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        log.warning("%s: stopping after this step (a checkpoint is written first); send it again to stop at once",
                    signal.Signals(signum).name)


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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Around the start of DataLoader workers: a fork inherits the blocked mask, so a stop signal sent to the
    process group while a worker starts stays pending until `worker_start` has set it ignored; the main process
    gets its own copy as soon as the workers are forked."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_start(worker_id: int) -> None:
    """A DataLoader worker's first act. SIGINT and SIGTERM sent to the whole process group (Ctrl-C, scancel,
    timeout(1)) are the main process's to act on: had they killed the workers, the epoch would be lost before
    the main process could finish its step. So a worker ignores SIGINT and keeps SIGTERM blocked, and a thread
    takes each SIGTERM with its sender: from the main process (torch shutting the workers down,
    multiprocessing's clean-up at exit) it ends the worker at once, from anyone else it is the main process's
    business and is dropped. A worker whose main process died exits on its own (torch checks). The run lock's
    inherited fds are closed, so the lock goes with the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # already, where forked inside stop_signals_blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_sigterm_from_parent_only, args=(os.getppid(),), daemon=True,
                     name="visiontl-sigterm").start()
    for fd in list(_held_locks):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()
    worker_init(worker_id)


def _sigterm_from_parent_only(parent: int) -> None:
    """In a worker: wait for SIGTERM (blocked in every thread, so it waits here) and end the worker when the
    main process sent it; a signal to the process group comes from a shell, a scheduler or timeout(1)."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            os._exit(0)  # as torch's own worker handler does: a non-zero status would be reported as a crash


class StoppedInValidation(Exception):
    """Raised out of validation when a stop signal has arrived: the trainer writes last.pt and stops."""


class StoppableBatches:
    """A validation loader that ends the evaluation with StoppedInValidation at the first batch after a stop
    signal; `dataset` and len() are the loader's, which is what the tasks' evaluate reads."""

    def __init__(self, loader: Any, stop: StopRequest):
        self.loader, self.stop = loader, stop
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in until_stopped(self.loader, self.stop):
            if self.stop.requested:
                raise StoppedInValidation
            yield batch
        if self.stop.requested:
            raise StoppedInValidation


def until_stopped(batches: Any, stop: StopRequest) -> Iterator[Any]:
    """The loader's batches; when a signal has arrived and a worker died of it too (a worker killed before it
    could ignore it), the pass ends there instead of failing on the dead worker."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError:
            if stop.requested:
                return
            raise
        yield batch


@dataclass
class EpochProgress:
    """How far the epoch in hand got: what a mid-epoch checkpoint saves and --resume continues from."""

    batches: int = 0  # micro-batches of this epoch already trained on (at an optimizer-step boundary)
    loss_total: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # summed loss x images
    seen: int = 0
    skipped: int = 0
    interrupted: int | None = None  # the signal that stopped the epoch
    rng: dict[str, Any] | None = None  # resume: RNG states to restore once the loader's iterator exists

    def to_state(self) -> dict[str, Any]:
        return {"batches": self.batches, "loss_total": self.loss_total.detach().cpu(), "seen": self.seen,
                "skipped": self.skipped}

    @classmethod
    def from_state(cls, state: dict[str, Any], rng: dict[str, Any]) -> EpochProgress:
        return cls(int(state["batches"]), state["loss_total"], int(state["seen"]), int(state["skipped"]), rng=rng)


class ResumableBatches(Sampler[list]):
    """Batches of an inner batch sampler without the first `skip` (resuming an epoch half-way); the trainer
    sets `skip` before each pass. Length counts what a pass yields. Iterating does not reset `skip`: torch's
    multi-worker iterator makes the sampler's iterator twice as it starts (the first is thrown away)."""

    def __init__(self, batches: Sampler):
        self.batches = batches
        self.skip = 0

    def __len__(self) -> int:
        return len(self.batches) - self.skip

    def __iter__(self) -> Iterator[list]:
        return itertools.islice(iter(self.batches), self.skip, None)


class SkipBadImages(Dataset):
    """data.on_bad_image: skip. An item whose image fails to decode is replaced by the next one (with its own
    augmentation seed) and named in a warning; after 10 failures in a row the error stands."""

    ATTEMPTS = 10

    def __init__(self, inner: Dataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:  # image_files, file_of, aspect_groups, ... of the wrapped set
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getitem__(self, item: Any) -> Any:
        index, seed = split_item(item)
        for attempt in range(self.ATTEMPTS):
            try:
                return self.inner[((index + attempt) % len(self.inner), seed)]
            except DataError as exc:
                if attempt + 1 == self.ATTEMPTS:
                    raise
                log.warning("skipped (data.on_bad_image: skip): %s", exc)
        raise AssertionError("unreachable")


@contextlib.contextmanager
def translated_worker_errors(cfg: Any, state: Any) -> Iterator[None]:
    """One line for what a DataLoader worker or the device reports in many: a DataError raised in a worker
    (torch re-raises it with the worker's traceback in the message), a worker killed (often by the kernel's
    out-of-memory killer), the GPU out of memory. `state` (a TrainState) says the step in hand."""
    try:
        yield
    except DataError as exc:
        raise DataError(_original_message(str(exc), "DataError")) from None
    except torch.OutOfMemoryError:
        t = cfg.train
        raise TrainingError(
            f"the device ran out of memory at step {state.step + 1} (train.batch_size {t.batch_size}, amp "
            f"{'on' if t.amp else 'off'}): lower train.batch_size and raise train.accumulate to keep the batch "
            f"({t.batch_size // 2} x {t.accumulate * 2}), turn train.amp on, or use smaller images; the last "
            "checkpoint is kept") from None
    except RuntimeError as exc:
        text = str(exc)
        if "DataLoader worker" not in text:
            raise
        first = text.strip().splitlines()[0]
        raise TrainingError(
            f"a DataLoader worker died at step {state.step + 1} ({first}); usually the system ran out of memory: "
            f"lower train.workers ({cfg.train.workers}), train.batch_size or data.cache_max_gb; the last "
            "checkpoint is kept") from None


def _original_message(text: str, kind: str) -> str:
    """The worker's own message out of torch's 'Caught X in DataLoader worker process N.' wrapper."""
    marker = f"{kind}: "
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return lines[-1].strip() if lines else text
