"""Pre-annotation: predictions written in each tool's import format read back as the same boxes, labels
and scores."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import cli_run
from visiontl.data.formats.registry import read_dataset
from visiontl.engine.inference import image_files
from visiontl.loading import load_predictor
from visiontl.preannotate import control_names, predict_set

LABEL_CONFIG = """<View>
  <Image name="img" value="$image"/>
  <RectangleLabels name="bbox" toName="img">
    <Label value="shape_0"/><Label value="shape_5"/><Label value="shape_17"/>
  </RectangleLabels>
</View>"""


@pytest.fixture(scope="module")
def detector(trained_detector: tuple[Path, Path]) -> tuple[Path, Path]:
    """The session's detector (conftest) and its val images."""
    ckpt, root = trained_detector
    return ckpt, root / "val"


def _predict(ckpt: Path, images: Path, *args: str) -> subprocess.CompletedProcess:
    return cli_run("predict", ckpt, images, "--score-threshold", "0.0", *args)


def _rows(aset) -> list[tuple]:
    names = {c.id: c.name for c in aset.categories}
    files = {im.id: Path(im.file_name).name for im in aset.images}
    return sorted((files[i.image_id], names[i.category_id], *i.bbox) for i in aset.instances)


def _same(got, expected, tol: float) -> bool:
    """The same boxes, one for one, within `tol` pixels (formats round coordinates: CVAT its corners to 0.01)."""
    left = list(_rows(got))
    for row in _rows(expected):
        match = next((r for r in left if r[:2] == row[:2] and max(abs(a - b) for a, b in zip(r[2:], row[2:])) <= tol), None)
        if match is None:
            return False
        left.remove(match)
    return not left


def test_predictions_in_every_tool_format(detector: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, images = detector
    expected = predict_set(load_predictor(ckpt), image_files([images]), 0.0, progress=False)
    assert expected.instances and all(i.score is not None for i in expected.instances)

    config = tmp_path / "config.xml"
    config.write_text(LABEL_CONFIG)
    done = _predict(ckpt, images, "--format", "labelstudio", "--label-config", str(config), "--model-version", "v7",
                    "--out", str(tmp_path / "ls.json"))
    assert done.returncode == 0, done.stderr
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert len(tasks) == 3 and all("annotations" not in t or not t["annotations"] for t in tasks)
    results = [r for t in tasks for p in t["predictions"] for r in p["result"]]
    assert {p["model_version"] for t in tasks for p in t["predictions"]} == {"v7"}
    assert {(r["from_name"], r["to_name"], r["type"]) for r in results} == {("bbox", "img", "rectanglelabels")}
    assert all(0 <= r["value"]["x"] <= 100 and 0 <= r["score"] <= 1 for r in results)
    assert _same(read_dataset("labelstudio", tmp_path / "ls.json", images=images), expected, 1e-4)
    assert not (tmp_path / "label_config.xml").exists()  # the project's own config is the one given
    # Without a config: controls named per result type, and a config that imports them written beside.
    done = _predict(ckpt, images, "--format", "labelstudio", "--out", str(tmp_path / "ls"))
    assert done.returncode == 0, done.stderr
    results = [r for t in json.loads((tmp_path / "ls" / "tasks.json").read_text()) for p in t["predictions"]
               for r in p["result"]]
    assert {(r["from_name"], r["to_name"], r["type"]) for r in results} == {("label", "image", "rectanglelabels")}
    config = (tmp_path / "ls" / "label_config.xml").read_text()
    assert '<RectangleLabels name="label" toName="image">' in config
    assert _same(read_dataset("labelstudio", tmp_path / "ls" / "tasks.json", images=images), expected, 1e-4)

    done = _predict(ckpt, images, "--format", "cvat", "--out", str(tmp_path / "cvat"))
    assert done.returncode == 0, done.stderr
    xml = (tmp_path / "cvat" / "annotations.xml").read_text()
    assert xml.count('source="auto"') == len(expected.instances)
    back = read_dataset("cvat", tmp_path / "cvat" / "annotations.xml", images=images)
    assert _same(back, expected, 0.011) and all(i.score is not None for i in back.instances)

    done = _predict(ckpt, images, "--format", "coco", "--out", str(tmp_path / "pred.json"))
    assert done.returncode == 0, done.stderr
    coco = json.loads((tmp_path / "pred.json").read_text())
    assert sorted(a["score"] for a in coco["annotations"]) == pytest.approx(sorted(i.score for i in expected.instances))
    assert {c["id"] for c in coco["categories"]} == {0, 5, 17}  # the dataset's own ids, 0 included

    for fmt in ("yolo", "voc"):
        done = _predict(ckpt, images, "--format", fmt, "--out", str(tmp_path / fmt))
        assert done.returncode == 0, done.stderr
        assert "score" in done.stdout  # the formats without scores say so
        assert _same(read_dataset(fmt, tmp_path / fmt, split="predictions"), expected, 1e-4)


def test_control_names_from_a_label_config(tmp_path: Path) -> None:
    config = tmp_path / "c.xml"
    config.write_text(LABEL_CONFIG.replace("</View>", '<PolygonLabels name="poly" toName="img"/></View>'))
    assert control_names(config) == {"rectanglelabels": "bbox", "polygonlabels": "poly", "to_name": "img"}
    config.write_text("<View><Image name='i' value='$image'/></View>")
    from visiontl.errors import DataError

    with pytest.raises(DataError, match="no RectangleLabels, PolygonLabels or BrushLabels control"):
        control_names(config)


def test_pre_annotation_keeps_what_the_display_threshold_shows(detector: tuple[Path, Path], tmp_path: Path) -> None:
    """Pre-annotations go to annotators, as serve's regions do: without --score-threshold they are the
    detections at or above model.display_threshold (0.5), or --display-threshold."""
    ckpt, images = detector
    every = predict_set(load_predictor(ckpt), image_files([images]), 0.0, progress=False)
    shown = [i.score for i in every.instances if i.score >= 0.5]
    assert len(shown) < len(every.instances)  # the young detector's weak boxes exist, and are left out
    done = cli_run("predict", ckpt, images, "--format", "coco", "--out", str(tmp_path / "default.json"))
    assert done.returncode == 0, done.stderr
    kept = json.loads((tmp_path / "default.json").read_text())["annotations"]
    assert sorted(a["score"] for a in kept) == pytest.approx(sorted(shown), abs=1e-5)
    done = cli_run("predict", ckpt, images, "--format", "coco", "--display-threshold", "0", "--out",
                   str(tmp_path / "all.json"))
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "all.json").read_text())["annotations"]) == len(every.instances)
