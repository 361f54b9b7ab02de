"""What keeps a run's work safe: the run-directory guard, SIGINT/SIGTERM turned into a checkpoint and a
clean stop, mid-epoch progress that --resume continues exactly, images that fail to decode mid-epoch, and
the one-line messages for a dead DataLoader worker or a device out of memory (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from visiontl.data.sampling import split_item
from visiontl.errors import ConfigError, DataError, TrainingError

log = logging.getLogger("visiontl")

# What `train` writes into a run directory (train.log is the CLI's, and kept: it is open while training).
RUN_FILES = ("config.yaml", "log.csv", "metrics.json", "eval_raw.npz", "eval_images.json", "run.json",
             "report.html", "report.md")
RUN_FOLDERS = ("checkpoints", "gallery")


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse to write over another run: a finished one (run.json) or an unfinished one (checkpoints/last.pt)
    needs --force, which removes that run's files first (the folder's other contents stay)."""
    if resume:
        return
    finished = (run_dir / "run.json").is_file()
    unfinished = (run_dir / "checkpoints" / "last.pt").is_file()
    if not (finished or unfinished):
        return
    if not force:
        if finished:
            raise ConfigError(f"run.dir {run_dir} holds a finished run (run.json); pass --force to replace it, or "
                              "choose another run.dir")
        raise ConfigError(f"run.dir {run_dir} holds an unfinished run (checkpoints/last.pt); --resume continues it, "
                          "--force starts over")
    log.info("--force: removing the previous run's files from %s", run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


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
    """Batches of an inner batch sampler; `skip` drops the first ones of the next pass only (resuming an epoch
    half-way). Length counts what the next pass yields."""

    def __init__(self, batches: Sampler):
        self.batches = batches
        self.skip = 0

    def __len__(self) -> int:
        return len(self.batches) - self.skip

    def __iter__(self) -> Iterator[list]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.batches), skip, None)


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
def translated_worker_errors(cfg: Any, step: list[int]) -> Iterator[None]:
    """One line for what a DataLoader worker or the device reports in many: a DataError raised in a worker
    (torch re-raises it with the worker's traceback in the message), a worker killed (often by the kernel's
    out-of-memory killer), the GPU out of memory."""
    try:
        yield
    except DataError as exc:
        raise DataError(_original_message(str(exc), "DataError")) from None
    except torch.OutOfMemoryError:
        t = cfg.train
        raise TrainingError(
            f"the device ran out of memory at step {step[0] + 1} (train.batch_size {t.batch_size}, amp "
            f"{'on' if t.amp else 'off'}): lower train.batch_size and raise train.accumulate to keep the batch "
            f"({t.batch_size // 2} x {t.accumulate * 2}), turn train.amp on, or use smaller images; the last "
            "checkpoint is kept") from None
    except RuntimeError as exc:
        text = str(exc)
        if "DataLoader worker" not in text:
            raise
        first = text.strip().splitlines()[0]
        raise TrainingError(
            f"a DataLoader worker died at step {step[0] + 1} ({first}); usually the system ran out of memory: "
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
