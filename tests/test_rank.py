"""Active learning: the scoring rules on hand-made outputs (exact values and order), k-center greedy on
hand-made points, and `visiontl data rank` end to end on a tiny classifier and a tiny detector: the list,
its order, determinism, and the Label Studio / CVAT task files read back."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from test_segmentation import seg_config
from visiontl.active import (Ranked, classification_reason, detection_entropy, detection_reason, detection_uncertainty,
                             entropy, k_center_greedy, least_confidence, rank_images, segmentation_reason, write_list)
from visiontl.cli import main
from visiontl.config import build_config
from visiontl.data.augment import classification_transform
from visiontl.data.detection import unit_tensor
from visiontl.data.formats.cvat import read_cvat
from visiontl.data.formats.labelstudio import read_labelstudio
from visiontl.data.images import read_image
from visiontl.data.segmentation import segmentation_transform
from visiontl.data.synthetic import make_detection_coco, make_imagefolder, make_segmentation_folders
from visiontl.engine.inference import LoadedModel, image_files, load_trained
from visiontl.engine.trainer import train
from visiontl.errors import DataError
from visiontl.predictor import checkpoint_predictor

PROBS = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]])


def test_least_confidence_and_entropy_of_class_probabilities() -> None:
    assert least_confidence(PROBS) == pytest.approx([0.5, 0.0, 2 / 3, 0.3], abs=1e-12)
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    h4 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert entropy(PROBS) == pytest.approx([h, 0.0, math.log(3), h4], abs=1e-12)  # 0 ln 0 = 0
    # both rank the uniform prediction first and the one-hot last
    assert list(np.argsort(-least_confidence(PROBS), kind="stable")) == [2, 0, 3, 1]
    assert list(np.argsort(-entropy(PROBS), kind="stable")) == [2, 0, 3, 1]
    classes = ["RBC", "WBC", "Platelets"]
    assert classification_reason("uncertainty", PROBS[0], classes) == "least confidence 0.50 (top: RBC 0.50, WBC 0.30)"
    assert classification_reason("entropy", PROBS[0], classes) == f"entropy {h:.2f} nats (top: RBC 0.50, WBC 0.30)"


def test_detection_rules_and_the_empty_image_rule() -> None:
    assert detection_uncertainty([0.5]) == 1.0
    assert detection_uncertainty([0.9, 0.1]) == pytest.approx(0.2, abs=1e-12)
    assert detection_uncertainty([0.75, 0.25, 0.04]) == pytest.approx(0.5, abs=1e-12)  # 0.04 is under the floor
    assert detection_uncertainty([0.99, 0.8]) == pytest.approx((0.02 + 0.4) / 2, abs=1e-12)
    # nothing found (no detection, or none at the floor): the maximum
    assert detection_uncertainty([]) == 1.0 and detection_uncertainty([0.049, 0.01]) == 1.0
    assert detection_uncertainty([0.05]) == pytest.approx(0.1, abs=1e-12)  # the floor itself counts

    def h(s: float) -> float:
        return -(s * math.log(s) + (1 - s) * math.log(1 - s))

    assert detection_entropy([0.5]) == pytest.approx(math.log(2), abs=1e-12)
    assert detection_entropy([0.9, 0.1]) == pytest.approx(h(0.9), abs=1e-12)
    assert detection_entropy([0.9, 0.6, 0.01]) == pytest.approx((h(0.9) + h(0.6)) / 2, abs=1e-12)
    assert detection_entropy([]) == pytest.approx(math.log(2), abs=1e-12)
    images = {"sure": [0.99, 0.98], "mixed": [0.9, 0.45, 0.6], "empty": [], "one_sure_one_not": [0.95, 0.5]}
    order = sorted(images, key=lambda k: -detection_uncertainty(images[k]))
    assert order == ["empty", "mixed", "one_sure_one_not", "sure"]  # 1, (0.2 + 0.9 + 0.8) / 3, (0.1 + 1) / 2, 0.03
    assert sorted(images, key=lambda k: -detection_entropy(images[k])) == order

    names = ["WBC", "RBC", "RBC", "Platelets"]
    assert detection_reason("uncertainty", [0.9, 0.45, 0.6, 0.02], names) == \
        "2 of 3 detection(s) between 0.3 and 0.7 confidence; mean margin 0.37"  # (0.8 + 0.1 + 0.2) / 3
    assert detection_reason("entropy", [0.9, 0.45, 0.6, 0.02], names) == \
        f"mean binary entropy {(h(0.9) + h(0.45) + h(0.6)) / 3:.2f} nats over 3 detection(s) (most uncertain: RBC 0.45)"
    assert detection_reason("uncertainty", [0.01], ["RBC"]) == "no detection scoring 0.05 or more: nothing found"


def test_segmentation_rules_per_pixel() -> None:
    probs = np.array([[[0.5, 0.9], [0.2, 1.0]],
                      [[0.5, 0.1], [0.3, 0.0]],
                      [[0.0, 0.0], [0.5, 0.0]]])  # 3 classes x 2 x 2 pixels
    assert float(np.mean(least_confidence(probs, axis=0))) == pytest.approx((0.5 + 0.1 + 0.5 + 0.0) / 4, abs=1e-12)
    pixel = [math.log(2), -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)),
             -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5)), 0.0]
    assert float(np.mean(entropy(probs, axis=0))) == pytest.approx(sum(pixel) / 4, abs=1e-12)
    assert segmentation_reason("uncertainty", probs) == "mean pixel uncertainty 0.28; 0% of pixels under 0.5 confidence"
    low = np.array([[[0.4]], [[0.35]], [[0.25]]])
    assert segmentation_reason("entropy", low) == \
        f"mean pixel entropy {entropy(low, axis=0)[0, 0]:.2f} nats (at most 1.10); 100% of pixels under 0.5 confidence"


def test_k_center_greedy_picks_the_farthest_points_in_order() -> None:
    points = np.array([[1.0, 0.0], [10.0, 0.0], [0.0, 6.0], [9.0, 1.0]])  # A, B, C, D
    picks = k_center_greedy(points, 4, seeds=np.array([[0.0, 0.0]]))
    assert [p[0] for p in picks] == [1, 2, 3, 0]  # B (10 from the seed), C (6), D (sqrt 2 from B), A (1)
    assert [p[1] for p in picks] == pytest.approx([10.0, 6.0, math.sqrt(2), 1.0], abs=1e-12)
    assert [p[2] for p in picks] == [0, 0, 1, 0]  # seed 0, seed 0, the first pick (1 + 0), seed 0

    # no seeds: the first pick is the farthest from the mean (5, 1.75), then farthest from the picks only
    picks = k_center_greedy(points, 10)
    assert [p[0] for p in picks] == [2, 1, 0, 3]
    assert [p[1] for p in picks] == pytest.approx([math.hypot(5, 4.25), math.hypot(10, 6), math.hypot(1, 6),
                                                   math.sqrt(2)], abs=1e-12)
    assert [p[2] for p in picks] == [-1, 0, 0, 1]
    # ties go to the lowest row; a duplicate of a pick comes last, at distance 0
    twins = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    picks = k_center_greedy(twins, 4, seeds=np.array([[0.0, 0.0]]))
    assert [p[0] for p in picks] == [0, 1, 3, 2] and picks[-1][1] == 0.0


def predictor(loaded: LoadedModel) -> object:
    """The Predictor rank_images takes, around a loaded checkpoint."""
    return checkpoint_predictor(loaded, "checkpoint.pt")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, LoadedModel]:
    """A resnet18 classifier trained one epoch at 32 px, its labelled images, an unlabelled pool of 9 other
    images (one of them twice), and the checkpoint loaded."""
    root = make_imagefolder(tmp_path_factory.mktemp("cls"), classes=3, train_per_class=4, val_per_class=1, size=32)
    run = tmp_path_factory.mktemp("cls_run")
    train(build_config(tiny_config(root, run, train={"epochs": 1})))
    pool = make_imagefolder(tmp_path_factory.mktemp("pool"), classes=3, train_per_class=3, val_per_class=0, size=32,
                            seed=1) / "train"
    # the same picture under two names: equal scores, so the name that sorts first must come first
    shutil.copy(pool / "class_1" / "train_1_000.png", pool / "class_1" / "copy.png")
    ckpt = run / "checkpoints" / "last.pt"
    return ckpt, pool, root / "train", load_trained(ckpt)


def _rank(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["data", "rank", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _read_list(path: Path) -> list[tuple[str, float, str]]:
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert all(len(r) == 3 for r in rows)
    return [(f, float(s), reason) for f, s, reason in rows]


def test_rank_classifier_cli_writes_sorted_deterministic_list_and_task_files(
        classifier: tuple[Path, Path, Path, LoadedModel], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt, pool, labelled, loaded = classifier
    files = image_files([pool])
    out = tmp_path / "uncertainty.txt"
    code, printed, err = _rank(capsys, ckpt, pool, "--strategy", "uncertainty", "--top", 6, "--out", out)
    assert code == 0, err
    write_list(rank_images(predictor(loaded), files, "uncertainty", 6, progress=False), tmp_path / "again.txt")
    assert out.read_bytes() == (tmp_path / "again.txt").read_bytes()  # a second run: the same bytes
    rows = _read_list(out)
    assert len(rows) == 6 and len({r[0] for r in rows}) == 6 and {Path(r[0]) for r in rows} <= set(files)
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    assert all(r[2].startswith("least confidence ") and "(top: class_" in r[2] for r in rows)
    assert f"   1  {rows[0][1]:.4f}  {rows[0][0]}  {rows[0][2]}" in printed  # the top, with its reason

    # the whole pool: each score is 1 - max of the model's own probabilities; twins tied, in name order
    ranked = rank_images(predictor(loaded), files, "uncertainty", 100, progress=False)
    assert len(ranked) == len(files)
    assert [(-r.score, str(r.file)) for r in ranked] == sorted((-r.score, str(r.file)) for r in ranked)
    transform = classification_transform("none", 32, loaded.backbone.mean, loaded.backbone.std, train=False)
    probs = loaded.task.predict(loaded.model, torch.stack([transform(image=read_image(f))["image"] for f in files]))
    expected = {f: 1.0 - float(p.max()) for f, p in zip(files, probs.double())}
    assert all(r.score == pytest.approx(expected[r.file], abs=1e-6) for r in ranked)
    positions = [i for i, r in enumerate(ranked) if r.file.name in ("copy.png", "train_1_000.png")]
    assert positions[1] == positions[0] + 1 and ranked[positions[0]].file.name == "copy.png"
    assert ranked[positions[0]].score == ranked[positions[1]].score

    # Label Studio: a task list of the K picks, data only (no annotation, so Label Studio imports them unlabelled)
    tasks = tmp_path / "tasks.json"
    code, printed, err = _rank(capsys, ckpt, pool, "--strategy", "entropy", "--top", 5, "--out", tmp_path / "l.txt",
                               "--as", "labelstudio", "--tasks", tasks)
    assert code == 0, err
    rows = _read_list(tmp_path / "l.txt")
    assert len(rows) == 5 and [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    assert all(r[2].startswith("entropy ") and " nats (top: class_" in r[2] for r in rows)
    picked = [Path(r[0]) for r in rows]
    data = json.loads(tasks.read_text())
    assert data == [{"data": {"image": f"/data/local-files/?d={f.relative_to(pool).as_posix()}"}} for f in picked]
    unlabelled = read_labelstudio(tasks, image_root=pool)
    assert unlabelled.images == []
    assert "5 task(s) not read (no annotation nor prediction)" in unlabelled.report.dropped[0]
    for task in data:  # what Label Studio exports once someone has labelled them (nothing drawn yet)
        task["annotations"] = [{"result": []}]
    tasks.write_text(json.dumps(data))
    back = read_labelstudio(tasks, image_root=pool)
    assert [im.file_name for im in back.images] == [f.relative_to(pool).as_posix() for f in picked]
    assert all((im.width, im.height) == (32, 32) for im in back.images) and back.instances == []

    # CVAT: the K picks in rank order, no shapes, the model's classes as labels
    xml = tmp_path / "task.xml"
    code, printed, err = _rank(capsys, ckpt, pool, "--strategy", "diversity", "--top", 4, "--out", tmp_path / "d.txt",
                               "--labelled", labelled, "--as", "cvat", "--tasks", xml)
    assert code == 0, err
    rows = _read_list(tmp_path / "d.txt")
    assert len(rows) == 4 and all(r[2].startswith("farthest from ") for r in rows)
    assert "farthest from the labelled pool: distance" in rows[0][2]
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)  # k-center distances never grow
    back = read_cvat(xml, image_root=pool)
    assert [im.file_name for im in back.images] == [Path(r[0]).relative_to(pool).as_posix() for r in rows]
    assert back.instances == [] and [c.name for c in back.categories] == ["class_0", "class_1", "class_2"]
    again = rank_images(predictor(loaded), files, "diversity", 4, labelled=image_files([labelled]), progress=False)
    assert [(str(r.file), f"{r.score:.6f}", r.reason) for r in again] == [(f, f"{sc:.6f}", w) for f, sc, w in rows]


def test_rank_refuses_bad_requests_in_one_line(classifier: tuple[Path, Path, Path, LoadedModel], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    ckpt, pool, labelled, loaded = classifier
    code, _, err = _rank(capsys, ckpt, pool, "--top", 3, "--out", tmp_path / "x.txt", "--as", "cvat")
    assert code == 2 and err == "visiontl: error: --as and --tasks go together: --as labelstudio|cvat --tasks FILE\n"
    assert not (tmp_path / "x.txt").exists()
    with pytest.raises(DataError, match="^a labelled pool is used by the diversity strategy only, not by uncertainty$"):
        rank_images(predictor(loaded), image_files([pool]), "uncertainty", 3, labelled=image_files([labelled]))
    with pytest.raises(DataError, match="rank at least 1 image"):
        rank_images(predictor(loaded), image_files([pool]), "entropy", 0)
    with pytest.raises(DataError, match="every one is in the labelled pool"):
        rank_images(predictor(loaded), image_files([pool]), "diversity", 3, labelled=image_files([pool]))


@pytest.fixture(scope="module")
def detector(trained_detector: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The session's Faster R-CNN (conftest: mobilenet_v2, 72-96 px, one epoch); an unlabelled pool of 4 images."""
    pool = tmp_path_factory.mktemp("shapes")
    make_detection_coco(pool, images=4, split="pool", seed=2)
    return trained_detector[0], pool / "pool"


