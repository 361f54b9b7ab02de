"""Atomic file writes: every file is written to a temporary file beside its target, flushed to disk and
renamed over it, so a kill at any instant leaves either the old file or the new one, never half of one.

Kept free of torch so that light commands (`visiontl score`, `visiontl report`) start fast.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from visiontl.errors import WriteError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)

# Called with each target path before it is written: a run directory's manifest records what visiontl writes
# there (engine/resilience.py), so `train --force` removes exactly that. Recorded before the write, so a kill
# in between leaves at most a listed file that does not exist, never a written file that is not listed.
_before_write: list[Any] = []


def observe_writes(callback: Any) -> None:
    _before_write.append(callback)


def stop_observing_writes(callback: Any) -> None:
    if callback in _before_write:
        _before_write.remove(callback)


def atomic_write(path: Path, write: Any) -> None:
    """Write `path` through `write(file)`; an OSError (disk full, no permission, ...) becomes a one-line
    WriteError naming the file, and the previous version stays as it was."""
    path = Path(path)
    for callback in list(_before_write):
        callback(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise WriteError(f"{path}: cannot write ({exc.strerror or exc}); nothing was changed") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a full disk as a RuntimeError raised while handling the OSError
        cause = exc if isinstance(exc, OSError) else exc.__context__
        if isinstance(cause, OSError):
            kept = "the previous version is intact" if path.exists() else "nothing was written"
            raise WriteError(f"{path}: cannot write ({cause.strerror or cause}); {kept}") from None
        raise


def remove_stale_temporaries(folder: Path) -> int:
    """Delete what a kill in the middle of atomic_write left in `folder` (hidden `.name.*.tmp` files)."""
    removed = 0
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
