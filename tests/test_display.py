"""What a reader sees of a young model (issue 18, item 5): one display threshold for `predict --draw`, the
evaluation's confusion matrix and gallery and the report (serve: test_serve.py), a line when no detection
reaches it, whole-epoch curve axes, labelled console confusion matrices and overlays with a legend."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from conftest import run_main
from visiontl.loading import load_predictor
from visiontl.prediction_files import at_least, write_masks
from visiontl.predictions import SegmentationPrediction
from visiontl.report.plots import training_figure
from visiontl.report.runs import Run
from visiontl.report.tables import confusion_text
from visiontl.visualize import class_color, label_overlay

CLASSES = ["shape_0", "shape_5", "shape_17"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_draw_shows_only_detections_at_the_display_threshold(trained_detector: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    checkpoint, root = trained_detector
    image = root / "val" / "img_000.png"
    found = load_predictor(checkpoint).predict([image])[0]
    assert len(found) == 20  # model.score_threshold 0.0 keeps detections_per_image of them
    threshold = float(found.scores[len(found) // 2])  # about half the detections below it
    below = int((found.scores < threshold).sum())
    assert 0 < below < len(found)

    out, drawn = tmp_path / "pred.json", tmp_path / "drawn"
    code, printed, err = run_main(["predict", str(checkpoint), str(image), "--out", str(out), "--draw", str(drawn),
                                   "--display-threshold", repr(threshold)], capsys)
    assert code == 0, err
    assert f"pictures: the detections scoring at least {threshold:g}" in printed
    picture = pixels(drawn / "img_000.png")
    assert np.array_equal(picture, np.asarray(at_least(found, threshold).draw()))
    assert not np.array_equal(picture, np.asarray(found.draw()))  # the weaker ones are not drawn
    results = json.loads(out.read_text())
    assert len(results) == len(found) and sum(r["score"] < threshold for r in results) == below  # the file keeps all

    # without the flag: the checkpoint config's model.display_threshold
    code, printed, err = run_main(["predict", str(checkpoint), str(image), "--out", str(out), "--draw", str(drawn)],
                                  capsys)
    assert code == 0, err
    assert "pictures: the detections scoring at least 0.5 (model.display_threshold" in printed
    assert np.array_equal(pixels(drawn / "img_000.png"), np.asarray(at_least(found, 0.5).draw()))

    with pytest.raises(SystemExit) as refused:  # argparse's refusal: usage and one line
        run_main(["predict", str(checkpoint), str(image), "--out", str(out), "--display-threshold", "2"], capsys)
    assert refused.value.code == 2 and "--display-threshold: 2 is not between 0 and 1" in capsys.readouterr().err


def test_at_least_keeps_each_field_of_the_kept_detections(trained_detector: tuple[Path, Path]) -> None:
    checkpoint, root = trained_detector
    found = load_predictor(checkpoint).predict([root / "val" / "img_001.png"])[0]
    cut = float(found.scores[4])
    kept = at_least(found, cut)
    keep = found.scores >= cut
    assert len(kept) == int(keep.sum()) >= 5
    assert np.array_equal(kept.boxes, found.boxes[keep]) and np.array_equal(kept.scores, found.scores[keep])
    assert kept.labels == [n for n, k in zip(found.labels, keep) if k]
    assert np.array_equal(kept.category_ids, found.category_ids[keep]) and kept.source == found.source
    assert len(at_least(found, 1.0)) == 0 or float(found.scores[0]) == 1.0


def test_evaluate_prints_labelled_matrices_and_says_when_nothing_reaches_the_threshold(
        trained_detector: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, _ = trained_detector
    out = tmp_path / "eval_high"
    code, printed, err = run_main(["evaluate", str(checkpoint), "--out", str(out), "--display-threshold", "1"], capsys)
    assert code == 0, err
    with np.load(out / "eval_raw.npz") as raw:
        matrix, score, highest = raw["bbox_confusion"], float(raw["bbox_confusion_score"]), float(raw["max_detection_score"])
    assert score == 1.0 and 0 < highest < 1
    assert matrix[:, :3].sum() == 0 and matrix[:3, 3].sum() > 0  # every object missed, nothing detected
    line = f"No detection reaches the display threshold 1; the highest score is {highest:.3g}"
    assert line in printed
    lines = printed.splitlines()
    head = lines.index("detection confusion matrix (IoU >= 0.5, score >= 1; rows: true class, columns: predicted class):")
    assert lines[head + 1].split() == [*CLASSES, "background"]
    for i, name in enumerate([*CLASSES, "background"]):
        assert lines[head + 2 + i].split() == [name, *(str(v) for v in matrix[i])]
    for report in ("report.md", "report.html"):
        assert line in (out / report).read_text()

    out = tmp_path / "eval_low"
    code, printed, err = run_main(["evaluate", str(checkpoint), "--out", str(out), "--display-threshold", "0"], capsys)
    assert code == 0, err
    with np.load(out / "eval_raw.npz") as raw:
        assert float(raw["bbox_confusion_score"]) == 0.0 and raw["bbox_confusion"][:, :3].sum() > 0
    assert "No detection reaches" not in printed and "No detection reaches" not in (out / "report.md").read_text()
    assert "score >= 0;" in printed
    per_image = json.loads((out / "eval_images.json").read_text())
    assert "scoring at least 0," in per_image["metric"]


def test_console_confusion_matrix_labels_rows_and_columns() -> None:
    assert confusion_text([[5, 1, 0], [0, 3, 12], [1, 0, 0]], ["cat", "dog", "background"]) == [
        "                    cat        dog background",
        "  cat                 5          1          0",
        "  dog                 0          3         12",
        "  background          1          0          0",
    ]
    # names from files are escaped; a wide class list numbers its columns, each row saying its number
    assert confusion_text([[1, 2], [3, 4]], ["a\x1b[2J", "b"])[1].startswith("  a\\x1b[2J ")
    wide = confusion_text(np.eye(30, dtype=int) * 7, [f"class_with_a_long_name_{i}" for i in range(30)])
    assert wide[0].split() == [str(i) for i in range(1, 31)] and max(len(line) for line in wide) <= 120
    assert wide[1].split()[:2] == ["1", "class_with_a_lo…"] and wide[1].split()[2:5] == ["7", "0", "0"]
    assert confusion_text([[1]], ["only", "extra"]) == ["       0", "  0    1"]  # names that do not fit: indices


def log_run(tmp_path: Path, epochs: list[int]) -> Run:
    rows = [{"epoch": float(e), "phase": 1.0, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "lr/head": 0.01,
             "bbox/AP": 0.1 * e} for e in epochs]
    return Run(path=tmp_path, log_columns=list(rows[0]), log_rows=rows)


def test_one_epoch_curves_are_points_on_a_whole_epoch_axis(tmp_path: Path) -> None:
    fig = training_figure(log_run(tmp_path, [1]), ["bbox/AP"], ["lr/head"])
    try:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in axes] == ["loss per epoch", "learning rate per parameter group (log scale)",
                                                   "val bbox/AP"]
        for ax in axes:
            assert ax.get_xlim() == (0.0, 2.0) and list(ax.get_xticks()) == [1.0]
            for line in ax.get_lines():
                assert list(line.get_xdata()) == [1.0] and line.get_marker() == "o" and line.get_markersize() >= 6
    finally:
        plt.close(fig)

    fig = training_figure(log_run(tmp_path, [1, 2, 3, 4, 5, 6, 7]), ["bbox/AP"], ["lr/head"])
    try:
        for ax in (ax for ax in fig.axes if ax.get_visible()):
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks)
    finally:
        plt.close(fig)


def test_segmentation_overlay_has_a_legend_of_the_classes_present(tmp_path: Path) -> None:
    image = np.full((40, 60, 3), 128, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:50] = 2
    seg = SegmentationPrediction(mask, ["road", "car", "sky"], str(tmp_path / "street.png"), image, {0: 0.9, 2: 0.8})
    rows = write_masks([[seg]], tmp_path / "masks", overlay=True)
    picture = pixels(Path(rows[0]["overlay"]))
    assert picture.shape[1] == 60 and picture.shape[0] > 40  # the legend strip below the image
    assert np.array_equal(picture[:40], label_overlay(image, mask))
    legend = picture[40:]
    for cls, shown in ((0, True), (1, False), (2, True)):
        assert np.all(legend == class_color(cls), axis=-1).any() == shown
    assert np.array_equal(pixels(Path(rows[0]["mask"])), np.stack([mask] * 3, axis=-1))
