"""Errors a user can act on.

Each carries the process exit status the CLI returns and a message that fits on one line: the file or key,
the record, and what is wrong. Anything else escaping the CLI is a bug in visiontl.
"""

from __future__ import annotations


class VisiontlError(Exception):
    """Base class: a problem with the user's input or environment, reported in one line."""

    exit_code = 1


class ConfigError(VisiontlError):
    """An invalid config file, key, value or command-line override."""

    exit_code = 2


class DataError(VisiontlError):
    """A dataset that cannot be used: missing files, unreadable images, bad labels."""

    exit_code = 2


class WeightsError(VisiontlError):
    """Weights that cannot be found, verified or loaded."""

    exit_code = 2


class CheckpointError(VisiontlError):
    """A checkpoint that cannot be read or does not fit the requested use."""

    exit_code = 2


class TrainingError(VisiontlError):
    """Training that cannot go on: a non-finite loss, the device out of memory. The last checkpoint is kept."""

    exit_code = 1


class WriteError(VisiontlError):
    """An output that could not be written (disk full, permissions); the previous version is kept."""

    exit_code = 1


class Interrupted(VisiontlError):
    """SIGINT / SIGTERM during training: a checkpoint was written first, so --resume continues."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class ExportError(VisiontlError):
    """A model or export option the exporters cannot turn into a file; the message says why."""

    exit_code = 2


class ParityError(VisiontlError):
    """An exported model whose outputs differ from the PyTorch model's by more than the tolerance."""

    exit_code = 1
