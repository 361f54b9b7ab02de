"""Image URLs of Label Studio tasks <-> image files under an image folder.

A task names its image by a URL: `/data/upload/<project>/<8 hex>-<name>` (a file uploaded to Label Studio,
which prefixes its name), `/data/local-files/?d=<path>` (local storage: the path under Label Studio's
document root), `s3://bucket/<key>`, `gs://...`, `http(s)://host/<path>` (cloud storage, the web) or a plain
path. The image is looked for under the image folder, then under its `images/` sub-folder, by the URL's path:
its longest tail that names a file there (`d=` paths, keys and upload folders keep their sub-folders), the
file name with an upload's prefix first, then without it. Only tails of the path are tried, never the path
as written: an absolute path, a host or a bucket never leads outside the image folder, and a `..` in the
path is refused."""

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
        path = parse_qs(parts.query)["d"][0]
    elif _SCHEME.match(url) or url.startswith("/data/"):
        path = unquote(parts.path)  # s3://bucket/key: the bucket is the netloc; http(s): the host is
    else:
        path = url
    return path.replace("\\", "/")  # a Windows path, or an escaped backslash: never a part of a name


# Where an image is looked for under the image folder: in it, then in its images/ sub-folder (an export
# beside the folder of its images).
_IMAGE_FOLDERS = ("", "images/")


def image_file_name(url: str, root: Path, where: str) -> str:
    """The file name (relative to `root`) of the image a task's URL names (the rules: the module docstring).
    When no file matches: a local-files path as it is (already relative to Label Studio's document root, which
    plays the image folder's part), else the URL's base name."""
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
    m = _UPLOAD_PREFIX.match(pieces[-1])
    names = [pieces[-1], m.group(1)] if m else [pieces[-1]]  # as uploaded; as the user's own copy is named
    for folder in _IMAGE_FOLDERS:
        for i in range(len(pieces)):
            for name in names:
                candidate = folder + "/".join([*pieces[i:-1], name])
                if (root / candidate).is_file():
                    return candidate
    if _is_local_files(url):
        return "/".join(pieces)
    return pieces[-1]


def _is_local_files(url: str) -> bool:
    parts = urlsplit(url)
    return parts.path.rstrip("/").endswith("/local-files") and "d" in parse_qs(parts.query)


def image_url(prefix: str, file_name: str) -> str:
    if "?" in prefix or _SCHEME.match(prefix) or prefix.startswith("/data/"):
        return prefix + quote(file_name, safe="/")
    return prefix + file_name
