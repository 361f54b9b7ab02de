"""`visiontl serve`: a tiny trained detector behind the Label Studio ML backend protocol, spoken to with
requests shaped as Label Studio sends them (label_studio/ml/api_connector.py): /health, /setup, /predict,
the path rules (nothing outside --root), and the 400 / 413 answers; then issue 15's cases: a failing task
answered alone, malformed bodies (400) and other methods (405) as JSON, client strings escaped in the log,
a load test (200 concurrent requests, memory across 40 /setup calls) and the pixel budget of inference."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from visiontl.errors import DataError
from visiontl.preannotate import predict_set
from visiontl.serve import Backend, make_server

LABEL_CONFIG = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="bbox" toName="img">
    <Label value="shape_0"/><Label value="shape_5"/><Label value="shape_17"/>
  </RectangleLabels>
</View>"""
CLASSES = {"shape_0", "shape_5", "shape_17"}
PROJECT = "7.1717000000"  # Label Studio's project uid: "<id>.<created_at timestamp>"


@pytest.fixture(scope="module")
def trained(trained_detector: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, image root): the session's tiny detector (conftest), its val images copied here to add
    the path cases."""
    checkpoint, data = trained_detector
    base = tmp_path_factory.mktemp("shapes")
    root = base / "val"
    shutil.copytree(data / "val", root)
    secret = base / "secret.png"  # outside the root
    secret.write_bytes((root / "img_001.png").read_bytes())
    (root / "link.png").symlink_to(secret)  # inside the root, pointing outside
    (root / "broken.png").write_bytes(b"not an image")
    return checkpoint, root


@pytest.fixture(scope="module")
def served(trained: tuple[Path, Path]):
    """(base URL, backend, image root): a server on an ephemeral port, shut down after the module."""
    checkpoint, root = trained
    backend = Backend.from_checkpoint(checkpoint, [root], display_threshold=0.05, max_request_mb=0.05)
    server = make_server(backend, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", backend, root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def call(url: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url + path, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def predict_request(*images: str) -> dict:
    return {"tasks": [{"id": 100 + i, "data": {"image": im}, "meta": {}, "created_at": "2024-05-01T10:00:00Z",
                       "updated_at": "2024-05-01T10:00:00Z", "is_labeled": False, "overlap": 1, "inner_id": i + 1,
                       "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 0,
                       "project": 7, "updated_by": None, "file_upload": None, "comment_authors": []}
                      for i, im in enumerate(images)],
            "model_version": "", "project": PROJECT, "label_config": LABEL_CONFIG,
            "params": {"login": None, "password": None, "context": None}}


def test_health_setup_and_predict_equal_predict_set(served) -> None:
    url, backend, root = served
    status, health = call(url, "/health")
    assert status == 200 and health["status"] == "UP" and health["model_class"]

    status, setup = call(url, "/setup", {"project": PROJECT, "schema": LABEL_CONFIG, "hostname": "http://localhost:8080",
                                         "access_token": "0123abcd", "model_version": None})
    assert status == 200 and setup["model_version"] == backend.model_version

    # one Label Studio local-files URL, one plain path relative to the root
    status, answer = call(url, "/predict", predict_request("/data/local-files/?d=img_001.png", "img_002.png"))
    assert status == 200, answer
    results = answer["results"]
    assert len(results) == 2 and answer["model_version"] == backend.model_version
    expected = predict_set(backend.predictor, [root / "img_001.png", root / "img_002.png"], 0.05, progress=False)
    by_image = expected.by_image()
    names = {c.id: c.name for c in expected.categories}
    assert sum(len(r["result"]) for r in results) >= 2, "the tiny detector finds something at 0.05"
    for task, img in zip(results, expected.images):
        assert "error" not in task
        assert task["model_version"] == backend.model_version and isinstance(task["score"], float)
        regions, instances = task["result"], by_image[img.id]
        assert len(regions) == len(instances)
        for r, inst in zip(regions, instances):
            assert (r["from_name"], r["to_name"], r["type"]) == ("bbox", "img", "rectanglelabels")
            assert (r["original_width"], r["original_height"]) == (img.width, img.height) == (96, 72)
            v = r["value"]
            assert all(0 <= v[k] <= 100 for k in ("x", "y", "width", "height"))
            assert v["x"] + v["width"] <= 100 + 1e-6 and v["y"] + v["height"] <= 100 + 1e-6
            assert v["rectanglelabels"] == [names[inst.category_id]] and set(v["rectanglelabels"]) <= CLASSES
            x, y, w, h = inst.bbox
            assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx(
                (x / 96 * 100, y / 72 * 100, w / 96 * 100, h / 72 * 100), abs=1e-9)
            assert r["score"] == pytest.approx(inst.score, abs=1e-12)
        if regions:
            assert task["score"] == pytest.approx(sum(r["score"] for r in regions) / len(regions))

    # the config of /setup is used when /predict carries none; an http URL of this machine is a path too
    body = predict_request("http://localhost:8080/data/local-files/?d=img_001.png", f"file://{root}/img_002.png")
    del body["label_config"]
    status, again = call(url, "/predict", body)
    assert status == 200 and [t["result"] for t in again["results"]] == [t["result"] for t in results]


def test_refusals_are_per_task_errors(served, monkeypatch: pytest.MonkeyPatch) -> None:
    url, backend, root = served
    from visiontl.data import images

    def read_image(path):  # a file whose header reads but whose pixels do not
        if Path(path).name == "img_002.png":
            raise DataError(f"{path}: cannot decode image (image file is truncated)")
        return real_read_image(path)

    real_read_image = images.read_image
    monkeypatch.setattr(images, "read_image", read_image)
    refs = ["../secret.png",  # climbs out of the root
            str(root.parent / "secret.png"),  # an absolute path outside
            "/data/local-files/?d=../secret.png",
            "/data/local-files/?d=%2E%2E%2Fsecret.png",  # the same, URL-quoted
            "link.png",  # a symbolic link out of the root
            "http://example.com/data/local-files/?d=img_001.png",  # another host: never fetched
            "s3://bucket/img_001.png",
            "missing.png",
            "broken.png",
            "img_002.png",  # made undecodable below: fails the model's batch, which then runs one by one
            "img_001.png"]  # the one good task still gets its predictions
    status, answer = call(url, "/predict", predict_request(*refs))
    assert status == 200, answer
    results = answer["results"]
    assert len(results) == len(refs)
    for i, task in enumerate(results[:-1]):
        assert task["result"] == [] and task["error"].startswith(f"task {100 + i}: "), task
        assert "\n" not in task["error"] and task["model_version"] == backend.model_version
    for task in results[:5]:
        assert "outside the --root folders" in task["error"]
    assert "host 'example.com' is not this machine" in results[5]["error"]
    assert "s3:// images are not supported" in results[6]["error"]
    assert "not found" in results[7]["error"]
    assert "not a readable image" in results[8]["error"]
    assert "cannot decode" in results[9]["error"]
    assert "error" not in results[-1] and results[-1]["result"]
    alone = predict_set(backend.predictor, [root / "img_001.png"], 0.05, progress=False)
    assert len(results[-1]["result"]) == len(alone.instances)


def test_health_answers_while_the_model_is_busy(served) -> None:
    url, backend, root = served
    with backend._model_lock:  # a long prediction in flight: Label Studio's health check waits 1 s at most
        status, health = call(url, "/health")
    assert status == 200 and health["status"] == "UP"


def test_bad_requests(served) -> None:
    url, backend, root = served
    status, answer = call(url, "/predict", raw=b'{"tasks": [')
    assert status == 400 and "not valid JSON" in answer["error"] and "\n" not in answer["error"]
    status, answer = call(url, "/predict", {"tasks": "img_001.png"})
    assert status == 400 and "'tasks'" in answer["error"]
    status, answer = call(url, "/setup", {"project": PROJECT, "schema": "<View><Choices name='c' toName='img'/></View>"})
    assert status == 400 and "RectangleLabels" in answer["error"]
    big = {"tasks": [], "padding": "x" * 100_000}  # over --max-request-mb 0.05
    status, answer = call(url, "/predict", big)
    assert status == 413 and "limit" in answer["error"]
    status, answer = call(url, "/nothing")
    assert status == 404 and "error" in answer
    assert call(url, "/health")[0] == 200  # still serving


def test_cli_serves_until_interrupted(trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    from visiontl import cli, serve

    checkpoint, root = trained
    servers = []
    real_make_server = serve.make_server

    def make_server(*args, **kwargs):
        server = real_make_server(*args, **kwargs)
        loop = server.serve_forever

        def serve_forever():
            loop()
            raise KeyboardInterrupt  # where Ctrl-C lands: in the serving loop

        server.serve_forever = serve_forever
        servers.append(server)
        return server

    monkeypatch.setattr(serve, "make_server", make_server)
    logger = logging.getLogger("visiontl")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:] = []  # so main() sends the log to this test's stdout, whatever earlier tests installed
    codes = []
    thread = threading.Thread(target=lambda: codes.append(
        cli.main(["serve", str(checkpoint), "--port", "0", "--root", str(root), "--score-threshold", "0.5"])))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not servers and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert servers, capsys.readouterr()
        url = f"http://127.0.0.1:{servers[0].server_address[1]}"
        status, health = call(url, "/health")
        assert status == 200 and health["status"] == "UP"
    finally:
        if servers:
            servers[0].shutdown()
        thread.join(timeout=30)
        logger.handlers[:], logger.propagate, logger.level = saved
    assert codes == [0]
    out = capsys.readouterr().out
    assert "model ready" in out
    assert "sending regions scoring at least 0.5 (--display-threshold), at most 50 per task" in out
    assert f"Settings → Model → Connect model: URL {url}" in out
    assert out.rstrip().endswith("stopped")


# --- issue 15: per-task failures, malformed requests, methods, the log, the backlog, /setup memory, pixels ---


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels while holding a few bytes of pixel data (never decoded:
    a decompression bomb's shape, e.g. the 32 KB 1-bit 16384x16384 PNG that needs ~10 GB to predict)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as written (any method, any request line); the status, headers and body of the answer."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_a_failing_task_is_answered_alone(served, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """ENAMETOOLONG (a 300-character name), an unencodable name, a non-string reference and a bug in one
    task's header read or in its prediction fail that task only; the others are predicted (issue 15 #9)."""
    url, backend, root = served
    from visiontl.data import images

    real_check, real_read = images.check_image, images.read_image

    def check_image(path, max_pixels=None):
        if Path(path).name == "img_000.png":
            raise RuntimeError("a bug while reading the header")
        return real_check(path, max_pixels)

    def read_image(path):
        if Path(path).name == "img_002.png":
            raise MemoryError("out of memory decoding it")
        return real_read(path)

    monkeypatch.setattr(images, "check_image", check_image)
    monkeypatch.setattr(images, "read_image", read_image)
    refs = ["a" * 300 + ".png", "\ud800.png", "img_000.png", "img_002.png", "img_001.png"]
    body = predict_request(*refs)
    body["tasks"].append({"id": [1, 2], "data": {"image": 5}})  # an id and a reference of the wrong type
    with caplog.at_level(logging.INFO, logger="visiontl"):
        status, answer = call(url, "/predict", body)
    assert status == 200, answer
    results = answer["results"]
    assert len(results) == len(refs) + 1
    assert results[0]["error"].startswith("task 100: " + "a" * 200 + "…: not a usable path (File name too long)")
    assert results[1]["error"].startswith("task 101: \\ud800.png: not a usable path (")
    assert results[2]["error"] == "task 102: internal error: RuntimeError: a bug while reading the header"
    assert results[3]["error"] == "task 103: internal error: MemoryError: out of memory decoding it"
    assert results[5]["error"] == "task #6: the image reference 5 is not a non-empty string"
    for task in results[:4] + results[5:]:
        assert task["result"] == [] and "\n" not in task["error"]
    assert "error" not in results[4] and results[4]["result"], "the good task is still predicted"
    assert "predict: task 102: internal error: RuntimeError" in caplog.text  # logged, with its traceback
    assert "check_image" in caplog.text
    assert "predict: 6 task(s), " in caplog.text and ", 5 failed, " in caplog.text


