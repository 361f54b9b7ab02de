"""What keeps a run's work safe: SIGINT/SIGTERM turned into a checkpoint and a clean stop, mid-epoch progress
that --resume continues exactly, images that fail to decode mid-epoch, and the one-line messages for a dead
DataLoader worker or a device out of memory (docs/reliability.md). The run-directory guard (check, lock,
manifest) is the RunDir's (engine/rundir.py)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from visiontl.data.sampling import split_item
from visiontl.engine.rundir import close_inherited_locks
from visiontl.engine.seed import worker_init
from visiontl.errors import DataError, TrainingError

log = logging.getLogger("visiontl")


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
    close_inherited_locks()
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
