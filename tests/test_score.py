"""`visiontl score`: any COCO results file against any COCO ground truth, numbers equal to pycocotools'."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visiontl.errors import DataError
from visiontl.evaluation.coco import METRIC_NAMES
from visiontl.evaluation.score import score_files

GT = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
               {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80},
               {"id": 3, "file_name": "empty.jpg", "width": 100, "height": 80}],
    "categories": [{"id": 0, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 0, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 40, 40, 30], "area": 1200, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 60, 60], "area": 3600, "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": 0, "bbox": [70, 10, 20, 50], "area": 1000, "iscrowd": 0},
    ],
}


def results(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for ann in GT["annotations"]:
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 3, 4)
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                    "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]], "score": float(rng.random())})
    for image_id in (1, 2, 3):  # false positives, the empty image included
        out.append({"image_id": image_id, "category_id": int(rng.choice([0, 7])), "bbox": [5.0, 5.0, 20.0, 20.0],
                    "score": float(rng.random())})
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_equals_pycocotools(tmp_path: Path, seed: int) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(GT))
    res_path.write_text(json.dumps(results(seed)))
    ours = score_files(gt_path, res_path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        ev = COCOeval(coco, coco.loadRes(str(res_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for name, value in zip(METRIC_NAMES, ev.stats):
        assert ours[f"bbox/{name}"] == pytest.approx(value, abs=1e-9), name
    assert {"bbox/AP/cat", "bbox/AP/dog"} <= set(ours)


def test_score_cli_and_bad_results(tmp_path: Path) -> None:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(GT))
    res_path.write_text(json.dumps(results(0)))
    done = subprocess.run([sys.executable, "-m", "visiontl", "score", str(gt_path), str(res_path), "--out",
                           str(tmp_path / "m.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "AP50" in done.stdout and "dog" in done.stdout
    assert json.loads((tmp_path / "m.json").read_text())["bbox/AP"] == pytest.approx(score_files(gt_path, res_path)["bbox/AP"])
    bad = results(0)
    del bad[2]["score"]
    res_path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"result #2: missing score"):
        score_files(gt_path, res_path)
    done = subprocess.run([sys.executable, "-m", "visiontl", "score", str(gt_path), str(res_path)], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