def test_client_strings_are_escaped_in_the_log(served, caplog) -> None:
    """Image names, task ids, project ids and paths holding ESC or a newline cannot forge or clear log lines
    (issue 15 #10)."""
    url, backend, root = served
    body = predict_request("evil\x1b[2J\nAP 1.0000 (forged).png")
    body["tasks"][0]["id"] = "7\nforged"
    body["project"] = "9\x1b]0;title\x07"
    schema_body = {"project": "p\nINFO forged setup", "schema": LABEL_CONFIG.replace('name="bbox"', 'name="b&#10;x"')}
    with caplog.at_level(logging.DEBUG, logger="visiontl"):
        assert call(url, "/predict", body)[0] == 200
        assert call(url, "/setup", schema_body)[0] == 200
        assert call(url, "/nothing\x1b[2J".replace("\x1b", "%1B"))[0] == 404
        status, _, _ = raw_exchange(url, b"GET /x\x1b[2J\x07 HTTP/1.0\r\n\r\n")
    assert status == 404
    text = caplog.text
    assert "\x1b" not in text and "\x07" not in text
    assert "forged" in text and not any(line.startswith(("AP 1.0000", "forged", "INFO forged")) for line in text.splitlines())
    assert "evil\\x1b[2J\\nAP 1.0000 (forged).png" in text
    assert "task 7\\nforged: " in text and "setup: project p\\nINFO forged setup -> RectangleLabels 'b\\nx'" in text
    assert "GET /x\\x1b[2J\\x07 HTTP/1.0" in text