def test_rank_detector_cli_and_the_nothing_found_rule(detector: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    ckpt, pool = detector
    out = tmp_path / "uncertainty.txt"
    code, _, err = _rank(capsys, ckpt, pool, "--strategy", "uncertainty", "--top", 3, "--out", out, "--batch-size", 2,
                         "--as", "cvat", "--tasks", tmp_path / "task.xml")
    assert code == 0, err
    rows = _read_list(out)
    assert len(rows) == 3 and [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    assert all(" detection(s) between 0.3 and 0.7 confidence; mean margin " in r[2] or "nothing found" in r[2]
               for r in rows)
    back = read_cvat(tmp_path / "task.xml", image_root=pool)
    assert [im.file_name for im in back.images] == [Path(r[0]).name for r in rows] and back.instances == []
    assert [c.name for c in back.categories] == ["shape_0", "shape_5", "shape_17"]

    # each score is the rule applied to what the detector returns for the image
    loaded = load_trained(ckpt)
    files = image_files([pool])
    outputs = loaded.task.detect(loaded.model, [unit_tensor(read_image(f)) for f in files], torch.device("cpu"),
                                 contextlib.nullcontext())
    for strategy, rule in (("uncertainty", detection_uncertainty), ("entropy", detection_entropy)):
        ranked = rank_images(predictor(loaded), files, strategy, 10, progress=False)
        expected = {f: rule(out["scores"].double().numpy()) for f, out in zip(files, outputs)}
        assert [(-r.score, str(r.file)) for r in ranked] == sorted((-r.score, str(r.file)) for r in ranked)
        assert all(r.score == pytest.approx(expected[r.file], abs=1e-6) for r in ranked) and len(ranked) == len(files)
    write_list(rank_images(predictor(loaded), files, "uncertainty", 3, progress=False), tmp_path / "again.txt")
    assert (tmp_path / "again.txt").read_bytes() == out.read_bytes()  # a second run: the same bytes

    # a detector that finds nothing: every image scores 1 (the maximum) and they come in file-name order
    loaded.model.roi_heads.score_thresh = 1.01
    ranked = rank_images(predictor(loaded), list(reversed(files)), "uncertainty", 10, progress=False)
    assert ranked == [Ranked(f, 1.0, "no detection scoring 0.05 or more: nothing found") for f in sorted(files)]



def test_rank_segmenter_per_pixel_scores_and_diversity(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Semantic segmentation: each score is the per-pixel rule averaged over the image, images of two sizes."""
    root = make_segmentation_folders(tmp_path_factory.mktemp("seg"), train=3, val=1)
    run = tmp_path_factory.mktemp("seg_run")
    train(build_config(seg_config(root, run, train={"epochs": 1}, data={"augment": "none"})))
    loaded = load_trained(run / "checkpoints" / "last.pt")
    pool = make_segmentation_folders(tmp_path_factory.mktemp("seg_pool"), train=3, val=0, seed=1) / "images" / "train"
    Image.open(pool / "train_000.jpg").resize((40, 30)).save(pool / "small.png")  # another size: its own batch
    files = image_files([pool])
    transform = segmentation_transform("none", None, loaded.backbone.mean, loaded.backbone.std, 255, False, False)
    with torch.no_grad():
        probs = {f: loaded.model(transform(image=read_image(f))["image"][None]).softmax(1)[0].double().numpy()
                 for f in files}
    for strategy, rule, words in (("uncertainty", least_confidence, "mean pixel uncertainty {:.2f}; "),
                                  ("entropy", entropy, "mean pixel entropy {:.2f} nats (at most 1.10); ")):
        ranked = rank_images(predictor(loaded), files, strategy, 10, progress=False)
        assert [(-r.score, str(r.file)) for r in ranked] == sorted((-r.score, str(r.file)) for r in ranked)
        assert len(ranked) == len(files)
        for r in ranked:
            assert r.score == pytest.approx(float(np.mean(rule(probs[r.file], axis=0))), abs=1e-5)
            assert r.reason.startswith(words.format(r.score)) and r.reason.endswith("% of pixels under 0.5 confidence")
    ranked = rank_images(predictor(loaded), files, "diversity", 3, progress=False)
    assert len(ranked) == 3 and ranked[0].reason.startswith("farthest from the pool's mean feature: distance ")
    assert all(r.reason.startswith("farthest from the chosen images: distance ") for r in ranked[1:])
