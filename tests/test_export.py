"""`visiontl export` on tiny one-step checkpoints: a classifier, a U-Net and a Faster R-CNN to ONNX and
TorchScript; the built-in parity check below its tolerance; the metadata read back from the file; predict
on the exported file equal to predict on the checkpoint; failed checks and unsupported options in one line,
with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import resnet18_config
from test_segmentation import seg_config
from visiontl.cli import main
from visiontl.config import build_config
from visiontl.data.synthetic import make_segmentation_folders
from visiontl.engine.trainer import train

onnx = pytest.importorskip("onnx", reason="the export extra (pip install 'visiontl[export]') is not installed")
pytest.importorskip("onnxruntime", reason="the export extra (pip install 'visiontl[export]') is not installed")

ONE_STEP = {"epochs": 1, "max_steps": 1}


@pytest.fixture(scope="module")
def classifier(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("clf") / "run"
    train(build_config(resnet18_config(synthetic_root, run, train=ONE_STEP)))  # the tests below name resnet18
    return run / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("unet")
    root = make_segmentation_folders(base / "data")
    train(build_config(seg_config(root, base / "run", train={**ONE_STEP, "batch_size": 2})))
    return base / "run" / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def detector(trained_detector: tuple[Path, Path]) -> Path:
    """The session's detector (conftest); its val images are `detector.parents[2] / "val"`."""
    return trained_detector[0]


