"""The `visiontl data` commands through the real CLI: check, stats, split, convert."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_run as run
from test_data_check import broken_coco
from visiontl.cli import ANNOTATION_FORMATS
from visiontl.data.formats.registry import FORMAT_NAMES, FORMATS, read_dataset
from visiontl.data.synthetic import make_detection_coco


def test_every_format_name_comes_from_the_registry_and_the_parser_imports_no_reader() -> None:
    from typing import get_args

    from visiontl.config import TASK_FORMATS, DataConfig

    assert ANNOTATION_FORMATS == FORMAT_NAMES
    assert set(FORMAT_NAMES) <= set(get_args(DataConfig.model_fields["format"].annotation))
    assert TASK_FORMATS["detection"] == tuple(n for n, f in FORMATS.items() if "detection" in f.tasks)
    code = ("import sys, visiontl.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith('visiontl.data.formats.') or m == 'numpy'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "['visiontl.data.formats.registry']", done.stderr


def test_check_a_broken_dataset_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = broken_coco(tmp_path)
    done = run("data", "check", str(path), "--format", "coco", "--images", str(tmp_path / "images"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(("error:", "warning:"))]
    assert len(lines) == 15 and sum(line.startswith("error:") for line in lines) == 13
    assert done.stdout.strip().splitlines()[-1].endswith("13 error(s), 2 warning(s)")


def test_check_a_clean_dataset_exits_0(tmp_path: Path) -> None:
    src = make_detection_coco(tmp_path, images=3, split="train", seed=0)
    done = run("data", "check", str(src), "--format", "coco")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 error(s)" in done.stdout.strip().splitlines()[-1]


def test_unreadable_source_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    done = run("data", "check", str(tmp_path / "x.json"), "--format", "coco")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    done = run("data", "stats", str(tmp_path / "x.json"), "--format", "coco", "--out", str(tmp_path / "s"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_stats_and_split(tmp_path: Path) -> None:
    src = str(make_detection_coco(tmp_path, images=20, split="train", seed=0))
    done = run("data", "stats", src, "--format", "coco", "--out", str(tmp_path / "stats"))
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["images"] == 20 and (tmp_path / "stats" / "stats.png").stat().st_size > 10_000
    done = run("data", "split", src, "--format", "coco", "--val", "0.25", "--test", "0.25", "--seed", "3",
               "--out", str(tmp_path / "split"))
    assert done.returncode == 0, done.stderr
    parts = json.loads((tmp_path / "split" / "split.json").read_text())
    assert [len(parts[k]) for k in ("train", "val", "test")] == [10, 5, 5]
    assert sorted(sum(parts.values(), [])) == sorted(im["file_name"] for im in json.loads(Path(src).read_text())["images"])
    again = run("data", "split", src, "--format", "coco", "--val", "0.25", "--test", "0.25", "--seed", "3",
                "--out", str(tmp_path / "split2"))
    assert again.returncode == 0 and json.loads((tmp_path / "split2" / "split.json").read_text()) == parts
    for name in ("train", "val", "test"):
        written = json.loads((tmp_path / "split" / f"{name}.json").read_text())
        assert [im["file_name"] for im in written["images"]] == parts[name]


@pytest.mark.parametrize("target", [f for f in FORMAT_NAMES if f != "coco"])
def test_convert_from_coco_and_back_keeps_boxes(tmp_path: Path, target: str) -> None:
    src = make_detection_coco(tmp_path, images=4, split="train", seed=0)
    done = run("data", "convert", str(src), "--from", "coco", "--to", target, "--out", str(tmp_path / target))
    assert done.returncode == 0, done.stdout + done.stderr
    original = read_dataset("coco", src)
    back = read_dataset(target, _written_source(tmp_path / target, target), images=tmp_path)

    def boxes(aset) -> list:
        names = {c.id: c.name for c in aset.categories}
        files = {im.id: Path(im.file_name).name for im in aset.images}
        return sorted((files[i.image_id], names[i.category_id], *(round(v, 2) for v in i.bbox)) for i in aset.instances)

    assert boxes(back) == boxes(original)


def _written_source(folder: Path, fmt: str) -> Path:
    return {"cvat": folder / "annotations.xml", "labelstudio": folder / "tasks.json"}.get(fmt, folder)


@pytest.mark.parametrize("fmt", ["cvat", "labelstudio", "labelme"])
def test_train_directly_on_a_tool_export(tmp_path: Path, fmt: str) -> None:
    """An export from a labelling tool trains as it is: data.format names it, val classes line up by name."""
    from test_detection import det_config
    from visiontl.config import build_config
    from visiontl.data.formats.registry import write_dataset
    from visiontl.engine.trainer import train

    for split, seed in (("train", 0), ("val", 1)):
        src = make_detection_coco(tmp_path, images=3, split=split, seed=seed)
        aset = read_dataset("coco", src)
        if split == "val":  # another order of first appearance: the reader's ids differ from train's
            aset.instances.reverse()
        write_dataset(aset, fmt, tmp_path / f"{fmt}_{split}")
    names = {"cvat": "annotations.xml", "labelstudio": "tasks.json", "labelme": ""}
    data = {"format": fmt, "train": f"{fmt}_train/{names[fmt]}".rstrip("/"), "val": f"{fmt}_val/{names[fmt]}".rstrip("/"),
            "images": None if fmt == "labelme" else "."}
    metrics = train(build_config(det_config(tmp_path, tmp_path / "run", data=data, train={"epochs": 1, "max_steps": 1})))
    assert {"bbox/AP/shape_0", "bbox/AP/shape_5", "bbox/AP/shape_17"} <= set(metrics)
