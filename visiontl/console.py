"""visiontl's log lines on the console: the handler the CLI sets once per process and the API sets around a
call (visiontl.api), so both print the same lines the same way."""

from __future__ import annotations

import logging
import sys
from typing import Any

from visiontl.text import PrintableFormatter


class ConsoleHandler(logging.StreamHandler):
    """Writes to the sys.stdout of the moment, not the one at creation: the handler is set once per process,
    and a notebook, a test's captured output or a redirect may have replaced (and closed) that stream since."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(PrintableFormatter("%(message)s"))  # one record, one line, file names printable

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass
