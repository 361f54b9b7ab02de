"""docs/python-api.md runs as written: every ```python block, in order, in one namespace, in a folder holding the
recipe.yaml and images its examples name (a tiny detection recipe on a synthetic COCO dataset)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, fresh_log
from test_detection import det_config
from visiontl.data.synthetic import make_detection_coco

DOC = REPO / "docs" / "python-api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture
def recipe_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_detection_coco(tmp_path, images=4, split="train", seed=0)
    make_detection_coco(tmp_path, images=3, split="val", seed=1)
    # one step per epoch, a small backbone and few detections: the page's three epochs take seconds
    raw = det_config(Path("."), Path("runs/recipe"), model={"backbone": "mobilenet_v3_small", "fpn_channels": 16,
                                                             "detections_per_image": 10})
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    val = sorted((tmp_path / "val").glob("*.png"))
    Image.open(val[0]).convert("RGB").save(tmp_path / "a.jpg", quality=95)
    shutil.copy(val[1], tmp_path / "b.png")
    shutil.copy(val[2], tmp_path / "c.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_python_api_page_runs_as_written(recipe_folder: Path, capsys: pytest.CaptureFixture) -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 4
    namespace: dict = {"__name__": "python_api_doc"}
    with fresh_log():  # as in a new interpreter: no handler on the 'visiontl' logger
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "epoch 3/3" in out  # the log lines showed without set-up (train.epochs=3 from the overrides)
    assert "did you mean 'train.epochs'" in out
    run, preds = namespace["run"], namespace["preds"]
    assert run.best.is_file() and run.last.is_file() and run.metrics["best"]["epoch"] in (1, 2, 3)
    assert [p.source for p in preds] == ["a.jpg", None, None]
    assert all(p.boxes.shape == (len(p.labels), 4) and p.masks is None for p in preds)
    assert namespace["picture"].size == Image.open("a.jpg").size
    assert (recipe_folder / "runs" / "recipe" / "eval" / "metrics.json").is_file()
    assert namespace["metrics"]["bbox/AP"] == pytest.approx(run.metrics["best"]["bbox/AP"], abs=1e-12)  # best.pt's
    same = namespace["same"]  # the ONNX file's detections of a.jpg: the checkpoint's
    assert same.labels == preds[0].labels
    np.testing.assert_allclose(same.boxes, preds[0].boxes, atol=0.05)
    assert namespace["coco_records"] == preds[0].to_coco(image_id=1)
    assert type(namespace["det"]).__name__ == "FasterRCNN"