def export(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def onnx_metadata(path: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    whole = json.loads(props["visiontl"])
    assert props["task"] == whole["task"] and json.loads(props["classes"]) == whole["classes"]  # each key readable alone
    return whole


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_classifier_to_onnx_parity_metadata_and_predict(classifier: Path, synthetic_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "clf.onnx"
    code, stdout, err = export(capsys, classifier, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert "parity: largest probability difference" in stdout and "on 4 val images" in stdout
    meta = onnx_metadata(out)
    assert meta["task"] == "classification" and meta["classes"] == ["class_0", "class_1", "class_2"]
    assert meta["input"]["shape"] == [1, 3, 32, 32] and meta["input_size"] == [32, 32]
    assert meta["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "inside_graph": True}
    assert list(meta["outputs"]) == ["logits", "probabilities"] and meta["opset"] == 17
    assert meta["visiontl_version"] and meta["config"]["model"]["backbone"] == "resnet18"
    assert meta["parity"]["difference"] < meta["parity"]["tolerance"] == 1e-4

    # what a user does: onnxruntime alone, pixels / 255, no mean or std
    import onnxruntime as ort

    image = np.asarray(Image.open(next((synthetic_root / "val" / "class_1").iterdir())).convert("RGB"))
    probs = ort.InferenceSession(str(out)).run(["probabilities"], {"image": (image / 255.0).astype(np.float32)
                                                                    .transpose(2, 0, 1)[None]})[0]
    assert probs.shape == (1, 3) and probs.sum() == pytest.approx(1.0, abs=1e-5)

    for model, csv_out in ((classifier, tmp_path / "ckpt.csv"), (out, tmp_path / "onnx.csv")):
        assert main(["predict", str(model), str(synthetic_root / "val"), "--out", str(csv_out), "--topk", "2"]) == 0
    ours, theirs = read_csv(tmp_path / "onnx.csv"), read_csv(tmp_path / "ckpt.csv")
    assert len(ours) == 13 and [r[:2] + r[3:4] for r in ours] == [r[:2] + r[3:4] for r in theirs]  # files, classes
    # Scores are written with 6 decimals, and onnxruntime's kernels round differently from torch's (by ~1e-7
    # here, with AVX-512 or AVX2): a last digit may differ by one. Measured: 1e-6 on both; allowed: two digits.
    assert np.allclose([[float(r[2]), float(r[4])] for r in ours[1:]], [[float(r[2]), float(r[4])] for r in theirs[1:]],
                       atol=2e-6)


def test_cli_predict_and_vtl_load_give_the_same_numbers(classifier: Path, detector: Path, synthetic_root: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The same images through `visiontl predict` and through `vtl.load(...).predict` (the same Predictor
    underneath): the same numbers in the files as in memory, for a checkpoint and for its ONNX export."""
    import visiontl as vtl

    images = synthetic_root / "val"
    assert export(capsys, classifier, "--format", "onnx", "--out", tmp_path / "clf.onnx")[0] == 0
    probabilities = []
    for model in (classifier, tmp_path / "clf.onnx"):
        out = tmp_path / f"{model.name}.json"
        assert main(["predict", str(model), str(images), "--out", str(out), "--topk", "3"]) == 0
        rows = json.loads(out.read_text())
        predictor = vtl.load(model)
        assert predictor.source == ("checkpoint" if model == classifier else "onnx")
        preds = predictor.predict(images, topk=3, batch_size=32)  # the CLI's batch: the same float sums
        assert len(rows) == len(preds) == 12 and [r["file"] for r in rows] == [p.source for p in preds]
        assert [[t["class"] for t in r["top"]] for r in rows] == [p.labels for p in preds]
        assert [[t["score"] for t in r["top"]] for r in rows] == [[round(s, 6) for s in p.scores] for p in preds]
        probabilities.append(np.stack([p.probabilities for p in preds]))
    assert np.abs(probabilities[0] - probabilities[1]).max() < 1e-5  # the file and its checkpoint agree

    # ranking takes either Predictor; diversity needs the checkpoint's backbone and says so in one line
    from visiontl.active import rank_images
    from visiontl.engine.inference import image_files
    from visiontl.errors import DataError

    files = image_files([images])
    by_file, by_checkpoint = (rank_images(vtl.load(m), files, "uncertainty", 12, progress=False)
                              for m in (tmp_path / "clf.onnx", classifier))
    scores = {r.file: r.score for r in by_checkpoint}
    assert len(by_file) == 12 and all(r.score == pytest.approx(scores[r.file], abs=1e-5) for r in by_file)
    with pytest.raises(DataError, match=r"clf\.onnx: diversity compares the backbone's features, which an exported "
                                        r"file does not give; rank with its checkpoint$"):
        rank_images(vtl.load(tmp_path / "clf.onnx"), files, "diversity", 2, progress=False)

    val = detector.parents[2] / "val"
    assert export(capsys, detector, "--format", "onnx", "--out", tmp_path / "det.onnx")[0] == 0
    for model in (detector, tmp_path / "det.onnx"):
        out = tmp_path / f"{model.name}.json"
        assert main(["predict", str(model), str(val), "--out", str(out), "--score-threshold", "0"]) == 0
        records = json.loads(out.read_text())
        found = vtl.load(model).predict(val, score_threshold=0.0)
        expected = [{**r, "file_name": d.source} for i, d in enumerate(found) for r in d.to_coco(i + 1)]
        assert records and records == json.loads(json.dumps(expected))


def test_predict_batches_decodes_one_batch_at_a_time(classifier: Path, synthetic_root: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """predict_batches (what `visiontl predict` writes from) holds one batch of images at a time."""
    import visiontl as vtl
    from visiontl.data import images as image_io

    decoded = []
    real_read = image_io.read_image
    monkeypatch.setattr(image_io, "read_image", lambda path: decoded.append(path) or real_read(path))
    batches = vtl.load(classifier).predict_batches(synthetic_root / "val", topk=1, batch_size=5)
    assert len(next(batches)) == 5 and len(decoded) == 5
    assert [len(batch) for batch in batches] == [5, 2] and len(decoded) == 12


def test_classifier_to_torchscript_with_dynamic_batch(classifier: Path, synthetic_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from visiontl.export import open_exported

    out = tmp_path / "clf.torchscript"
    code, stdout, err = export(capsys, classifier, "--format", "torchscript", "--out", out, "--dynamic-batch",
                               "--check-images", synthetic_root / "val" / "class_2")
    assert code == 0, err
    assert f"on 4 images in {synthetic_root / 'val' / 'class_2'}" in stdout
    sidecar = json.loads(Path(f"{out}.json").read_text())
    runtime = open_exported(out, allow_torchscript_code=True)  # our own export: trusted as a program
    assert runtime.metadata == sidecar  # embedded (extra/visiontl.json) and beside the file, the same
    assert sidecar["input"]["shape"] == ["batch", 3, 32, 32] and sidecar["format"] == "torchscript"
    assert sidecar["parity"]["difference"] < 1e-4
    result = runtime(np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32))
    assert result["probabilities"].shape == (3, 3)
    module = torch.jit.load(str(out))  # a user needs torch alone
    assert module(torch.rand(5, 3, 32, 32))[1].shape == (5, 3)

    assert main(["predict", str(out), str(synthetic_root / "val"), "--out", str(tmp_path / "p.json"),
                 "--allow-torchscript-code"]) == 0
    assert main(["predict", str(classifier), str(synthetic_root / "val"), "--out", str(tmp_path / "c.json")]) == 0
    ours, theirs = (json.loads((tmp_path / n).read_text()) for n in ("p.json", "c.json"))
    assert [r["top"][0]["class"] for r in ours] == [r["top"][0]["class"] for r in theirs]
    # 6 written decimals, as above: one last digit may differ (measured 1e-6 with oneDNN limited to AVX2)
    assert [r["top"][0]["score"] for r in ours] == pytest.approx([r["top"][0]["score"] for r in theirs], abs=2e-6)


def test_unet_to_onnx_and_predict_equal_masks(unet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "unet.onnx"
    code, stdout, err = export(capsys, unet, "--format", "onnx", "--out", out, "--dynamic-batch")
    assert code == 0, err
    assert "of pixels given the same label" in stdout and "on 3 val images" in stdout
    meta = onnx_metadata(out)
    assert meta["input"]["shape"] == ["batch", 3, "height", "width"] and meta["input_size"] is None
    assert meta["classes"] == ["background", "red", "green"] and list(meta["outputs"]) == ["logits", "labels"]
    assert meta["parity"]["difference"] < 1e-3 and meta["parity"]["label_agreement"] == 1.0

    images = unet.parents[2] / "data" / "images" / "val"
    for model, folder in ((unet, tmp_path / "ckpt"), (out, tmp_path / "onnx")):
        assert main(["predict", str(model), str(images), "--out", str(folder)]) == 0
    for png in sorted((tmp_path / "ckpt").glob("*.png")):
        ours, theirs = np.asarray(Image.open(tmp_path / "onnx" / png.name)), np.asarray(Image.open(png))
        assert ours.shape == theirs.shape == (53, 67)
        assert (ours == theirs).mean() >= 0.999  # a pixel on a near-tie may flip; none did when measured


def test_unet_at_a_fixed_size_to_torchscript(unet: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "unet64.pt"
    code, stdout, err = export(capsys, unet, "--format", "torchscript", "--out", out, "--image-size", "64", "96")
    assert code == 0, err
    assert json.loads(Path(f"{out}.json").read_text())["input"]["shape"] == [1, 3, 64, 96]
    images = unet.parents[2] / "data" / "images" / "val"
    # .pt: told apart from a checkpoint by its contents, and refused unless its code is allowed to run
    assert main(["predict", str(out), str(images), "--out", str(tmp_path / "masks")]) == 2
    assert "refused: a TorchScript archive" in capsys.readouterr().err
    assert main(["predict", str(out), str(images), "--out", str(tmp_path / "masks"), "--allow-torchscript-code"]) == 0
    with Image.open(next((tmp_path / "masks").glob("*.png"))) as mask:
        assert mask.size == (67, 53)  # resized to the file's size and the labels back to the image's


def test_detector_to_onnx_and_torchscript_and_predict(detector: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    val = detector.parents[2] / "val"
    assert main(["predict", str(detector), str(val), "--out", str(tmp_path / "ckpt.json"), "--score-threshold", "0"]) == 0
    theirs = json.loads((tmp_path / "ckpt.json").read_text())
    assert theirs
    for fmt, name in (("onnx", "det.onnx"), ("torchscript", "det.torchscript")):
        out = tmp_path / name
        code, stdout, err = export(capsys, detector, "--format", fmt, "--out", out)
        assert code == 0, err
        meta = onnx_metadata(out) if fmt == "onnx" else json.loads(Path(f"{out}.json").read_text())
        assert meta["label_map"] == {"category_ids": [0, 5, 17], "names": ["shape_0", "shape_5", "shape_17"]}
        assert meta["score_threshold"] == 0.0 and meta["input"]["shape"] == [1, 3, "height", "width"]
        assert list(meta["outputs"]) == ["boxes", "scores", "labels"] and "shorter side 72" in meta["resize"]
        parity = meta["parity"]
        assert parity["difference"] < 1e-3 and parity["unmatched"] == 0 and parity["matched"] > 0
        assert parity["matched"] + parity["tied"] == parity["detections"]  # tied: equal scores, see parity.py

        trust = ["--allow-torchscript-code"] if fmt == "torchscript" else []
        assert main(["predict", str(out), str(val), "--out", str(tmp_path / f"{fmt}.json"), "--score-threshold", "0",
                     *trust]) == 0
        ours = json.loads((tmp_path / f"{fmt}.json").read_text())
        assert len(ours) == len(theirs)
        key = lambda r: (r["file_name"], r["category_id"], round(r["score"], 4), [round(v, 2) for v in r["bbox"]])  # noqa: E731
        assert sorted(map(key, ours)) == sorted(map(key, theirs))
    # pre-annotation through the same code: a COCO file of the exported model's predictions
    assert main(["predict", str(tmp_path / "det.onnx"), str(val), "--format", "coco", "--out", str(tmp_path / "pre"),
                 "--score-threshold", "0"]) == 0
    coco = json.loads(next((tmp_path / "pre").rglob("*.json")).read_text())
    assert len(coco["annotations"]) == len(theirs) and {c["id"] for c in coco["categories"]} == {0, 5, 17}


def test_failed_parity_is_one_line_and_writes_nothing(classifier: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "clf.onnx"
    code, _, err = export(capsys, classifier, "--format", "onnx", "--out", out, "--tolerance", "0")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"visiontl: error: {out}: parity check failed (difference ")
    assert "> tolerance 0, on " in err and "nothing written" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_unreachable_val_images_fall_back_to_synthetic(classifier: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    moved = torch.load(classifier, map_location="cpu", weights_only=True)
    moved["config"]["data"]["root"] = str(tmp_path / "elsewhere")  # the dataset stayed on another machine
    torch.save(moved, tmp_path / "moved.pt")
    code, stdout, err = export(capsys, tmp_path / "moved.pt", "--format", "torchscript", "--out", tmp_path / "m.ts")
    assert code == 0, err
    assert "on 4 synthetic images (the checkpoint's val images are not reachable)" in stdout


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--out", "x.pt"], "--out: an ONNX file's name ends in .onnx"),
    (["--format", "torchscript", "--out", "x.onnx"], "--out: x.onnx ends in .onnx"),
    (["--format", "onnx", "--out", "x.onnx", "--opset", "9"], "--opset: 9 is outside 11..20"),
    (["--format", "torchscript", "--out", "x.pt", "--opset", "17"], "--opset is an ONNX setting"),
    (["--format", "onnx", "--out", "x.onnx", "--tolerance", "-1"], "--tolerance: must be at least 0"),
])
def test_bad_options_are_one_line(classifier: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str],
                                  message: str) -> None:
    code, _, err = export(capsys, classifier, *args)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_detectors_refuse_a_dynamic_batch(detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = export(capsys, detector, "--format", "onnx", "--out", tmp_path / "d.onnx", "--dynamic-batch")
    assert code == 2 and err.count("\n") == 1
    assert "--dynamic-batch: detectors export for one image per call" in err and not (tmp_path / "d.onnx").exists()


def test_an_exporter_failure_is_one_line(classifier: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset version 17 is not supported.\n"
                           "Please feel free to request support")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    code, _, err = export(capsys, classifier, "--format", "onnx", "--out", tmp_path / "c.onnx")
    assert code == 2 and err.count("\n") == 1
    assert "classifier on resnet18 cannot be exported to onnx by torch.onnx.export" in err
    assert "'aten::frobnicate'" in err and not (tmp_path / "c.onnx").exists()


def test_predict_names_a_foreign_onnx_file(tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture) -> None:
    foreign = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 1), (torch.rand(1, 3, 8, 8),), str(foreign), dynamo=False,
                      input_names=["image"])
    assert main(["predict", str(foreign), str(synthetic_root / "val"), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{foreign}: no visiontl metadata in metadata_props" in err


def test_detection_matching_counts_a_lonely_detection_by_its_margin() -> None:
    from visiontl.export.parity import compare_detections

    def dets(boxes, scores, labels):
        return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.array(scores, dtype=np.float32),
                "labels": np.array(labels, dtype=np.int64)}

    ref = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [1, 2])
    same_but_shifted = dets([[20, 20, 40, 40.5], [0, 0, 10, 10]], [0.5, 0.9], [2, 1])  # order does not matter
    figures = compare_detections(ref, same_but_shifted, 100, 0.3, 100, 1e-3)
    assert figures["matched"] == 2 and figures["box_px"] == 0.5 and figures["difference"] == pytest.approx(0.005)
    one_missing = dets([[0, 0, 10, 10]], [0.9], [1])
    assert compare_detections(ref, one_missing, 100, 0.3, 100, 1e-3)["difference"] == pytest.approx(0.2)  # 0.5 - threshold
    wrong_class = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [1, 1])
    assert compare_detections(ref, wrong_class, 100, 0.3, 100, 1e-3)["unmatched"] == 2
    full = dets([[0, 0, 10, 10]], [0.9], [1])  # a full list of 1: its cut-off is its last score
    assert compare_detections(ref, full, 100, 0.3, 1, 1e-3)["difference"] == 0.0
    # two equally scored overlapping boxes: each side kept another one (NMS's choice among ties is arbitrary)
    tied_ref = dets([[0, 0, 10, 10], [4, 0, 14, 10], [50, 50, 60, 60]], [0.5, 0.5, 0.8], [1, 1, 2])
    tied_out = dets([[2, 0, 12, 10], [50, 50, 60, 60]], [0.5, 0.8], [1, 2])
    figures = compare_detections(tied_ref, tied_out, 100, 0.3, 100, 1e-3)
    assert figures["difference"] == 0.0 and figures["matched"] == 1 and figures["tied"] == 2


# --- an exported file from elsewhere: its metadata is a claim, checked before use ----------------------------


class TinyClassifier(torch.nn.Module):
    """Two classes from the mean colour: an ONNX classifier in milliseconds, with visiontl's input and outputs."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, classes)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.fc(image.mean(dim=(2, 3)))
        return logits, logits.softmax(1)


class WidthClassifier(torch.nn.Module):
    """As many "classes" as the image is wide: a graph whose class count onnxruntime cannot know in advance."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = image.mean(dim=(1, 2))
        return logits, logits.softmax(1)


def tiny_metadata() -> dict:
    return {"task": "classification", "classes": ["cat", "dog"], "input": {"name": "image", "shape": [1, 3, 32, 32]},
            "input_size": [32, 32], "outputs": {"logits": "[N, K]", "probabilities": "[N, K]"}, "label_map": None,
            "checkpoint": {"file": "last.pt", "epoch": 1}, "score_threshold": None,
            "config": build_config({"task": "classification", "model": {"backbone": "resnet18", "weights": "none"},
                                    "data": {"image_size": 32}}).to_dict()}


def tiny_onnx(path: Path, stored: str | dict, free_classes: bool = False,
              names: tuple[str, ...] = ("image", "logits", "probabilities")) -> Path:
    """TinyClassifier as ONNX with `stored` under metadata_props["visiontl"] (a dict: written as visiontl does;
    a string: written as it is). `free_classes`: WidthClassifier at free sizes instead, whose class count
    only its output shows. `names`: of the input and the two outputs."""
    import io

    from visiontl.export.formats import onnx_with_metadata

    import warnings

    buf = io.BytesIO()
    free = {"image": {2: "height", 3: "width"}, "logits": {1: "classes"}, "probabilities": {1: "classes"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notices
        torch.onnx.export(WidthClassifier() if free_classes else TinyClassifier(), (torch.rand(1, 3, 32, 32),), buf,
                          dynamo=False, input_names=list(names[:1]), output_names=list(names[1:]),
                          dynamic_axes=free if free_classes else None)
    model = onnx.load_from_string(onnx_with_metadata(buf.getvalue(), tiny_metadata()))
    if not isinstance(stored, dict) or stored != tiny_metadata():
        entry = next(p for p in model.metadata_props if p.key == "visiontl")
        entry.value = stored if isinstance(stored, str) else json.dumps(stored)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def one_image(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "red.png")
    return folder


def tampered(**changes: object) -> dict:
    """tiny_metadata with fields replaced (a value of ... removes the field; "input.shape" reaches inside)."""
    meta = tiny_metadata()
    for key, value in changes.items():
        parent, _, leaf = key.replace("__", ".").rpartition(".")
        target = meta[parent] if parent else meta
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return meta


def test_the_untouched_tiny_file_predicts(tmp_path: Path, one_image: Path) -> None:
    """The file the cases below tamper with is a working model: what they see refused is the tampering."""
    model = tiny_onnx(tmp_path / "model.onnx", tiny_metadata())
    assert main(["predict", str(model), str(one_image), "--out", str(tmp_path / "p.csv"), "--topk", "2"]) == 0
    rows = read_csv(tmp_path / "p.csv")
    assert len(rows) == 2 and sorted(rows[1][1:4:2]) == ["cat", "dog"]


@pytest.mark.parametrize("stored, message", [
    (tampered(classes=None), "metadata field 'classes': expected a non-empty list of class names (strings), got null"),
    (tampered(classes=[]), "metadata field 'classes': expected a non-empty list"),
    (tampered(classes=["cat", 7]), "metadata field 'classes': expected a non-empty list of class names (strings), "
                                   'got ["cat", 7]'),
    (tampered(classes=["cat", "cat"]), "metadata field 'classes': expected each class once, got \"'cat' twice\""),
    (tampered(config=...), "metadata has no field 'config'; export it again with `visiontl export`"),
    (tampered(config=None), "metadata field 'config': expected the model's config (a JSON object), got null"),
    (tampered(config=[1]), "metadata field 'config': expected the model's config (a JSON object), got [1]"),
    (tampered(task=["classification"]), "metadata field 'task': expected one of classification, segmentation, "
                                        "detection, instance_segmentation, got [\"classification\"]"),
    (tampered(task="poetry"), "metadata field 'task': expected one of classification, segmentation, detection, "
                              "instance_segmentation, got \"poetry\""),
    (tampered(input_size=[0, 0], input__shape=[1, 3, 0, 0]), "metadata field 'input.shape': expected [N, 3, H, W], "
                                                            "each a name or an integer in 1..16384, got [1, 3, 0, 0]"),
    (tampered(input_size=[0, 0]), "metadata field 'input_size': expected null or [H, W], integers in 1..16384, "
                                  "got [0, 0]"),
    (tampered(input_size=[10**9, 10**9]), "metadata field 'input_size': expected null or [H, W], integers in "
                                          "1..16384, got [1000000000, 1000000000]"),
    (tampered(input_size=[32.5, 32]), "metadata field 'input_size': expected null or [H, W]"),
    (tampered(input_size=[64, 64]), "metadata field 'input_size': expected the H, W of input.shape [1, 3, 32, 32]"),
    (tampered(input_size=None), "metadata field 'input_size': expected [H, W] as fixed by input.shape"),
    (tampered(input=[1, 3, 32, 32]), "metadata field 'input.shape': expected [N, 3, H, W], each a name or an "
                                     "integer in 1..16384, got [1, 3, 32, 32]"),
    (tampered(input__shape=[0, 3, 32, 32], input_size=[32, 32]), "metadata field 'input.shape'"),
    (tampered(outputs={"logits": ""}), "metadata field 'outputs': expected the classification outputs logits, "
                                       "probabilities, in this order, got [\"logits\"]"),
    (tampered(checkpoint={"epoch": "one"}), "metadata field 'checkpoint': expected null or an object whose epoch"),
    (tampered(score_threshold=float("nan")), "metadata field 'score_threshold': expected null or a number in 0..1, "
                                             "got NaN"),
    (tampered(config={"task": "segmentation"}), "metadata field 'config': a segmentation config, the file's task "
                                                "is classification"),
    ([1, 2, 3], "metadata is a list, not a JSON object"),
    ("null", "metadata is null, not a JSON object"),
    ("{not json", "metadata metadata_props['visiontl'] is not JSON (Expecting property name enclosed in double "
                  "quotes: line 1 column 2 (char 1))"),
    ("[" * 100_000 + "]" * 100_000, "metadata metadata_props['visiontl'] is not JSON (nested too deeply)"),
    ('{"task": ' + "9" * 5000 + "}", "metadata metadata_props['visiontl'] is not JSON (Exceeds the limit (4300 "
                                     "digits) for integer string conversion"),
    (tampered(classes=["cat", "dog", "bird"]), "the metadata names 3 classes, the graph's output 'logits' has 2 "
                                               "([1, 2])"),
], ids=[
    "classes-null", "classes-empty", "classes-not-strings", "classes-twice", "config-missing", "config-null",
    "config-list", "task-a-list", "task-unknown", "input-shape-0", "input-size-0", "input-size-huge",
    "input-size-float", "input-size-not-shape", "input-size-null-but-fixed", "input-a-list", "batch-0",
    "outputs-missing", "epoch-a-string", "threshold-nan", "config-of-another-task", "metadata-a-list",
    "metadata-null", "not-json", "nested-100000-deep", "5000-digit-integer", "more-classes-than-outputs",
])
def test_predict_refuses_tampered_metadata_in_one_line(stored: object, message: str, tmp_path: Path, one_image: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    model = tiny_onnx(tmp_path / "model.onnx", stored if isinstance(stored, (str, dict)) else json.dumps(stored))
    code = main(["predict", str(model), str(one_image), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"visiontl: error: {model}: {message}") and not (tmp_path / "p.csv").exists()


def test_predict_checks_the_class_count_on_the_output_when_the_graph_leaves_it_free(
        tmp_path: Path, one_image: Path, capsys: pytest.CaptureFixture) -> None:
    free = {"input": {"name": "image", "shape": [1, 3, "height", "width"]}, "input_size": None}
    names = [f"column {i}" for i in range(32)]  # the pipeline resizes to data.image_size 32: 32 "classes"
    good = tiny_onnx(tmp_path / "good.onnx", tampered(**free, classes=names), free_classes=True)
    assert main(["predict", str(good), str(one_image), "--out", str(tmp_path / "p.csv")]) == 0  # names that fit
    assert read_csv(tmp_path / "p.csv")[1][1].startswith("column ")
    three = tiny_onnx(tmp_path / "three.onnx", tampered(**free, classes=["cat", "dog", "bird"]), free_classes=True)
    assert main(["predict", str(three), str(one_image), "--out", str(tmp_path / "q.csv")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"visiontl: error: {three}: the metadata names 3 classes, the model's output 'logits' has 32 ([1, 32])"]
    assert not (tmp_path / "q.csv").exists()


@pytest.mark.parametrize("label_map, message", [
    (None, "metadata field 'label_map.category_ids': expected 2 distinct integers, one per class, got null"),
    ({"category_ids": [1], "names": ["cat", "dog"]}, "'label_map.category_ids': expected 2 distinct integers"),
    ({"category_ids": [1, 1], "names": ["cat", "dog"]}, "'label_map.category_ids': expected 2 distinct integers"),
    ({"category_ids": [1, "2"], "names": ["cat", "dog"]}, "'label_map.category_ids': expected 2 distinct integers"),
    ({"category_ids": [1, 2], "names": ["dog", "cat"]}, "metadata field 'label_map.names': expected the class names "
                                                         "of 'classes', got [\"dog\", \"cat\"]"),
], ids=["null", "too-few", "twice", "a-string", "other-names"])
def test_a_detectors_label_map_is_checked(label_map: object, message: str) -> None:
    from visiontl.errors import CheckpointError
    from visiontl.export.metadata import check_metadata

    meta = tampered(task="detection", outputs={"boxes": "", "scores": "", "labels": ""}, input_size=None,
                    input={"shape": [1, 3, "height", "width"]})
    check_metadata({**meta, "label_map": {"category_ids": [3, 7], "names": ["cat", "dog"]}}, "det.onnx")  # fits
    with pytest.raises(CheckpointError) as err:
        check_metadata({**meta, "label_map": label_map}, "det.onnx")
    assert str(err.value).startswith("det.onnx: ") and message in str(err.value)


@pytest.mark.parametrize("names, message", [
    (("image", "logits", "probs"), "the graph has no output 'probabilities' (its outputs: logits, probs); a "
                                   "classification export has logits, probabilities"),
    (("pixels", "logits", "probabilities"), "the graph's inputs are ['pixels'] (shape [1, 3, 32, 32]); visiontl's "
                                            "exports take one input, image [N, 3, H, W]"),
], ids=["output-renamed", "input-renamed"])
def test_predict_refuses_a_graph_its_metadata_does_not_describe(names: tuple[str, ...], message: str, tmp_path: Path,
                                                                one_image: Path, capsys: pytest.CaptureFixture) -> None:
    model = tiny_onnx(tmp_path / "model.onnx", tiny_metadata(), names=names)
    assert main(["predict", str(model), str(one_image), "--out", str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"visiontl: error: {model}: {message}"]
