"""Atomic file writes: every file is written to a temporary file beside its target, flushed to disk and
renamed over it, so a kill at any instant leaves either the old file or the new one, never half of one.

A rename replaces whatever has the target's name, so the target is looked at first:

- missing, or a regular file: the atomic write (an existing file keeps its permission bits);
- a symbolic link: the link stays; the file it points to is replaced atomically, the temporary beside that
  file (as an editor that keeps links does). A dangling link is refused, as `cp` refuses to write through one;
- a FIFO or a character device (`/dev/null`, `/dev/tty`): written through with a plain write, as a shell
  redirection does; `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` (links into /proc that stand for this process's
  open files): written through a copy of that descriptor, as bash does;
- a folder, a block device, a socket: refused in one line.

`written_together(protect=...)` makes a group of writes one batch: each goes to its temporary, and only when
the block ends without an error are they renamed into place; a write or removal whose target is one of the
protected files (an input of a conversion) refuses the whole batch before any target is touched.

Kept free of torch so that light commands (`visiontl score`, `visiontl report`) start fast.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from visiontl.errors import WriteError
from visiontl.text import printable

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)

# Called with each target path before it is written: a run directory's manifest records what visiontl writes
# there (engine/rundir.py), so `train --force` removes exactly that. Recorded before the write, so a kill
# in between leaves at most a listed file that does not exist, never a written file that is not listed.
_before_write: list[Any] = []


def observe_writes(callback: Any) -> None:
    _before_write.append(callback)


def stop_observing_writes(callback: Any) -> None:
    if callback in _before_write:
        _before_write.remove(callback)


class _Batch:
    """The writes of a `written_together` block: target -> its finished temporary, and removals."""

    def __init__(self, protect: Iterable[Path]):
        self.protected: dict[tuple[int, int], Path] = {}
        for path in protect:
            key = _file_key(Path(path))
            if key is not None:
                self.protected.setdefault(key, Path(path))
        self.staged: dict[Path, str] = {}
        self.removals: dict[Path, Path] = {}  # the real file's name -> the name to unlink (a link itself)
        self.new_folders: list[Path] = []

    def refuse_inputs(self, target: Path, shown: Path) -> None:
        source = self.protected.get(_file_key(target) or (-1, -1))
        if source is not None:
            same = "" if source == shown else f" (it is {printable(source)})"
            raise WriteError(f"{printable(shown)}: refusing to replace an input file{same}; write to another folder; "
                             "nothing was written")

    def stage(self, target: Path, tmp: str) -> None:
        """The latest of several writes and removals of one file in a batch is the one that counts."""
        self.unstage(target)
        self.staged[target] = tmp

    def unstage(self, target: Path) -> None:
        earlier = self.staged.pop(target, None)
        if earlier is not None:
            Path(earlier).unlink(missing_ok=True)
        self.removals.pop(target, None)

    def commit(self) -> None:
        for target, tmp in list(self.staged.items()):
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise WriteError(f"{printable(target)}: cannot write ({exc.strerror or exc})") from None
            del self.staged[target]
        for path in self.removals.values():
            path.unlink(missing_ok=True)

    def abort(self) -> None:
        for tmp in self.staged.values():
            Path(tmp).unlink(missing_ok=True)
        for folder in reversed(self.new_folders):  # deepest first; only what is still empty
            with contextlib.suppress(OSError):
                folder.rmdir()


_BATCH: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("visiontl_atomic_batch", default=None)


@contextlib.contextmanager
def written_together(protect: Iterable[Path] = ()) -> Iterator[None]:
    """Install every atomic write of the block at its end, all or none; refuse (WriteError, before any target
    is touched) a write or `remove_output` whose target is the same file as one of `protect` (compared by
    device and inode, so a symlink or hard link to an input counts). Reads inside the block see files as they
    were before it."""
    batch = _Batch(protect)
    token = _BATCH.set(batch)
    try:
        yield
    except BaseException:
        batch.abort()
        raise
    finally:
        _BATCH.reset(token)
    try:
        batch.commit()
    except BaseException:
        batch.abort()  # the temporaries a failed commit left
        raise


def remove_output(path: Path) -> None:
    """Delete an output file that is no longer wanted; inside `written_together`, at the end of the batch and
    never an input."""
    path = Path(path)
    batch = _BATCH.get()
    if batch is None:
        path.unlink(missing_ok=True)
        return
    batch.refuse_inputs(path, path)
    real = Path(os.path.realpath(path))  # the name staged writes are kept under
    batch.unstage(real)
    batch.removals[real] = path


def atomic_write(path: Path, write: Any) -> None:
    """Write `path` through `write(file)`; an OSError (disk full, no permission, ...) becomes a one-line
    WriteError naming the file, and the previous version stays as it was. What a target that is not a
    regular file gets is in the module's docstring."""
    path = Path(path)
    batch = _BATCH.get()
    for callback in list(_before_write):
        callback(path)
    try:
        if batch is not None and not path.parent.is_dir():
            batch.new_folders += _missing_folders(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        target, mode = _destination(path)
        if target is None:
            _write_through(path, write)
            return
        if batch is not None:
            batch.refuse_inputs(target, path)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise WriteError(f"{printable(path)}: cannot write ({exc.strerror or exc}); nothing was changed") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE if mode is None else mode)
        if batch is not None:
            batch.stage(target, tmp)
        else:
            os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a full disk as a RuntimeError raised while handling the OSError
        cause = exc if isinstance(exc, OSError) else exc.__context__
        if isinstance(cause, OSError):
            kept = "the previous version is intact" if target.exists() else "nothing was written"
            raise WriteError(f"{printable(path)}: cannot write ({cause.strerror or cause}); {kept}") from None
        raise


