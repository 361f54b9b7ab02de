"""`visiontl serve`: a tiny trained detector behind the Label Studio ML backend protocol, spoken to with
requests shaped as Label Studio sends them (label_studio/ml/api_connector.py): /health, /setup, /predict,
the path rules (nothing outside --root), and the 400 / 413 answers."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from test_detection import det_config
from visiontl.config import build_config
from visiontl.data.synthetic import make_detection_coco
from visiontl.engine.trainer import train
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
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, image root) of a tiny detector trained one epoch on synthetic shapes."""
    data = tmp_path_factory.mktemp("shapes")
    make_detection_coco(data, images=4, split="train", seed=0)
    make_detection_coco(data, images=3, split="val", seed=1)
    run = tmp_path_factory.mktemp("run")
    train(build_config(det_config(data, run)))
    root = data / "val"
    secret = data / "secret.png"  # outside the root
    secret.write_bytes((root / "img_001.png").read_bytes())
    (root / "link.png").symlink_to(secret)  # inside the root, pointing outside
    (root / "broken.png").write_bytes(b"not an image")
    return run / "checkpoints" / "last.pt", root


@pytest.fixture(scope="module")
def served(trained: tuple[Path, Path]):
    """(base URL, backend, image root): a server on an ephemeral port, shut down after the module."""
    checkpoint, root = trained
    backend = Backend.from_checkpoint(checkpoint, [root], score_threshold=0.05, max_request_mb=0.05)
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
    expected = predict_set(backend.loaded, [root / "img_001.png", root / "img_002.png"], 0.05, progress=False)
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
    alone = predict_set(backend.loaded, [root / "img_001.png"], 0.05, progress=False)
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
    assert f"Settings → Model → Connect model: URL {url}" in out
    assert out.rstrip().endswith("stopped")
