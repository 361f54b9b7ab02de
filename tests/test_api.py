"""The Python API (visiontl.api): train, load, predict in memory and evaluate through `import visiontl` alone, for
classification, detection and segmentation, with the numbers the CLI gets on the same config and seed."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import visiontl as vtl
from conftest import REPO, fresh_log, run_main, tiny_config
from test_detection import det_config
from test_segmentation import seg_config
from visiontl.data.synthetic import make_detection_coco, make_imagefolder, make_segmentation_folders

TASKS = ["classification", "detection", "segmentation"]


def recipe(task: str, base: Path) -> dict:
    """A config of `task` that trains in a step or two on a tiny synthetic dataset made under `base`."""
    if task == "classification":
        root = make_imagefolder(base / "data", classes=3, train_per_class=4, val_per_class=2, size=32)
        return tiny_config(root, base / "unused", train={"epochs": 1})
    if task == "detection":
        make_detection_coco(base / "data", images=4, split="train", seed=0)
        make_detection_coco(base / "data", images=3, split="val", seed=1)
        return det_config(base / "data", base / "unused", model={"backbone": "mobilenet_v3_small", "fpn_channels": 16,
                                                                  "detections_per_image": 10})
    root = make_segmentation_folders(base / "data", train=4, val=2)
    return seg_config(root, base / "unused", train={"epochs": 1, "batch_size": 2})


class Trained:
    """One task's recipe trained twice: through vtl.train and through `visiontl train` (in this process)."""

    def __init__(self, task: str, base: Path):
        self.raw = recipe(task, base)
        self.cli_dir = base / "cli"
        config_file = base / "recipe.yaml"
        config_file.write_text(yaml.safe_dump(self.raw))
        self.cfg = vtl.load_config(self.raw, overrides={"run.dir": base / "api"})
        with fresh_log():
            self.run = vtl.train(self.cfg)
            from visiontl.cli import main

            assert main(["train", str(config_file), f"run.dir={self.cli_dir}"]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    """Each task trained once for the whole module, on first use."""
    cache: dict[str, Trained] = {}

    class Lazy(dict):
        def __missing__(self, task: str) -> Trained:
            cache[task] = Trained(task, tmp_path_factory.mktemp(task))
            self[task] = cache[task]
            return cache[task]

    return Lazy()


def scalars(metrics: dict) -> dict:
    """The numbers of a metrics dict, NaN (a class without ground truth) as a string so that it compares equal."""
    return {k: "nan" if v != v else v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def losses(run_dir: Path) -> list[dict]:
    """log.csv without its timing columns."""
    import csv

    with open(run_dir / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if "second" not in k and k != "img_per_s"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("task", TASKS)
def test_api_training_gets_the_clis_numbers(task: str, trained: dict) -> None:
    t = trained[task]
    run = t.run
    assert isinstance(run, vtl.Run) and run.dir == (t.cfg.run.dir).absolute()
    assert run.best.is_file() and run.last.is_file() and (run.dir / "train.log").is_file()
    cli = json.loads((t.cli_dir / "metrics.json").read_text())
    assert scalars(run.metrics) and scalars(run.metrics) == scalars(cli)
    assert run.metrics["best"] == cli["best"]
    assert losses(run.dir) == losses(t.cli_dir) and "train_loss" in losses(run.dir)[0]  # every step the same


@pytest.mark.parametrize("task", TASKS)
def test_api_evaluation_gets_the_clis_numbers(task: str, trained: dict, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    t = trained[task]
    model = vtl.load(t.run.best)
    assert model.task == task and isinstance(model, vtl.Predictor)
    metrics = vtl.evaluate(model, t.cfg.data, split="val")
    code, _, err = run_main(["evaluate", str(t.run.best), "--out", str(tmp_path / "cli")], capsys)
    assert code == 0, err
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert scalars(metrics) == scalars(cli)
    monitor = t.cfg.train.monitor
    assert metrics[monitor] == pytest.approx(t.run.metrics["best"][monitor], abs=1e-9)  # best.pt's own number
    if task != "classification":
        return  # the files are the same code's for every task: one task shows them
    # with out_dir: the files `visiontl evaluate --out` writes
    again = vtl.evaluate(t.run, out_dir=tmp_path / "api")
    assert scalars(again) == scalars(cli)
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == sorted(p.name for p in (tmp_path / "cli").iterdir())
    on_train = vtl.evaluate(model, t.cfg.data, split="train")
    assert on_train["num_samples"] == 12 and on_train["split"] == "train"  # 3 classes x 4 train images


def test_evaluate_scores_the_model_in_memory_and_writes_nothing_without_out_dir(trained: dict, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    import torch

    from visiontl.atomic import observe_writes, stop_observing_writes

    t = trained["classification"]
    copy = tmp_path / "copy.pt"
    shutil.copy(t.run.best, copy)
    model = vtl.load(copy)
    copy.unlink()  # scored in memory: the checkpoint is not read again
    written: list[Path] = []
    observe_writes(written.append)
    try:
        metrics = vtl.evaluate(model, t.cfg.data)
    finally:
        stop_observing_writes(written.append)
    assert written == [] and list(tmp_path.iterdir()) == []
    code, _, err = run_main(["evaluate", str(t.run.best), "--out", str(tmp_path / "cli")], capsys)
    assert code == 0, err
    assert scalars(metrics) == scalars(json.loads((tmp_path / "cli" / "metrics.json").read_text()))
    assert metrics["checkpoint"] == str(copy) and metrics["split"] == str(t.cfg.data.val)
    with torch.no_grad():  # the model as it is now: all-zero weights give every class the same logit
        for p in model.model.parameters():
            p.zero_()
    assert vtl.evaluate(model, t.cfg.data)["loss"] == pytest.approx(np.log(3), abs=1e-6)
    # model.* keys rebuild the model from its checkpoint, as `visiontl evaluate` does: here it is gone
    with pytest.raises(vtl.errors.CheckpointError):
        vtl.evaluate(model, t.cfg.data, overrides={"model.dropout": 0.5})


def val_images(t: Trained) -> list[Path]:
    root = Path(t.raw["data"]["root"])
    folder = {"classification": root / "val", "detection": root / "val", "segmentation": root / "images" / "val"}
    return sorted(f for f in folder[t.cfg.task].rglob("*") if f.suffix in (".png", ".jpg"))


def three_ways(file: Path) -> list:
    """The same image as a path, a PIL image and an RGB array."""
    pil = Image.open(file)
    return [file, pil, np.asarray(pil.convert("RGB"))]


def test_classification_predicts_in_memory_as_the_cli(trained: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    t = trained["classification"]
    files = val_images(t)
    code, _, err = run_main(["predict", str(t.run.best), *map(str, files), "--out", str(tmp_path / "p.json"),
                             "--topk", "2"], capsys)
    assert code == 0, err
    cli = json.loads((tmp_path / "p.json").read_text())
    preds = t.run.model.predict(files, topk=2)
    assert [p.source for p in preds] == [r["file"] for r in cli]
    for p, row in zip(preds, cli):
        assert isinstance(p, vtl.ClassPrediction) and p.label == p.labels[0] and p.classes == ["class_0", "class_1", "class_2"]
        assert p.labels == [x["class"] for x in row["top"]]
        assert p.scores == pytest.approx([x["score"] for x in row["top"]], abs=1e-6)
        assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    same = t.run.model.predict(three_ways(files[0]), topk=3)
    assert [p.source for p in same] == [str(files[0]), None, None]
    for p in same[1:]:
        assert p.labels == same[0].labels and p.scores == pytest.approx(same[0].scores, abs=1e-6)
    assert len(same[0].labels) == 3


def test_detection_predicts_in_memory_as_the_cli(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    t = trained["detection"]
    files = val_images(t)
    code, _, err = run_main(["predict", str(t.run.best), *map(str, files), "--out", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    cli = json.loads((tmp_path / "p.json").read_text())
    model = vtl.load(t.run.best)
    preds = model.predict(files)
    records = []
    for image_id, p in enumerate(preds, start=1):  # the CLI numbers images from 1 in input order
        assert isinstance(p, vtl.Detections) and p.masks is None
        assert p.boxes.dtype == np.float32 and p.boxes.shape == (len(p), 4) and p.scores.shape == (len(p),)
        assert set(p.labels) <= {"shape_0", "shape_5", "shape_17"} and set(p.category_ids.tolist()) <= {0, 5, 17}
        assert [f"shape_{c}" for c in p.category_ids] == p.labels
        records += [{**r, "file_name": p.source} for r in p.to_coco(image_id)]
    assert records and records == cli
    same = model.predict(three_ways(files[1]))
    for p in same[1:]:
        np.testing.assert_allclose(p.boxes, same[0].boxes, atol=1e-4)
        assert p.labels == same[0].labels
    picture = same[2].draw()
    assert picture.size == Image.open(files[1]).size and picture.mode == "RGB"
    assert not np.array_equal(np.asarray(picture), same[2].image)  # boxes were drawn
    assert model.predict(files[0], score_threshold=1.01)[0].boxes.shape == (0, 4)  # nothing scores above 1


def test_segmentation_predicts_in_memory_as_the_cli(trained: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    t = trained["segmentation"]
    files = val_images(t)
    code, _, err = run_main(["predict", str(t.run.best), *map(str, files), "--out", str(tmp_path / "masks")], capsys)
    assert code == 0, err
    preds = vtl.load(t.run.best).predict(three_ways(files[0]) + files[1:])
    for p, f in zip(preds, [files[0]] * 3 + files[1:]):
        assert isinstance(p, vtl.SegmentationPrediction) and p.classes == ["background", "red", "green"]
        assert p.mask.dtype == np.uint8
        np.testing.assert_array_equal(p.mask, np.asarray(Image.open(tmp_path / "masks" / f"{f.stem}.png")))
        assert set(p.classes_present) <= set(p.classes)
    picture = preds[0].draw()
    assert picture.width == 67 and picture.height > 53  # the overlay, and the legend under it
    assert preds[0].draw(legend=False).size == (67, 53)


def test_import_visiontl_imports_no_torch() -> None:
    code = "import sys, visiontl; assert 'torch' not in sys.modules, 'torch'; visiontl.load_config; " \
           "assert 'torch' not in sys.modules, 'torch after load_config'; print(sorted(visiontl.__all__))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "'train'" in done.stdout and "'evaluate'" in done.stdout


def test_overrides_as_a_dict_or_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"task": "detection", "train": {"epochs": 5}}))
    a = vtl.load_config(path, overrides={"train.epochs": 3, "data.root": tmp_path, "model.anchor_sizes": [[16], [32]]})
    b = vtl.load_config(path, overrides=["train.epochs=3", f"data.root={tmp_path}", "model.anchor_sizes=[[16], [32]]"])
    assert a == b and a.train.epochs == 3 and a.data.root == tmp_path and a.model.arch == "faster_rcnn"
    assert vtl.load_config(a, overrides={"train.lr": 0.5}).train.lr == 0.5 and a.train.lr != 0.5  # a copy


@pytest.mark.parametrize("call, error, message", [
    (lambda: vtl.load_config({"train": {"epochz": 1}}), vtl.ConfigError, "config: unknown key 'train.epochz' (did you mean"),
    (lambda: vtl.load_config(None, {"train.epochs": -1}), vtl.ConfigError, "config: train.epochs: Input should be greater"),
    (lambda: vtl.load_config("nowhere.yaml"), vtl.ConfigError, "config file 'nowhere.yaml' not found"),
    (lambda: vtl.load_config({"train": {"epochs": 2}}, {"train.epochs.x": 1}), vtl.ConfigError,
     "override 'train.epochs.x': train.epochs is a value, not a section"),
    (lambda: vtl.load("nowhere.pt"), vtl.errors.CheckpointError, "nowhere.pt: no such file"),
    (lambda: vtl.build_model("yolo", backbone="resnet18", num_classes=2, weights="none"), vtl.ConfigError,
     "'yolo'"),
])
def test_errors_are_visiontls_one_line(call, error, message: str) -> None:
    with pytest.raises(error) as caught:
        call()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, vtl.VisiontlError)


def test_training_errors_are_the_clis_and_leave_the_logger_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = tiny_config(tmp_path / "missing", tmp_path / "run")
    code, _, err = run_main(["train", str(_write(tmp_path, raw))], capsys)
    with fresh_log():
        with pytest.raises(vtl.errors.DataError) as caught:
            vtl.train(raw)
        assert logging.getLogger("visiontl").handlers == []  # the console handler was removed
    assert code == 2 and err.strip() == f"visiontl: error: {caught.value}"


def test_a_callers_handler_gets_the_log_instead(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    t = trained["classification"]
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    with fresh_log():
        logger = logging.getLogger("visiontl")
        logger.addHandler(Collect())
        logger.setLevel(logging.INFO)
        capsys.readouterr()
        vtl.evaluate(t.run.best, out_dir=tmp_path / "eval", overrides=["train.device=cpu"])  # (it reports)
        assert capsys.readouterr().out == ""  # nothing printed: the caller's handler decides
    assert any(line.startswith("report:") for line in lines)


def test_predict_refuses_what_is_not_an_image(trained: dict) -> None:
    model = trained["classification"].run.model
    for bad, message in [(np.zeros((4, 4, 3), np.float32), "an array image must be HxWx3 (RGB) or HxW uint8"),
                         (42, "cannot read an image from a int"), ([], "no images given"),
                         (np.zeros((20, 20, 3), np.uint8), "over the pixel budget of 100")]:
        with pytest.raises(vtl.errors.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model.predict(bad, max_pixels=100)
    gray = model.predict(np.zeros((20, 20), np.uint8))[0]  # HxW: grayscale
    assert gray.labels[0] in model.classes


def test_build_model_builds_what_a_config_trains() -> None:
    import torch

    clf = vtl.build_model("classifier", backbone="resnet18", num_classes=4, weights="none")
    assert clf(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    seg = vtl.build_model("unet", backbone="resnet18", num_classes=3, weights="none", decoder_channels=[32, 16, 8, 8, 8])
    assert seg.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    det = vtl.build_model("faster_rcnn", backbone="mobilenet_v3_small", num_classes=3, weights="none", min_size=64)
    assert det.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes and the background
    assert det.transform.min_size == (64,)


def test_every_public_function_documents_every_argument() -> None:
    import inspect

    from visiontl.predictor import ClassificationPredictor

    for fn in (vtl.load_config, vtl.train, vtl.load, vtl.evaluate, vtl.build_model, ClassificationPredictor.predict):
        doc = inspect.getdoc(fn)
        for name in inspect.signature(fn).parameters:
            if name != "self":
                assert f"{name}:" in doc, f"{fn.__qualname__} does not document {name}"


def _write(folder: Path, raw: dict) -> Path:
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_instance_masks_go_to_coco_as_rle_and_are_drawn() -> None:
    from pycocotools import mask as mask_utils

    from visiontl.data.annotations import LabelMap

    image = np.full((30, 40, 3), 20, np.uint8)
    masks = np.zeros((2, 30, 40), bool)
    masks[0, 5:15, 5:20] = True
    masks[1, 18:28, 22:38] = True
    found = vtl.Detections(boxes=np.array([[5, 5, 20, 15], [22, 18, 38, 28]], np.float32), labels=["shape_5", "shape_0"],
                           scores=np.array([0.9, 0.4], np.float32), category_ids=np.array([5, 0]), masks=masks,
                           image=image, label_map=LabelMap((0, 5, 17), ("shape_0", "shape_5", "shape_17")))
    records = found.to_coco(image_id=7)
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in records] == [(7, 5, [5, 5, 15, 10]), (7, 0, [22, 18, 16, 10])]
    for r, m in zip(records, masks):
        np.testing.assert_array_equal(mask_utils.decode({**r["segmentation"], "counts": r["segmentation"]["counts"].encode()}), m)
    drawn = np.asarray(found.draw())
    assert drawn.shape == (30, 40, 3) and (drawn[10, 10] != 20).any() and (drawn[2, 2] == 20).all()  # inside a mask, outside