def _destination(path: Path) -> tuple[Path | None, int | None]:
    """Where the temporary is renamed to, and the permission bits it gets (None: the default); (None, None)
    for a stream (FIFO, character device, an open file under /proc) that is written through instead."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path, None
    if stat.S_ISLNK(st.st_mode):
        if _proc_link(path)[0]:
            return None, None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise WriteError(f"{printable(path)}: a symbolic link to {printable(os.readlink(path))}, which does not "
                             "exist; not writing through a dangling link") from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise WriteError(f"{printable(path)}: is {kind}, not a file; nothing was written")
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return None, None
    real = Path(os.path.realpath(path))
    if _file_key(real) != (st.st_dev, st.st_ino):  # a link whose name no longer leads to the file
        raise WriteError(f"{printable(path)}: cannot tell which file this link names; nothing was written")
    return real, stat.S_IMODE(st.st_mode)


def _kind(mode: int) -> str | None:
    """What a target that can be neither replaced nor written through is, in words; None for the others."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISBLK(mode):
        return "a block device (a disk)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return None
    return "a special file"


_OPEN_FD = re.compile(r"/(?:proc/(self|\d+)|dev)/fd/(\d+)")


def _proc_link(path: Path) -> tuple[bool, int | None]:
    """Whether the chain of links at `path` passes through /proc, where a name stands for a process's open file
    (a terminal, a pipe, or the file a shell redirected to), and the descriptor number where that is this
    process's own (/dev/stdout -> /proc/self/fd/1, /dev/fd/N)."""
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links in a row
        match = _OPEN_FD.fullmatch(current)
        if match and match.group(1) in (None, "self", str(os.getpid())):
            return True, int(match.group(2))
        if current == "/proc" or current.startswith("/proc/"):
            return True, None
        if not os.path.islink(current):
            return False, None
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
    return False, None


def _write_through(path: Path, write: Any) -> None:
    """A plain write. This process's own descriptor (/dev/stdout) is written through a copy of it, at its
    position and without truncating, as bash treats /dev/stdout in a redirection: opening
    /proc/self/fd/1 anew would truncate a redirected file and write over what was printed before."""
    fd = _proc_link(path)[1]
    try:
        if fd is None:
            with open(path, "wb") as f:  # a FIFO's open waits for its reader, as a shell redirection does
                write(f)
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, ValueError, OSError):
                if stream.fileno() == fd:
                    stream.flush()
        with os.fdopen(os.dup(fd), "wb") as f:
            write(f)
    except OSError as exc:
        raise WriteError(f"{printable(path)}: cannot write ({exc.strerror or exc})") from None


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _missing_folders(folder: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` will create for `folder`, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


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
