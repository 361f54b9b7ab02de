"""Image URLs of Label Studio tasks <-> image files under an image folder."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, unquote, urlsplit

from visiontl.errors import DataError

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def looks_like_image(v: str) -> bool:
    low = v.lower().split("?", 1)[0]
    return low.endswith(_IMAGE_SUFFIXES) or v.startswith(("/data/upload/", "/data/local-files/"))


def _url_path(url: str, where: str) -> str:
    """The path part of an image reference, '/'-separated, unquoted."""
    if url.startswith("data:"):
        raise DataError(f"{where}: inline data: images are not supported (export with file references)")
    parts = urlsplit(url)
    if _is_local_files(url):
        return parse_qs(parts.query)["d"][0].replace("\\", "/")
    if _SCHEME.match(url):
        return unquote(parts.path)  # s3://bucket/key: the bucket is the netloc; http(s): the host is
    if url.startswith("/data/"):
        return unquote(parts.path)
    return url.replace("\\", "/")


def image_file_name(url: str, root: Path, where: str) -> str:
    path = _url_path(url, where)
    if ".." in PurePosixPath(path).parts:
        # Label Studio never writes one; it would name a file outside the image folder (its own server
        # refuses such local-files URLs too). Absolute paths and URLs are fine: only their tail is used.
        raise DataError(f"{where}: the image URL {url!r} climbs out of the image folder ('..')")
    pieces = [p for p in PurePosixPath(path).parts if p not in ("/", ".", "")]
    if re.fullmatch(r"[A-Za-z]:", pieces[0] if pieces else ""):
        pieces = pieces[1:]  # a Windows drive
    if not pieces:
        raise DataError(f"{where}: the image URL {url!r} has no file name")
    for i in range(len(pieces)):
        candidate = "/".join(pieces[i:])
        if (root / candidate).is_file():
            return candidate
    m = _UPLOAD_PREFIX.match(pieces[-1])
    if m and (root / m.group(1)).is_file():
        return m.group(1)
    if _is_local_files(url):
        return "/".join(pieces)  # already relative to Label Studio's local-files root, i.e. the image root
    return pieces[-1]


def _is_local_files(url: str) -> bool:
    parts = urlsplit(url)
    return parts.path.rstrip("/").endswith("/local-files") and "d" in parse_qs(parts.query)


def image_url(prefix: str, file_name: str) -> str:
    if "?" in prefix or _SCHEME.match(prefix) or prefix.startswith("/data/"):
        return prefix + quote(file_name, safe="/")
    return prefix + file_name