def test_malformed_bodies_are_400(served) -> None:
    """A 5000-digit integer (Python's int_max_str_digits ValueError) and other malformed bodies are 400s with
    a JSON error, never 500s (issue 15 #9)."""
    url, backend, root = served
    digits = "9" * 5000
    for raw in (('{"tasks": [{"id": %s, "data": {"image": "img_001.png"}}]}' % digits).encode(),
                ('{"project": "1.2", "schema": "x", "n": -%s}' % digits).encode()):
        for path in ("/predict", "/setup"):
            status, answer = call(url, path, raw=raw)
            assert status == 400, (path, answer)
            assert answer["error"] == ("the request body is not usable JSON (Exceeds the limit (4300 digits) for "
                                       "integer string conversion: value has 5000 digits)")
    for path, body, words in [("/setup", {"project": {"id": 1}, "schema": LABEL_CONFIG}, "'project' must be"),
                              ("/predict", {"tasks": [], "project": [[[]]]}, "'project' must be"),
                              ("/setup", {"schema": 5}, "'schema' must be"),
                              ("/predict", {"tasks": [{"data": []}]}, "task #1: not an object"),
                              ("/predict", {"tasks": [], "label_config": "<View"}, "not valid XML")]:
        status, answer = call(url, path, body)
        assert status == 400 and words in answer["error"], (path, answer)
    status, answer = call(url, "/predict", raw=b"\xff{}")
    assert status == 400 and answer["error"] == "the request body is not UTF-8 JSON"
    status, headers, body = raw_exchange(url, b"POST /predict HTTP/1.0\r\nContent-Length: " + digits.encode() + b"\r\n\r\n")
    assert status == 400 and "Content-Length" in json.loads(body)["error"]
    assert call(url, "/health")[0] == 200


