"""Strings that came from a file or a request, made safe to print: control characters (ESC, newline, carriage
return, NUL, bidi overrides, ...) are shown as escapes, so a file name cannot clear a terminal or move its
cursor and a category name cannot forge a line of a log or a metric table.

Kept free of torch: every command prints through it.
"""

from __future__ import annotations

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
