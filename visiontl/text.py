"""Strings that came from a file or a request, made safe to print: control characters (ESC, newline, carriage
return, NUL, bidi overrides, ...) are shown as escapes, so a file name cannot clear a terminal or move its
cursor and a category name cannot forge a line of a log or a metric table.

Kept free of torch: every command prints through it.
"""

from __future__ import annotations

import logging
import unicodedata

# Unicode categories that move, hide or reorder text rather than show it: control, format (bidi overrides,
# zero-width joiners), line and paragraph separators, surrogates and unassigned code points.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object, limit: int | None = None) -> str:
    """`value` as text with every control or format character escaped (`\\x1b`, `\\n`, `\\u202e`); cut to
    `limit` characters (with an ellipsis) where given, so a megabyte-long name stays one readable line."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():  # the common case: nothing to escape (isprintable is False for every unsafe category)
        return text
    return "".join(_escape(c) if c != " " and unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


class PrintableFormatter(logging.Formatter):
    """One log record, one line: the message (with its arguments: file, class and category names) is shown
    through `printable`, so a name cannot write a forged line into train.log or send escape sequences to the
    terminal. A traceback the record carries stays as Python prints it."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "msg": printable(record.getMessage()), "args": None})
        return super().format(record)
