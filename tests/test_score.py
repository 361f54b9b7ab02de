"""`visiontl score`: any COCO results file against any COCO ground truth, numbers equal to pycocotools'."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import cli_run
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
    done = cli_run("score", gt_path, res_path, "--out", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    assert "AP50" in done.stdout and "dog" in done.stdout
    assert json.loads((tmp_path / "m.json").read_text())["bbox/AP"] == pytest.approx(score_files(gt_path, res_path)["bbox/AP"])
    bad = results(0)
    del bad[2]["score"]
    res_path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"result #2: missing score"):
        score_files(gt_path, res_path)
    done = cli_run("score", gt_path, res_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def _write(tmp_path: Path, gt: dict | str, res: list | dict | str) -> tuple[Path, Path]:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(gt if isinstance(gt, str) else json.dumps(gt))
    res_path.write_text(res if isinstance(res, str) else json.dumps(res))
    return gt_path, res_path


def _broken_results(kind: str) -> list | dict | str:
    res = results(0)
    if kind == "nan score":
        return json.dumps(res).replace(str(res[1]["score"]), "NaN", 1)
    if kind == "unknown image":
        res[3]["image_id"] = 99
    if kind == "short box":
        res[4]["bbox"] = [1.0, 2.0, 3.0]
    if kind == "not a list":
        return {"annotations": res}
    if kind == "not json":
        return "[{"
    return res


BAD_RESULTS = {
    "nan score": r"result #1: 'score' is nan",
    "unknown image": r"result #3: image_id 99 is not in the ground truth's images",
    "short box": r"result #4: 'bbox' is \[1.0, 2.0, 3.0\], not 4 finite numbers",
    "not a list": r"a COCO results file is a list of detections, got dict",
    "not json": r"not valid JSON",
}


@pytest.mark.parametrize("engine", ["numpy", "hotcoco"])
@pytest.mark.parametrize("kind", sorted(BAD_RESULTS))
def test_bad_results_name_the_record(tmp_path: Path, kind: str, engine: str) -> None:
    gt_path, res_path = _write(tmp_path, GT, _broken_results(kind))
    with pytest.raises(DataError, match=BAD_RESULTS[kind]):
        score_files(gt_path, res_path, engine=engine)


def _broken_gt(kind: str) -> dict:
    gt = json.loads(json.dumps(GT))
    if kind == "annotation on unknown image":
        gt["annotations"][1]["image_id"] = 42
    if kind == "duplicate annotation id":
        gt["annotations"][2]["id"] = 1
    if kind == "negative box":
        gt["annotations"][3]["bbox"] = [70, 10, -20, 50]
    if kind == "duplicate image id":
        gt["images"][2]["id"] = 1
    return gt


BAD_GT = {
    "annotation on unknown image": r"gt.json: annotation 2: image_id 42 is not in the ground truth's images",
    "duplicate annotation id": r"gt.json: annotation id 1 appears twice",
    "negative box": r"gt.json: annotation 4: bbox \[70, 10, -20, 50\] has a negative size",
    "duplicate image id": r"gt.json: image id 1 appears twice",
}


@pytest.mark.parametrize("engine", ["numpy", "hotcoco"])
@pytest.mark.parametrize("kind", sorted(BAD_GT))
def test_bad_ground_truth_names_the_record(tmp_path: Path, kind: str, engine: str) -> None:
    gt_path, res_path = _write(tmp_path, _broken_gt(kind), results(0))
    with pytest.raises(DataError, match=BAD_GT[kind]):
        score_files(gt_path, res_path, engine=engine)


def test_engines_agree_on_files_and_count_unknown_categories(tmp_path: Path) -> None:
    res = results(1) + [{"image_id": 1, "category_id": 55, "bbox": [1, 1, 5, 5], "score": 0.5}]
    gt_path, res_path = _write(tmp_path, GT, res)
    fast, slow = score_files(gt_path, res_path, engine="hotcoco"), score_files(gt_path, res_path, engine="numpy")
    assert fast["engine"] == "hotcoco" and slow["engine"] == "numpy"
    assert fast["num_ignored"] == slow["num_ignored"] == 1 and fast["num_results"] == slow["num_results"] == len(res)
    assert {k: v for k, v in fast.items() if k != "engine"} == {k: v for k, v in slow.items() if k != "engine"}