def test_other_methods_are_405_json(served) -> None:
    """PUT, DELETE and any other method answer 405 with an Allow header and a JSON error, not http.server's
    HTML page; so do its own refusals (a malformed request line: 400) (issue 15 #9)."""
    url, backend, root = served
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"):
        status, headers, body = raw_exchange(url, f"{method} /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                                  "\r\n{}".encode())
        assert status == 405, method
        assert headers["Allow"] == "GET, POST" and headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": f"method {method} is not allowed (GET /health, POST /setup, POST /predict)"}
    status, headers, body = raw_exchange(url, b"HEAD /health HTTP/1.0\r\n\r\n")
    assert status == 405 and headers["Allow"] == "GET, POST" and body == b""
    status, headers, body = raw_exchange(url, b"GARBAGE\r\n\r\n")  # an HTTP/0.9 line: a status line all the same
    assert status == 400 and headers["Content-Type"] == "application/json" and "GARBAGE" in json.loads(body)["error"]
    status, headers, body = raw_exchange(url, b"GET /health HTTP/1.0\r\n" + b"X: y\r\n" * 101 + b"\r\n")
    assert status == 431 and json.loads(body)["error"] == "Too many headers"
    assert call(url, "/health")[0] == 200


def test_200_concurrent_requests_are_all_answered(served) -> None:
    """Load test on 127.0.0.1 (issue 15 #9): 200 clients connect and send their requests at once while the
    server accepts none (the worst burst: every one waits in the listen backlog), then all 200 are answered;
    then 200 threads call it at once while it serves. With socketserver's backlog of 5, the 7th connection
    already hangs (the kernel drops its SYN)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    url, backend, root = served
    server = make_server(backend, "127.0.0.1", 0)
    assert server.request_queue_size >= 128
    port = server.server_address[1]
    predict = json.dumps(predict_request("img_001.png")).encode()
    socks = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    started = time.monotonic()
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)  # queued by the kernel, not accepted
            sock.settimeout(60)
            if i % 50 == 0:  # a few predictions among the health checks: the model lock serialises them
                sock.sendall(b"POST /predict HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(predict)).encode() + b"\r\n\r\n" + predict)
            else:
                sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            socks.append(sock)
        thread.start()
        answers = []
        for sock in socks:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            answers.append(data)
        assert all(a.startswith(b"HTTP/1.0 200 ") for a in answers), [a[:40] for a in answers if not a.startswith(b"HTTP/1.0 200")]
        assert sum(b'"results"' in a for a in answers) == 4 and sum(b'"status": "UP"' in a for a in answers) == 196

        with ThreadPoolExecutor(max_workers=200) as pool:
            statuses = list(pool.map(lambda _: call(f"http://127.0.0.1:{port}", "/health")[0], range(200)))
        assert statuses == [200] * 200
        assert time.monotonic() - started < 60
    finally:
        for sock in socks:
            sock.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def big_schema(n_labels: int) -> str:
    """A label config of about 27 * n_labels bytes: n_labels labels and n_labels / 10 unused Image tags."""
    labels = "".join(f'<Label value="{name}"/>' for name in [*sorted(CLASSES), *(f"c{i:06d}" for i in range(n_labels))])
    images = "".join(f'<Image name="im{i}" value="$k{i}"/>' for i in range(n_labels // 10))
    return (f'<View><Image name="img" value="$image"/>{images}<RectangleLabels name="bbox" toName="img">{labels}'
            "</RectangleLabels></View>")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_setup_with_new_projects_keeps_memory_flat(served) -> None:
    """40 /setup calls with new project ids and a 170 KB schema each: the server's memory stays flat, since
    only the names /predict reads are kept, in a bounded LRU (issue 15 #9; before: every parsed config was
    kept, +0.5 MB per project here, 21 MB in all)."""
    url, backend, root = served
    big = Backend(backend.predictor, [root], display_threshold=0.05, max_request_mb=4)
    server = make_server(big, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    schema = big_schema(6000)
    try:
        for i in range(2):  # warm up the allocator with the transient garbage of one parse
            assert call(base, "/setup", {"project": f"warm.{i}", "schema": schema})[0] == 200
        before = rss_bytes()
        for i in range(40):
            status, answer = call(base, "/setup", {"project": f"{1000 + i}.1717000000", "schema": schema})
            assert status == 200, answer
        grown = rss_bytes() - before
        body = predict_request("img_001.png")
        del body["label_config"]
        body["project"] = "1039.1717000000"  # the kept config still answers a /predict that carries none
        status, answer = call(base, "/predict", body)
        assert status == 200 and answer["results"][0]["result"][0]["from_name"] == "bbox"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert grown < 6 * 2**20, f"RSS grew {grown / 2**20:.1f} MB over 40 /setup calls"
    kept = big._projects
    assert len(kept) == 42 and kept.chars < 45 * 100  # a few names per project, not 24,000 labels


def test_project_configs_are_a_bounded_lru() -> None:
    from visiontl.serve import LabelConfig, ProjectConfigs

    configs = ProjectConfigs(max_projects=8, max_chars=1000)
    config = LabelConfig({"rectanglelabels": "bbox"}, {"rectanglelabels": "img"}, {"img": "image"})
    for i in range(10):
        configs.put(f"{i}.1", config)
    assert len(configs) == 8 and configs.get("1.1") is None and configs.get("2.1") is config
    configs.put("10.1", config)  # 2.1 was just used: 3.1 is the least recently used
    assert configs.get("2.1") is config and configs.get("3.1") is None and configs.get("4.1") is config
    assert len(configs) == 8 and configs.chars == 7 * len("2.1") + len("10.1") + 8 * config.chars()
    configs.put("x" * 990, config)  # one large id: the others go, the newest stays
    assert len(configs) == 1 and configs.chars == 990 + config.chars()


def test_images_over_the_pixel_budget_are_refused_per_task(served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header claiming 16384x16384 pixels (inside the hard cap of 16384x16384) is over the default budget
    of 120 M: that task's error, before decoding; the batch is decoded in runs of at most the budget's pixels
    (issue 15 #8)."""
    url, backend, root = served
    from visiontl import preannotate
    from visiontl.data import images

    png_claiming(root / "huge.png", 16384, 16384)
    png_claiming(root / "big.png", 200, 200)
    decoded = []
    real_read = images.read_image
    monkeypatch.setattr(images, "read_image", lambda path: decoded.append(Path(path).name) or real_read(path))
    status, answer = call(url, "/predict", predict_request("huge.png", "img_001.png"))
    assert status == 200
    assert answer["results"][0]["error"] == (
        f"task 100: {root / 'huge.png'}: 16384x16384 pixels (268.4 megapixels), over the pixel budget of "
        "120,000,000 (120 megapixels; --max-pixels); refused before decoding")
    assert answer["results"][1]["result"] and decoded == ["img_001.png"]
    assert backend.max_pixels == backend.predictor.config.data.max_pixels == 120_000_000

    batches = []
    real_predict_set = preannotate.predict_set
    monkeypatch.setattr(preannotate, "predict_set", lambda loaded, files, *a, **k:
                        batches.append(len(files)) or real_predict_set(loaded, files, *a, **k))
    small = Backend(backend.predictor, [root], display_threshold=0.05, max_pixels=2 * 96 * 72)  # two 96x72 images
    answer = small.predict(predict_request("img_001.png", "big.png", "img_002.png", "img_001.png"))
    results = answer["results"]
    assert batches == [2, 1]
    assert results[1]["error"].startswith(f"task 101: {root / 'big.png'}: 200x200 pixels (0.0 megapixels), over the "
                                          "pixel budget of 13,824")
    assert all("error" not in r for i, r in enumerate(results) if i != 1)

    def labels(task: dict) -> list:
        return [(r["value"]["rectanglelabels"], round(r["score"], 4)) for r in task["result"]]

    assert labels(results[0]) == labels(results[3]) and results[0]["result"]


def test_predict_refuses_an_image_over_the_budget_before_decoding(trained: tuple[Path, Path], served, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`visiontl predict` (and its pre-annotation) checks every header against the pixel budget
    (data.max_pixels, --max-pixels) before it decodes any image, and refuses in one line naming the file."""
    from visiontl import cli
    from visiontl import loading
    from visiontl.data import images

    checkpoint, root = trained
    # loaded once (seconds)
    monkeypatch.setattr(loading, "load_predictor", lambda path, allow_torchscript_code=False: served[1].predictor)
    huge = png_claiming(tmp_path / "huge.png", 16384, 16384)
    decoded = []
    real_read = images.read_image
    monkeypatch.setattr(images, "read_image", lambda path: decoded.append(path) or real_read(path))
    logger = logging.getLogger("visiontl")
    saved = logger.handlers[:], logger.propagate, logger.level
    try:
        good = str(root / "img_001.png")
        out = tmp_path / "p.json"
        assert cli.main(["predict", str(checkpoint), good, str(huge), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == (f"visiontl: error: {huge}: 16384x16384 pixels (268.4 megapixels), over the pixel budget of "
                       "120,000,000 (120 megapixels; --max-pixels); refused before decoding\n")
        assert cli.main(["predict", str(checkpoint), good, "--out", str(tmp_path / "ls"), "--format", "labelstudio",
                         "--max-pixels", "1000"]) == 2
        assert capsys.readouterr().err.startswith(f"visiontl: error: {good}: 96x72 pixels (0.0 megapixels), over the "
                                                  "pixel budget of 1,000 (0.001 megapixels")
        assert decoded == [] and not out.exists()
        with pytest.raises(SystemExit):
            cli.main(["predict", str(checkpoint), good, "--out", str(out), "--max-pixels", "9" * 5000])
        assert "is not a whole number of pixels" in capsys.readouterr().err
        assert cli.main(["predict", str(checkpoint), good, "--out", str(out), "--max-pixels", "7000"]) == 0  # 6912
        assert json.loads(out.read_text()) is not None
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved


# --- issue 18: regions at least the display threshold, at most --max-regions, highest scores first ---


def test_regions_reach_the_display_threshold_and_stay_under_the_cap(served) -> None:
    _, backend, root = served
    files = [root / "img_001.png", root / "img_002.png"]
    every = predict_set(backend.predictor, files, 0.0, progress=False)
    scores = {img.id: sorted((i.score for i in found), reverse=True) for img, found in
              zip(every.images, every.by_image().values())}
    pooled = sorted(s for per_image in scores.values() for s in per_image)
    threshold = pooled[len(pooled) // 2]  # half the detections below it
    assert max(sum(s >= threshold for s in per_image) for per_image in scores.values()) > 2, "the cap must cut"

    default = Backend(backend.predictor, [root])
    assert default.display_threshold == backend.predictor.config.model.display_threshold == 0.5
    assert default.max_regions == 50
    capped = Backend(backend.predictor, [root], display_threshold=threshold, max_regions=2)
    for server, (low, cap) in ((default, (0.5, 50)), (capped, (threshold, 2))):
        answer = server.predict(predict_request("img_001.png", "img_002.png"))
        for task, img in zip(answer["results"], every.images):
            sent = sorted((r["score"] for r in task["result"]), reverse=True)
            assert sent == pytest.approx([s for s in scores[img.id] if s >= low][:cap], abs=1e-12)
    assert default.regions_sent().startswith("sending regions scoring at least 0.5 (--display-threshold), at most 50 per task")
    with pytest.raises(Exception, match="--max-regions must be at least 1"):
        Backend(backend.predictor, [root], max_regions=0)
