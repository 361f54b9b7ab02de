"""`visiontl serve`: a checkpoint as a Label Studio ML backend (pre-annotation while you label).

Label Studio speaks JSON over HTTP to the backend (label-studio-ml-backend's protocol):

- `GET /health` (and `GET /`) -> `{"status": "UP", "model_class": ..., "model_version": ...}`; answered
  without waiting for the model, so a health check never times out behind a long prediction.
- `POST /setup` `{"project": "<id>.<created>", "schema": "<View>...</View>", "hostname", "access_token",
  "model_version"}` -> `{"model_version": ...}`. The schema (the project's label config) is kept per project;
  a config with no control the model can fill is a 400, which Label Studio shows on the model card.
- `POST /predict` `{"tasks": [{"id", "data": {"image": ...}}, ...], "label_config", "project", "params"}` ->
  `{"results": [{"result": [...], "score": ..., "model_version": ...}, ...], "model_version": ...}`: one
  prediction per task, in task order. A task whose image cannot be found, read, or is refused (a path
  outside the roots, more pixels than `--max-pixels`), or whose prediction fails in any way, gets an empty
  result and an `"error"` (the batch still answers 200). Images are decoded a few at a time: the declared
  pixels of those decoded together add up to at most the pixel budget (one image may use all of it).
  A task gets the regions scoring at least the display threshold (`--display-threshold`, default the
  config's model.display_threshold for detectors), at most `--max-regions` of them, highest scores first.
- `POST /webhook`, `POST /train`, `GET|POST /versions`, `GET /metrics`: minimal answers (this backend does
  not train).

Errors are JSON `{"error": "one line"}`: 400 for a malformed request, 404 for an unknown path, 405 (with
`Allow: GET, POST`) for any other method, 413 for a body over `--max-request-mb`, 500 for a bug. Every string a
client sent (paths, project ids, image references, task ids) goes into the log through `text.printable`.

Images are never downloaded. A task's image reference is mapped to a file under one of the `--root`
folders (see `Backend.resolve`), and a file outside every root is refused (symbolic links are followed
before the check).

Label configs are read by the Label Studio package's one parser (`labelstudio.parse_label_config`), and
results are built by its `prediction_results` (percent coordinates of the top-left corner, rotation,
polygons, brush RLE), the conversion the writer uses, so a served prediction and one written by
`visiontl predict --format labelstudio` are the same JSON.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from visiontl.data.formats.labelstudio.label_config import (HELD, TAGS, LabelConfig, parse_label_config,
                                                             read_label_config)
from visiontl.errors import ConfigError, DataError, VisiontlError
from visiontl.text import printable

log = logging.getLogger("visiontl")

# Which result type a task's predictions become, by preference, among the controls the label config has.
_KINDS = {
    "detection": ("rectanglelabels",),
    "instance_segmentation": ("brushlabels", "polygonlabels", "rectanglelabels"),
    "segmentation": ("brushlabels", "polygonlabels", "rectanglelabels"),
}
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_DRAIN_FACTOR = 16  # a body over the limit is read and dropped up to this many limits (clean 413), else cut
_SHOWN = 200  # characters of a client's string shown in an error or the log (a 10 MB image name stays one line)
# The listen backlog: connections the kernel completes and queues while the serving thread is between two
# accept()s. Label Studio opens one connection per request (a health check per project every few seconds,
# a /predict per task opened by each annotator, bursts from "Retrieve predictions"), and socketserver's
# default of 5 resets the rest of a burst (7-10% of 200 concurrent clients). A queued connection costs the
# kernel a few hundred bytes; Linux caps the number at net.core.somaxconn (4096 since 5.4, 128 before).
LISTEN_BACKLOG = 1024
# Regions sent per task at most (--max-regions), highest scores first: an annotator corrects a few dozen
# pre-annotated shapes; a hundred overlapping ones from a young model are more work than drawing from scratch.
MAX_REGIONS = 50


class BadRequest(Exception):
    """A request the server cannot use: answered 400 with its message."""


# --- label config ------------------------------------------------------------------------------------------

# Without a config from Label Studio or --label-config: control `label` on image `image`, data key `image`.
DEFAULT_CONFIG = LabelConfig({k: "label" for k in HELD}, {k: "image" for k in HELD}, {"image": "image"})


# --- the backend -------------------------------------------------------------------------------------------


class Backend:
    """A checkpoint's Predictor answering Label Studio's ML backend requests (independent of HTTP: `health`,
    `setup`, `predict` take and return JSON-ready dicts; `make_server` puts them behind HTTP)."""

    def __init__(self, predictor: Any, roots: list[Path], *, host: str = "127.0.0.1",
                 display_threshold: float | None = None, max_regions: int = MAX_REGIONS,
                 label_config: LabelConfig | None = None, model_version: str | None = None,
                 max_request_mb: float = 10.0, max_pixels: int | None = None) -> None:
        task = predictor.config.task
        if task not in _KINDS:
            raise DataError(f"visiontl serve pre-annotates boxes and masks: a {task} checkpoint cannot fill a "
                            "Label Studio shape control")
        self.predictor = predictor  # a visiontl.predictor Predictor of the checkpoint
        self.task = task
        self.roots = _check_roots(roots)
        self.hosts = {h for h in (*_LOCAL_HOSTS, host.lower().strip("[]")) if h not in ("", "0.0.0.0", "::")}
        # the lowest score of a region sent: detection, the config's model.display_threshold; segmentation
        # (a region per class, scored by its mean probability), every region unless one is given
        if display_threshold is None and task != "segmentation":
            display_threshold = predictor.config.model.display_threshold
        self.display_threshold = display_threshold
        if max_regions < 1:
            raise ConfigError(f"--max-regions must be at least 1, not {max_regions}")
        self.max_regions = max_regions
        self.label_config = label_config
        self.model_version = model_version or (
            f"visiontl {predictor.config.model.arch} {predictor.config.model.backbone} "
            f"epoch {'?' if predictor.epoch is None else predictor.epoch}")
        if not max_request_mb > 0:
            raise ConfigError(f"--max-request-mb must be positive, not {max_request_mb}")
        self.max_request_bytes = int(max_request_mb * 1024 * 1024)
        # the pixel budget: an image declaring more is that task's error; the images decoded together declare
        # at most this many pixels in all
        self.max_pixels = predictor.config.data.max_pixels if max_pixels is None else max_pixels
        self._model_lock = threading.Lock()  # one inference at a time; health checks never wait for it
        self._projects = ProjectConfigs()
        if label_config is not None:
            try:
                self._kind(label_config)  # refuse, at start, a config the model cannot fill
            except BadRequest as exc:
                raise ConfigError(f"--label-config: {exc}") from None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, roots: list[Path], *, label_config: Path | None = None,
                        **kwargs: Any) -> Backend:
        from visiontl.engine.inference import load_trained
        from visiontl.predictor import checkpoint_predictor

        config = read_label_config(label_config, predictions=True) if label_config is not None else None
        _check_roots(roots)  # the cheap checks first, before the model loads
        if not kwargs.get("max_request_mb", 10.0) > 0:
            raise ConfigError(f"--max-request-mb must be positive, not {kwargs['max_request_mb']}")
        if kwargs.get("max_regions", MAX_REGIONS) < 1:
            raise ConfigError(f"--max-regions must be at least 1, not {kwargs['max_regions']}")
        started = time.perf_counter()
        backend = cls(checkpoint_predictor(load_trained(checkpoint), checkpoint), roots, label_config=config, **kwargs)
        log.info(f"model ready: {backend.model_version} ({backend.task}, classes "
                 f"{', '.join(backend.predictor.classes)}) loaded from {checkpoint} in {time.perf_counter() - started:.1f} s; "
                 f"{backend.regions_sent()}")
        return backend

    def regions_sent(self) -> str:
        """Which regions a task gets, in words (the start-up line)."""
        shown = "every region" if self.display_threshold is None else \
            f"regions scoring at least {self.display_threshold:g} (--display-threshold)"
        return f"sending {shown}, at most {self.max_regions} per task, highest scores first (--max-regions)"

    # --- endpoints ---

    def health(self) -> dict[str, Any]:
        return {"status": "UP", "model_class": "visiontl.serve.Backend", "model_version": self.model_version,
                "task": self.task}

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        schema = body.get("schema")
        project = _project_id(body)
        shown = printable(project or "?", _SHOWN)
        if isinstance(schema, str) and schema.strip():
            try:
                config = parse_label_config(schema, f"project {shown}: label config", predictions=True)
            except DataError as exc:
                raise BadRequest(printable(exc)) from None
            kind = self._kind(config)
            unknown = [c for c in self.predictor.classes if config.labels.get(kind) and c not in config.labels[kind]]
            if unknown:
                log.warning(printable(
                    f"project {shown}: classes {', '.join(unknown)} of the model are not labels of its "
                    f"{TAGS[kind]} control {config.controls[kind][:_SHOWN]!r}: add them to the label config, "
                    "or their predictions show as unknown labels"))
            self._projects.put(project, config.needed())
            log.info(printable(f"setup: project {shown} -> {TAGS[kind]} {config.controls[kind][:_SHOWN]!r} "
                               f"on {config.to_names[kind][:_SHOWN]!r}"))
        elif schema is not None and not isinstance(schema, str):
            raise BadRequest("'schema' must be the label config as an XML string")
        return {"model_version": self.model_version}

    def versions(self) -> dict[str, Any]:
        return {"versions": [self.model_version], "model_version": self.model_version}

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' must be a list of tasks ({\"data\": {\"image\": ...}})")
        for i, task in enumerate(tasks):
            if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                raise BadRequest(f"task #{i + 1}: not an object with a 'data' object")
        config = self._config_for(body)
        kind = self._kind(config)
        started = time.perf_counter()
        # per task: (regions, error); a task's failure, whatever it is, is its own answer, never the batch's
        outcomes: list[tuple[list[dict[str, Any]], str | None]] = [([], None)] * len(tasks)
        usable: list[tuple[int, Path, int]] = []  # (task index, image file, its declared pixels)
        for i, task in enumerate(tasks):
            try:
                usable.append((i, *self._image(task, config, kind)))
            except Exception as exc:  # noqa: BLE001 (a refused image, or a bug: either way this task's error)
                outcomes[i] = ([], _failure(exc, "predict"))
        for batch in _batches(usable, self.max_pixels):
            for (i, _, _), outcome in zip(batch, self._infer([path for _, path, _ in batch], config, kind)):
                outcomes[i] = outcome
        results, n_regions = [], 0
        for i, (task, (regions, error)) in enumerate(zip(tasks, outcomes)):
            scores = [r["score"] for r in regions]
            entry: dict[str, Any] = {"result": regions, "score": sum(scores) / len(scores) if scores else 0.0,
                                     "model_version": self.model_version}
            if error is not None:
                entry["error"] = printable(_task_label(task, i) + error)
                log.warning(f"predict: {entry['error']}")
            n_regions += len(regions)
            results.append(entry)
        failed = sum("error" in r for r in results)
        log.info(f"predict: {len(tasks)} task(s), {n_regions} region(s), {failed} failed, "
                 f"{time.perf_counter() - started:.2f} s")
        return {"results": results, "model_version": self.model_version}

    # --- images ---

    def _image(self, task: dict[str, Any], config: LabelConfig, kind: str) -> tuple[Path, int]:
        """A task's image file and its declared pixels, read from the header only: a missing, unreadable or
        too large image (over the pixel budget) is refused here, before anything is decoded."""
        from visiontl.data.images import check_image

        path = self.resolve(image_reference(task["data"], config.image_key(kind)))
        width, height = check_image(path, self.max_pixels)
        return path, width * height

    def resolve(self, ref: Any) -> Path:
        """The file a task's image reference names, inside one of the roots, or DataError saying why not.

        - a plain path: relative ones are looked up under each root in turn; absolute ones must lie in a root;
        - `/data/local-files/?d=dir/x.jpg` (Label Studio's local files): `dir/x.jpg` under the roots, which play
          the part of LOCAL_FILES_DOCUMENT_ROOT;
        - `/data/upload/3/ab12cd34-x.jpg` (uploads): `upload/3/ab12cd34-x.jpg` under the roots, so Label Studio's
          media folder (which holds `upload/`) is the root to give;
        - `file:///abs/path`: as an absolute path;
        - `http(s)://HOST[:port]/...` with HOST this machine (127.0.0.1, localhost, ::1 or --host): its path
          read as above (local-files, upload, or else a path relative to the roots); never downloaded;
        - anything else (other hosts, s3://, gs://, data:) is refused.

        Error messages show the reference through `printable`, cut to a few hundred characters.
        """
        if not isinstance(ref, str) or not ref.strip():
            raise DataError(f"the image reference {printable(repr(ref), _SHOWN)} is not a non-empty string")
        ref = ref.strip()
        shown = printable(ref, _SHOWN)
        if ref.startswith("data:"):
            raise DataError("inline data: images are not supported (give a file path or URL)")
        try:
            parts = urlsplit(ref)
            host = (parts.hostname or "").lower()
        except ValueError as exc:  # a malformed IPv6 host or port: urlsplit and .hostname refuse it
            raise DataError(f"{shown}: not a usable URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if host not in self.hosts:
                raise DataError(f"{shown}: refused: host {printable(host or '?', _SHOWN)!r} is not this machine "
                                f"({', '.join(sorted(self.hosts))}); visiontl serve reads files under its --root "
                                "folders and never downloads")
            return self._from_url_path(parts, shown)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise DataError(f"{shown}: refused: a file:// URL on another host "
                                f"({printable(parts.netloc, _SHOWN)!r})")
            return self._inside(unquote(parts.path), shown)
        if len(scheme) > 1:  # one letter: a Windows drive, i.e. a path
            raise DataError(f"{shown}: {printable(scheme, _SHOWN)}:// images are not supported (visiontl serve "
                            "reads local files under its --root folders)")
        if ref.startswith(("/data/local-files", "/data/upload/")):
            return self._from_url_path(parts, shown)
        return self._inside(ref, shown)

    def _from_url_path(self, parts: Any, shown: str) -> Path:
        path = unquote(parts.path)
        if path.rstrip("/").endswith("/data/local-files"):
            d = parse_qs(parts.query).get("d")
            if not d or not d[0]:
                raise DataError(f"{shown}: a local-files URL without ?d=PATH")
            return self._inside(d[0], shown)
        if path.startswith("/data/upload/"):
            return self._inside(path[len("/data/"):], shown)
        return self._inside(path.lstrip("/"), shown)

    def _inside(self, path: str, shown: str) -> Path:
        """The file `path` names inside a root; `shown`: the reference as error messages show it."""
        p = Path(path.replace("\\", "/"))
        candidates = [p] if p.is_absolute() else [root / p for root in self.roots]
        inside = False
        for candidate in candidates:
            try:
                real = candidate.resolve()
                if not any(real == root or root in real.parents for root in self.roots):
                    continue
                inside = True
                if real.is_file():
                    return real
            except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a symlink loop
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise DataError(f"{shown}: not a usable path ({printable(reason, _SHOWN)})") from None
        roots = ", ".join(map(str, self.roots))
        if not inside:
            raise DataError(f"{shown}: refused: it resolves outside the --root folders ({roots}); visiontl serve "
                            "never reads files outside them")
        raise DataError(f"{shown}: image file not found under the --root folders ({roots})")

    # --- internals ---

    def _config_for(self, body: dict[str, Any]) -> LabelConfig:
        text = body.get("label_config")
        if isinstance(text, str) and text.strip():
            try:
                return parse_label_config(text, "label_config", predictions=True)
            except DataError as exc:
                raise BadRequest(printable(exc)) from None
        return self._projects.get(_project_id(body)) or self.label_config or DEFAULT_CONFIG

    def _kind(self, config: LabelConfig) -> str:
        for kind in _KINDS[self.task]:
            if kind in config.controls:
                return kind
        wanted = " or ".join(TAGS[k] for k in _KINDS[self.task])
        raise BadRequest(f"a {self.task} model needs a {wanted} control in the label config; it has "
                         f"{', '.join(TAGS[k] for k in config.controls) or 'none'}")

    def _infer(self, files: list[Path], config: LabelConfig, kind: str) -> list[tuple[list[dict[str, Any]], str | None]]:
        """Per file: its Label Studio results and an error (None when it was predicted)."""
        from visiontl.data.formats.labelstudio.results import prediction_results
        from visiontl.preannotate import predict_set

        masks = "polygon" if kind == "polygonlabels" else "rle"
        try:
            with self._model_lock:
                aset = predict_set(self.predictor, files, self.display_threshold, masks, progress=False,
                                   max_pixels=self.max_pixels)
            results = prediction_results(strongest(aset, self.max_regions), config.from_names(),
                                         config.to_names[kind], kind)
            return [(regions, None) for regions in results]
        except Exception as exc:  # noqa: BLE001 (an undecodable file, or a bug: the files' errors, not the batch's)
            if len(files) == 1:
                return [([], _failure(exc, "predict"))]
            # one file fails the batch: predict one by one so the others still get results
            return [outcome for f in files for outcome in self._infer([f], config, kind)]


def strongest(aset: Any, max_regions: int) -> Any:
    """The predictions with at most `max_regions` instances per image, the highest scores (earliest on ties)."""
    from dataclasses import replace

    kept = []
    for instances in aset.by_image().values():
        kept += sorted(instances, key=lambda inst: -(inst.score or 0.0))[:max_regions]
    kept_ids = {id(inst) for inst in kept}
    return replace(aset, instances=[inst for inst in aset.instances if id(inst) in kept_ids])


def image_reference(data: dict[str, Any], key: str | None = None) -> str:
    """A task's image reference: `data[key]` (the label config's `<Image value="$key">`), else `data["image"]`,
    else the first data value that looks like an image (a file suffix, or a Label Studio data URL)."""
    for k in (key, "image"):
        if k is not None and k in data:
            return data[k]
    for value in data.values():
        if isinstance(value, str) and _looks_like_image(value):
            return value
    keys = printable(", ".join(map(str, data)) or "none", _SHOWN)
    raise DataError(f"no image in the task data (keys: {keys}); expected {printable(repr(key or 'image'), _SHOWN)}")


def _looks_like_image(value: str) -> bool:
    return (urlsplit(value).path.lower().endswith(_IMAGE_SUFFIXES) or value.lower().endswith(_IMAGE_SUFFIXES)
            or "/data/local-files" in value or "/data/upload/" in value)


def _task_label(task: dict[str, Any], index: int) -> str:
    task_id = task.get("id")
    if isinstance(task_id, (str, int)) and not isinstance(task_id, bool):
        return f"task {printable(task_id, _SHOWN)}: "
    return f"task #{index + 1}: "


def _project_id(body: dict[str, Any]) -> str:
    project = body.get("project")
    if project is None:
        return ""
    if not isinstance(project, (str, int)) or isinstance(project, bool):
        raise BadRequest("'project' must be Label Studio's project id (\"<id>.<created>\")")
    return str(project)


def _batches(images: list[tuple[int, Path, int]], budget: int) -> Iterator[list[tuple[int, Path, int]]]:
    """Consecutive runs of (task index, file, declared pixels) adding up to at most `budget` pixels (an image
    alone may use all of it), so a request of eight 100-megapixel photos is never decoded at once."""
    batch: list[tuple[int, Path, int]] = []
    total = 0
    for image in images:
        if batch and total + image[2] > budget:
            yield batch
            batch, total = [], 0
        batch.append(image)
        total += image[2]
    if batch:
        yield batch


def _failure(exc: Exception, where: str) -> str:
    """The one-line error a client gets for `exc`: a refusal's own message, or, for a bug, its type and
    message (logged with its traceback, every line escaped, since the message may quote the client)."""
    if isinstance(exc, VisiontlError):
        return printable(exc)
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip("\n").splitlines()
    line = printable(f"internal error: {type(exc).__name__}: {exc}", 4 * _SHOWN)
    log.error("\n".join([f"{printable(where, _SHOWN)}: {line}", *(printable(f) for f in frames)]))
    return line


class ProjectConfigs:
    """The label config of each project /setup named, for a /predict that carries none: only what /predict
    reads is kept (LabelConfig.needed: a 10 MB schema of 100,000 labels leaves a few names), and the least
    recently used projects are dropped beyond `max_projects` or `max_chars` characters of ids and names, so
    /setup with ever new project ids cannot grow memory without bound. Label Studio sends the label config
    with every /predict, so a dropped project costs nothing."""

    def __init__(self, max_projects: int = 256, max_chars: int = 1 << 20) -> None:
        self.max_projects, self.max_chars = max_projects, max_chars
        self._configs: OrderedDict[str, LabelConfig] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def put(self, project: str, config: LabelConfig) -> None:
        with self._lock:
            old = self._configs.pop(project, None)
            if old is not None:
                self._chars -= len(project) + old.chars()
            self._configs[project] = config
            self._chars += len(project) + config.chars()
            while len(self._configs) > 1 and (len(self._configs) > self.max_projects or self._chars > self.max_chars):
                dropped, gone = self._configs.popitem(last=False)
                self._chars -= len(dropped) + gone.chars()

    def get(self, project: str) -> LabelConfig | None:
        with self._lock:
            config = self._configs.get(project)
            if config is not None:
                self._configs.move_to_end(project)
            return config

    def __len__(self) -> int:
        return len(self._configs)

    @property
    def chars(self) -> int:
        return self._chars


def _check_roots(roots: list[Path]) -> list[Path]:
    if not roots:
        raise ConfigError("no --root folder: give the folder(s) that hold the project's images")
    out = []
    for root in roots:
        real = Path(root).expanduser().resolve()
        if not real.is_dir():
            raise ConfigError(f"--root {root}: not a folder")
        out.append(real)
    return out


# --- HTTP --------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """JSON over HTTP/1.0 (one request per connection), routed to the Backend."""

    backend: Backend  # set on the subclass make_server builds
    server_version = "visiontl-serve"
    timeout = 120  # seconds a client may take to send its request

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        route = self._route()
        if route in ("/", "/health"):
            self._send(200, self.backend.health())
        elif route == "/versions":
            self._send(200, self.backend.versions())
        elif route == "/metrics":
            self._send(200, {})
        else:
            self._send(404, {"error": f"no GET {printable(route, _SHOWN)} here (GET /health, POST /setup, POST /predict)"})

    def do_POST(self) -> None:  # noqa: N802
        route = self._route()
        handlers = {"/predict": self.backend.predict, "/setup": self.backend.setup,
                    "/webhook": self._ignored, "/train": self._ignored,
                    "/versions": lambda body: self.backend.versions()}
        if route not in handlers:
            self._discard_body()
            self._send(404, {"error": f"no POST {printable(route, _SHOWN)} here (POST /setup, POST /predict)"})
            return
        try:
            body = self._body()
            self._send(200, handlers[route](body))
        except _TooLarge as exc:
            self._send(413, {"error": str(exc)})
        except (BadRequest, VisiontlError) as exc:
            self._send(400, {"error": printable(exc)})
        except Exception as exc:  # noqa: BLE001 (a bug: say so in one line, keep serving)
            self._send(500, {"error": _failure(exc, route)})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a method without a do_METHOD here, a malformed request line, headers
        too long) as JSON like every other answer, not as its HTML page."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a request line it could not read: answer with a status line
            self.request_version = "HTTP/1.0"
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:  # http.server's answer to an unknown method
            self._discard_body()
            self._send(405, {"error": f"method {printable(self.command, _SHOWN)} is not allowed (GET /health, "
                             "POST /setup, POST /predict)"}, {"Allow": "GET, POST"})
            return
        self.log_error("code %d, message %s", code, message)
        self._send(code, {"error": printable(message or self.responses.get(code, ("error",))[0], _SHOWN)})

    def _route(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _discard_body(self) -> None:
        """Read and drop the body of a request that is refused without it, so the client reads the answer
        rather than a reset (closing a socket with unread data resets it); too large a body: close instead."""
        try:
            n = self._length(default=0) or 0
        except BadRequest:
            n = -1
        if 0 <= n <= self.backend.max_request_bytes:
            self._drain(n)
        else:
            self.close_connection = True

    @staticmethod
    def _ignored(body: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ignored", "message": "visiontl serve predicts only; train with `visiontl train` and "
                "restart the server with the new checkpoint"}

    def _length(self, default: int | None = None) -> int | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise BadRequest("chunked request bodies are not supported: send a Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return default
        try:
            n = int(raw)
        except ValueError:
            raise BadRequest(f"Content-Length {printable(repr(raw), _SHOWN)} is not a number") from None
        if n < 0:
            raise BadRequest(f"Content-Length {n} is negative")
        return n

    def _body(self) -> dict[str, Any]:
        limit = self.backend.max_request_bytes
        n = self._length(default=0)
        if n > limit:
            if n <= _DRAIN_FACTOR * limit:
                self._drain(n)  # read it, so the client gets the 413 rather than a reset connection
            else:
                self.close_connection = True
            raise _TooLarge(f"the request body has {n} bytes, over the limit of {limit} "
                            f"({limit / 1024 / 1024:g} MB, --max-request-mb)")
        raw = self.rfile.read(n) if n else b""
        if len(raw) < n:
            raise BadRequest(f"the request body ended after {len(raw)} of {n} bytes")
        if not raw.strip():
            raise BadRequest("the request body is empty: send a JSON object")
        try:
            body = json.loads(raw)
        except UnicodeDecodeError:
            raise BadRequest("the request body is not UTF-8 JSON") from None
        except json.JSONDecodeError as exc:
            raise BadRequest(f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
                             f"{exc.colno})") from None
        except RecursionError:
            raise BadRequest("the request body is not valid JSON (nested too deeply)") from None
        except ValueError as exc:  # a number of more than 4300 digits (sys.get_int_max_str_digits)
            raise BadRequest(f"the request body is not usable JSON ({_first_words(exc)})") from None
        if not isinstance(body, dict):
            raise BadRequest(f"the request body is JSON {type(body).__name__}, not an object")
        return body

    def _drain(self, n: int) -> None:
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 16))
            if not chunk:
                break
            n -= len(chunk)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("the client went away before the answer")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        # the request line and path are the client's: escaped, so they cannot forge or hide log lines
        log.debug(printable(f"{self.address_string()} {format % args}", 4 * _SHOWN))


class _TooLarge(Exception):
    pass


def _first_words(exc: BaseException) -> str:
    """The first clause of an exception's message (without advice meant for the server's programmer)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(";")[0]


class _Server(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True  # a client that hangs up late never holds up shutdown


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(backend: Backend, host: str = "127.0.0.1", port: int = 9090) -> ThreadingHTTPServer:
    """A threading HTTP server answering Label Studio for `backend`, bound (not yet serving: call
    `serve_forever`, and `shutdown` + `server_close` to stop). Port 0 picks a free port (`server_address`)."""
    handler = type("Handler", (_Handler,), {"backend": backend})
    server_class = _Server6 if ":" in host else _Server
    try:
        server = server_class((host.strip("[]"), port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    if host.strip("[]") not in _LOCAL_HOSTS:
        log.warning(f"listening on {host}, not on this machine only: anyone who can reach port "
                    f"{server.server_address[1]} can ask for predictions on files under the --root folders "
                    "(there is no authentication); put it behind a firewall or an authenticating proxy")
    return server


def server_url(server: ThreadingHTTPServer, host: str) -> str:
    """The URL to give Label Studio (the machine's name when bound to every interface)."""
    port = server.server_address[1]
    shown = host.strip("[]")
    if shown in ("0.0.0.0", "::", ""):
        shown = socket.gethostname()
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
