"""What every format reader checks the same way: a JSON or XML file read with one-line errors, finite numbers,
numbers given as text (XML attributes), image file names that stay inside their folder, and the first line
of an exception for a message. Also the record of the files a reader read (`recording_inputs`), so that a
conversion never writes over one of them.

XML (VOC, CVAT, Label Studio label configs, serve's /setup, the demo's sample) is parsed only by `read_xml` /
`parse_xml`: defusedxml refuses a document that declares entities or external references before expanding
anything (a billion-laughs file would take gigabytes, an external entity would read another file or URL),
and every failure, a missing file included, is one DataError line naming the file. A file's size is not
bounded (no reader bounded it before): without entity expansion the parser holds about what the file holds;
serve bounds a request's body before parsing it."""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from visiontl.errors import DataError


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def is_number(v: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_INPUTS: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("visiontl_read_inputs", default=None)


@contextlib.contextmanager
def recording_inputs() -> Iterator[list[Path]]:
    """Collect every annotation-side file (annotations, lists, class files, masks) the readers in the block
    read, in the list it yields: the files a conversion's output must never replace."""
    inputs: list[Path] = []
    token = _INPUTS.set(inputs)
    try:
        yield inputs
    finally:
        _INPUTS.reset(token)


def note_input(path: Path) -> None:
    """A reader is about to read `path` (called by every reader for each file other than an image)."""
    inputs = _INPUTS.get()
    if inputs is not None:
        inputs.append(Path(path))


def read_text(path: Path, what: str, encoding: str = "utf-8") -> str:
    """The text of an input file (recorded as read); not found or unreadable is one DataError line, `what`
    naming the file ("annotation file not found")."""
    note_input(path)
    try:
        return Path(path).read_text(encoding=encoding)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None


def read_json(path: Path, what: str = "annotation file") -> Any:
    """Parse a JSON file (a UTF-8 byte order mark, as Windows tools write, is allowed)."""
    return parse_json(read_text(path, what, "utf-8-sig"), path)


def parse_json(text: str | bytes, where: str | Path) -> Any:
    """json.loads with one-line errors, a document nested deeper than Python's stack included."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError:  # Python's guard against slow conversions: an integer of more than 4,300 digits
        raise DataError(f"{where}: holds an integer of more than 4,300 digits; no annotation value has that many") \
            from None
    except RecursionError:
        raise DataError(f"{where}: not valid JSON (nested too deeply for an annotation file)") from None


def read_xml(path: Path, what: str = "annotation file") -> ET.Element:
    """The root element of an XML file, parsed safely (see the module docstring); `what` names the file in
    the messages ("annotation file not found")."""
    import defusedxml.ElementTree as SafeET

    note_input(path)
    try:
        with _xml_errors(path, what):
            return SafeET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_xml(text: str | bytes, where: str | Path, what: str = "annotation file") -> ET.Element:
    """The root element of an XML document held in memory, parsed safely; `where` starts every message."""
    import defusedxml.ElementTree as SafeET

    with _xml_errors(where, what):
        return SafeET.fromstring(text)


@contextlib.contextmanager
def _xml_errors(where: str | Path, what: str) -> Iterator[None]:
    from defusedxml import DefusedXmlException

    try:
        yield
    except ET.ParseError as exc:
        raise DataError(f"{where}: not valid XML ({first_line(exc)})") from None
    except DefusedXmlException as exc:
        name = getattr(exc, "name", None)
        raise DataError(f"{where}: refused: the file declares XML entities or external references"
                        f"{f' ({name!r})' if name else ''}, which {what}s never need "
                        "(billion-laughs / external-entity attacks)") from None


def short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def parse_number(text: str | None, what: str, where: str) -> float:
    """A finite number written as text (XML); one line naming the record otherwise."""
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: {what} {short(text) if text is not None else None!r} is not a number")
    return value


def relative_name(name: str, where: str, what: str = "file name") -> PurePosixPath:
    """A file name from an annotation file as a path inside its image folder ("\\" separators accepted).
    An annotation names images relative to a folder; an absolute path (`/etc/passwd`, `C:\\x.jpg`,
    `\\\\server\\share\\x.jpg`) or one that climbs out of the folder (`../x.jpg`) would make visiontl read, copy or
    write files elsewhere, so it is refused with one line naming the file and record."""
    text = name.replace("\\", "/")
    rel = PurePosixPath(text)
    if not name or rel.is_absolute() or _DRIVE.match(text) or ".." in rel.parts or not rel.parts:
        raise DataError(f"{where}: {what} {name!r} is not a path inside the image folder")
    return rel


_DRIVE = re.compile(r"^[A-Za-z]:")  # C:\x.jpg, C:x.jpg: a Windows drive
