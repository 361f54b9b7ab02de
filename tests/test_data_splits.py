"""Datasets without a val split (data.val as a fraction), images that fail the checks (data.on_bad_image=skip
before training), and runs evaluated from anywhere (absolute data.root; evaluate reads only its split)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_main, tiny_config
from test_detection import det_config
from visiontl.config import build_config
from visiontl.data.holdout import choose
from visiontl.data.synthetic import make_detection_coco
from visiontl.engine.checkpoint import load_checkpoint
from visiontl.engine.inference import evaluate_checkpoint
from visiontl.engine.trainer import train
from visiontl.errors import DataError

ONE_STEP = {"epochs": 1, "max_steps": 1}


# --- the split itself -------------------------------------------------------------------------------------------


def test_choose_is_seeded_stratified_and_keeps_both_sides() -> None:
    names = [f"img_{k:02d}.jpg" for k in range(20)]
    classes = [{"rare"} if k in (3, 11, 17) else {"common"} for k in range(20)]
    a = choose(names, classes, 0.2, seed=0, recorded=None, source="train.json")
    assert a == choose(names, classes, 0.2, seed=0, recorded=None, source="train.json")
    assert len(a.files) == 4 and sum(a.is_val) == 4
    assert a.files == [n for n, v in zip(names, a.is_val) if v]  # in the train split's order
    assert sum(1 for n in a.files if n in ("img_03.jpg", "img_11.jpg", "img_17.jpg")) == 1  # its share: 0.6 of 3
    assert choose(names, classes, 0.2, seed=1, recorded=None, source="x").files != a.files
    # a tiny fraction of a small set still leaves one val image, a large one still leaves one to train
    assert len(choose(names[:3], classes[:3], 0.01, 0, None, "x").files) == 1
    assert len(choose(names[:3], classes[:3], 0.99, 0, None, "x").files) == 2


def test_a_recorded_val_list_is_taken_as_it_is() -> None:
    names = [f"img_{k}.jpg" for k in range(6)] + ["new.jpg"]
    kept = choose(names, [set()] * 7, 0.5, seed=0, recorded=["img_1.jpg", "img_4.jpg"], source="x")
    assert kept.files == ["img_1.jpg", "img_4.jpg"] and kept.recorded
    assert kept.is_val == [False, True, False, False, True, False, False]  # new.jpg trains
    with pytest.raises(DataError) as err:
        choose(names[1:], [set()] * 6, 0.5, seed=0, recorded=["img_0.jpg"], source="train.json")
    assert str(err.value).startswith("train.json: the run's val split (data.val=0.5) holds img_0.jpg, which the "
                                     "train split no longer has")
    with pytest.raises(DataError, match="needs at least 2 train images"):
        choose(["a.jpg"], [set()], 0.2, 0, None, "x")


def test_val_as_a_fraction_is_validated() -> None:
    from visiontl.config import load_config
    from visiontl.errors import ConfigError

    assert load_config(None, ["task=detection", "data.val=0.2"]).data.val == 0.2
    assert load_config(None, ["task=detection", "data.val=test.json"]).data.val == "test.json"
    for bad in ("1.5", "0", "-0.2"):
        with pytest.raises(ConfigError, match="neither a split nor a fraction"):
            load_config(None, ["task=detection", f"data.val={bad}"])


# --- training, resuming and evaluating with a val split taken from train -------------------------------------------


@pytest.fixture(scope="module")
def only_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO detection set with one split only."""
    root = tmp_path_factory.mktemp("only_train")
    make_detection_coco(root, images=10, split="train", seed=0)
    return root


def test_detection_with_val_fraction_records_and_reuses_its_split(only_train: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    raw = det_config(only_train, run, data={"val": 0.3}, train={"epochs": 2, "max_steps": 2})
    metrics = train(build_config(raw))
    record = json.loads((run / "data.json").read_text())
    val = record["val_from_train"]
    assert val["fraction"] == 0.3 and val["seed"] == 0 and len(val["images"]) == 3
    assert all(name.startswith("train/") for name in val["images"])
    assert metrics["num_images"] == 3
    assert load_checkpoint(run / "checkpoints" / "last.pt")["val_files"] == val["images"]
    manifest = json.loads((run / "visiontl-manifest.json").read_text())["files"]
    assert "data.json" in manifest
    report = (run / "report.md").read_text()
    assert "0.3 of the train split, seed 0: 3 images" in report

    # evaluate scores exactly those images, even after the dataset has grown and with another seed
    grown = tmp_path / "grown"
    shutil.copytree(only_train, grown)
    coco = json.loads((grown / "train.json").read_text())
    extra = dict(coco["images"][0], id=999, file_name="train/extra.png")
    shutil.copy(grown / "train" / Path(coco["images"][0]["file_name"]).name, grown / "train" / "extra.png")
    coco["images"].append(extra)
    (grown / "train.json").write_text(json.dumps(coco))
    scored = evaluate_checkpoint(run / "checkpoints" / "best.pt", [f"data.root={grown}", "train.seed=5"],
                                 tmp_path / "eval")
    per_image = json.loads((tmp_path / "eval" / "eval_images.json").read_text())
    assert scored["num_images"] == 3
    assert sorted(r["file"] for r in per_image["images"]) == sorted(val["images"])

    # --resume keeps the split the run started with
    code, out, err = run_main(["train", str(run / "config.yaml"), "train.epochs=3", "train.max_steps=3",
                               f"data.root={grown}", "--resume"], capsys)
    assert code == 0, err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["val_files"] == val["images"]
    assert "as recorded in the checkpoint" in out


def test_classification_with_val_fraction_stratifies_by_class(synthetic_root: Path, tmp_path: Path) -> None:
    raw = tiny_config(synthetic_root, tmp_path / "run", data={"val": 0.25}, train={"epochs": 1, "max_steps": 1})
    train(build_config(raw))
    images = json.loads((tmp_path / "run" / "data.json").read_text())["val_from_train"]["images"]
    assert len(images) == 6  # a quarter of 24
    assert sorted({name.split("/")[1] for name in images}) == ["class_0", "class_1", "class_2"]
    assert all(name.startswith("train/") for name in images)


# --- one bad image ------------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_image_stops_training_naming_the_key_or_is_left_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "ds"
    make_detection_coco(root, images=6, split="train", seed=0)
    make_detection_coco(root, images=3, split="val", seed=1)
    bad = sorted((root / "train").glob("*.png"))[2]
    _truncate(bad)
    raw = det_config(root, tmp_path / "run", train=ONE_STEP)
    with pytest.raises(DataError) as err:
        train(build_config(raw))
    message = str(err.value)
    assert message.startswith(f"{bad}: cannot decode image") and "\n" not in message
    assert message.endswith("; data.on_bad_image=skip trains without such images")

    config = tmp_path / "skip.yaml"
    raw["data"]["on_bad_image"] = "skip"
    config.write_text(yaml.safe_dump(raw))
    code, out, err = run_main(["train", str(config)], capsys)
    assert code == 0, err
    assert "data.on_bad_image=skip: 1 image(s) left out before training:" in out
    assert f"left out: {bad}: cannot decode image" in out
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert len(record["left_out"]) == 1 and record["left_out"][0].startswith(f"{bad}: cannot decode image")
    assert "1 image(s) failed the checks before training and were left out" in (tmp_path / "run" / "report.md").read_text()


# --- evaluated from anywhere ----------------------------------------------------------------------------------------


def test_a_run_with_a_relative_root_evaluates_from_another_folder_on_a_val_only_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    make_detection_coco(work / "data" / "mine", images=4, split="train", seed=0)
    make_detection_coco(work / "data" / "mine", images=3, split="val", seed=1)
    monkeypatch.chdir(work)
    raw = det_config(Path("data/mine"), Path("runs/a"), train=ONE_STEP)
    train(build_config(raw))
    stored = yaml.safe_load((work / "runs" / "a" / "config.yaml").read_text())
    assert stored["data"]["root"] == str(work / "data" / "mine")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ckpt = work / "runs" / "a" / "checkpoints" / "best.pt"
    assert evaluate_checkpoint(ckpt, [], elsewhere / "eval1")["num_images"] == 3

    # a copy holding only the val split: evaluate needs nothing else
    val_only = tmp_path / "val_only"
    val_only.mkdir()
    shutil.copytree(work / "data" / "mine" / "val", val_only / "val")
    shutil.copy(work / "data" / "mine" / "val.json", val_only / "val.json")
    metrics = evaluate_checkpoint(ckpt, [f"data.root={val_only}"], elsewhere / "eval2")
    assert metrics["num_images"] == 3
    assert json.loads((elsewhere / "eval2" / "run.json").read_text())["train_images"] is None


# --- visiontl data split writes a dataset that trains as it is ------------------------------------------------------


@pytest.mark.parametrize(("to", "images_as"), [("voc", "copy"), ("coco", "link"), ("yolo", "copy"), ("csv", "copy"),
                                               ("cvat", "copy"), ("labelme", "copy"), ("labelstudio", "refer"),
                                               ("labelstudio", "copy"), ("coco", "refer")])
def test_data_split_output_trains_with_the_keys_it_prints(only_train: Path, tmp_path: Path, to: str, images_as: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "split"
    code, printed, err = run_main(["data", "split", str(only_train / "train.json"), "--format", "coco", "--to", to,
                                   "--val", "0.3", "--out", str(out), "--images-as", images_as], capsys)
    assert code == 0, err
    line = next(x for x in printed.splitlines() if x.startswith("train on it: visiontl train CONFIG "))
    keys = dict(k.split("=", 1) for k in line.removeprefix("train on it: visiontl train CONFIG ").split())
    assert keys["data.format"] == to and keys["data.root"] == str(out)
    if to in ("labelstudio", "labelme"):  # their files name the images where they are, whatever was asked
        assert f"the images referred to where they are, in {only_train}" in printed
    if images_as == "link":
        copied = next((out / "images").rglob("*.png"))
        assert copied.stat().st_nlink == 2  # the same file as the source's, no extra space
    raw = det_config(Path(keys.pop("data.root")), tmp_path / "run", train={"epochs": 1, "max_steps": 2},
                     data={k.removeprefix("data."): v for k, v in keys.items()})
    metrics = train(build_config(raw))
    assert metrics["num_images"] == 3  # 0.3 of 10


def test_data_split_refuses_to_refer_where_the_format_cannot(only_train: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_main(["data", "split", str(only_train / "train.json"), "--format", "coco", "--to", "voc",
                             "--out", str(tmp_path / "o"), "--images-as", "refer"], capsys)
    assert code == 2 and "VOC finds images only in its own layout; use copy or link" in err
    assert not (tmp_path / "o").exists()
