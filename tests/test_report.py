"""`visiontl report`: the single-run report from real tiny runs and from hand-made detection and segmentation
run directories, escaping, run comparison with seed groups, the CLI, and a headless-browser check that the
page renders offline and requests nothing."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import tiny_config
from visiontl.cli import main
from visiontl.config import build_config
from visiontl.data.synthetic import make_imagefolder
from visiontl.engine.trainer import train
from visiontl.report import read_run, write_comparison, write_report
from visiontl.report.compare import compare
from visiontl.report.plots import confusion_matrix, precision_recall_series

SCRIPT_CLASS = "<script>alert(1)</script>"
IMG_FILE = "<img src=x onerror=alert(1)>.jpg"
STAGED = {"strategy": "staged", "stages": [{"epochs": 1, "unfreeze": 0}, {"epochs": 1, "unfreeze": "all"}]}


# ----------------------------------------------------------------------------------------------------------
# Run directories


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real classification runs: two differing only in train.seed, one with another LR. Staged
    fine-tuning, so log.csv has two phases. A smaller image set than `synthetic_root`: a report needs runs,
    not good models, and three runs must stay fast on two CPU cores."""
    base = tmp_path_factory.mktemp("report_runs")
    synthetic_root = make_imagefolder(base / "data", classes=3, train_per_class=4, val_per_class=3, size=32)
    runs = {}
    for name, seed, lr in (("lr003_seed0", 0, 0.003), ("lr003_seed1", 1, 0.003), ("lr01_seed0", 0, 0.01)):
        # mobilenet_v3_small: the cheapest backbone on CPU, to keep three real runs fast.
        cfg = build_config(tiny_config(synthetic_root, base / name, model={"backbone": "mobilenet_v3_small"},
                                       train={"epochs": 2, "seed": seed, "lr": lr}, finetune=STAGED))
        train(cfg)
        runs[name] = base / name
    return runs


def write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def tiny_png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return buf.getvalue()


def synthetic_precision(classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools-shaped precision [T=10, R=101, K, A=4, M=3] and recall [T, K, A, M]: class k's precision
    falls linearly from 1 to (k+1)/10 at recall 1 and drops as the IoU threshold rises; the last class has no
    ground truth (-1 everywhere), as COCOeval reports it."""
    t, r, a, m = 10, 101, 4, 3
    precision = np.zeros((t, r, classes, a, m))
    recall = np.zeros((t, classes, a, m))
    for k in range(classes - 1):
        for i in range(t):
            precision[i, :, k] = (1.0 - np.linspace(0, 1, r) * (1 - (k + 1) / 10) - 0.05 * i)[:, None, None]
            recall[i, k] = 0.9 - 0.05 * i
    precision[:, :, classes - 1] = -1
    recall[:, classes - 1] = -1
    return precision, recall


@pytest.fixture
def detection_run(tmp_path: Path) -> Path:
    run = tmp_path / "det_run"
    (run / "gallery").mkdir(parents=True)
    cfg = build_config({"task": "detection", "model": {"backbone": "resnet18", "weights": "none"},
                        "data": {"root": "/data/<b>bold</b>"}, "run": {"dir": str(run)}})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_log(run / "log.csv", [
        {"epoch": e, "phase": p, "trainable_params": 1000, "lr/backbone.stage1": lr / 10, "lr/head": lr,
         "train_loss": loss, "val_loss": "", "bbox/AP": ap, "bbox/AP50": ap50, "seconds": 3.0, "img_per_s": ips}
        for e, p, lr, loss, ap, ap50, ips in ((1, 1, 0.01, 1.5, 0.1, 0.2, 40.0), (2, 1, 0.005, 1.1, 0.2, 0.35, 44.0),
                                              (3, 2, 0.001, 0.9, 0.3, 0.5, 36.0))])
    names = ["cat", SCRIPT_CLASS, "empty"]
    metrics = {f"bbox/{n}": v for n, v in zip(
        ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
        (0.3125, 0.5, 0.25, -1.0, 0.2, 0.4, 0.15, 0.3, 0.35, -1.0, 0.3, 0.45))}
    metrics.update({"bbox/AP/cat": 0.4321, "bbox/AP50/cat": 0.6543, f"bbox/AP/{SCRIPT_CLASS}": 0.1234,
                    f"bbox/AP50/{SCRIPT_CLASS}": 0.2345, "bbox/AP/empty": float("nan"), "bbox/AP50/empty": float("nan"),
                    "num_images": 4, "best": {"bbox/AP": 0.3125, "epoch": 3}, "raw": "eval_raw.npz"})
    (run / "metrics.json").write_text(json.dumps(metrics))
    precision, recall = synthetic_precision()
    np.savez_compressed(
        run / "eval_raw.npz", bbox_precision=precision, bbox_recall=recall,
        bbox_iou_thresholds=np.linspace(0.5, 0.95, 10), bbox_rec_thresholds=np.linspace(0, 1, 101),
        bbox_category_ids=np.array([1, 2, 3]), bbox_area_ranges=np.array([[0, 1e10], [0, 32**2], [32**2, 96**2], [96**2, 1e10]]),
        bbox_area_labels=np.array(["all", "small", "medium", "large"]), bbox_max_dets=np.array([1, 10, 100]),
        bbox_confusion=np.array([[5, 1, 0, 2], [0, 3, 0, 1], [0, 0, 0, 0], [2, 1, 0, 0]]),
        bbox_confusion_iou=np.array(0.5), bbox_confusion_score=np.array(0.3), class_names=np.array(names))
    (run / "eval_images.json").write_text(json.dumps({"metric": "AP50 of the image", "higher_is_better": True, "images": [
        {"file": IMG_FILE, "score": 0.125}, {"file": "good.jpg", "score": 0.875}]}))
    (run / "gallery" / "worst_1.png").write_bytes(tiny_png((200, 0, 0)))
    (run / "gallery" / "best_1.png").write_bytes(tiny_png((0, 200, 0)))
    (run / "gallery" / "index.json").write_text(json.dumps([
        {"png": "worst_1.png", "file": IMG_FILE, "score": 0.125, "kind": "worst"},
        {"png": "best_1.png", "file": "good.jpg", "score": 0.875, "kind": "best"}]))
    (run / "run.json").write_text(json.dumps({"command": "train", "task": "detection", "torch": "2.4.0",
                                              "device": "NVIDIA H100 80GB HBM3", "wall_seconds": 125.0}))
    return run


@pytest.fixture
def segmentation_run(tmp_path: Path) -> Path:
    """An older segmentation run: no run.json, no eval_images.json, no gallery."""
    run = tmp_path / "seg_run"
    run.mkdir()
    cfg = build_config({"task": "segmentation", "model": {"backbone": "resnet18", "weights": "none"},
                        "data": {"ignore_index": 11}, "run": {"dir": str(run)}})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_log(run / "log.csv", [{"epoch": e, "phase": 1, "trainable_params": 10, "lr/head": 0.01, "train_loss": 1 / e,
                                 "val_loss": 1.2 / e, "mIoU": 0.2 * e, "pixel_accuracy": 0.3 * e, "seconds": 1.0,
                                 "img_per_s": 10.0} for e in (1, 2)])
    metrics = {"mIoU": 0.4567, "mDice": 0.5678, "pixel_accuracy": 0.8765, "mean_accuracy": 0.6789, "num_pixels": 1000,
               "IoU/road": 0.9, "Dice/road": 0.95, "IoU/car": 0.0135, "Dice/car": 0.0266, "IoU/sky": float("nan"),
               "Dice/sky": float("nan"), "confusion_matrix": [[800, 10, 0], [20, 5, 0], [0, 0, 0]], "loss": 0.6,
               "best": {"mIoU": 0.4567, "epoch": 2}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


class SourceCollector(HTMLParser):
    """Every src and href of the page's elements (text that merely reads like an attribute is not one)."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.sources += [value or "" for name, value in attrs if name in ("src", "href", "srcset", "action")]


def parse_page(html: str) -> SourceCollector:
    parser = SourceCollector()
    parser.feed(html)
    parser.close()
    return parser


def assert_self_contained(html: str) -> None:
    assert "<script" not in html.lower()
    for needle in ("http://", "https://", 'src="//', "url("):
        assert needle not in html
    page = parse_page(html)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for source in page.sources:
        assert source.startswith(("data:image/png;base64,", "#")), source
    assert html.rstrip().endswith("</html>") and '<footer id="report-end">' in html
    assert html.index('<footer id="report-end">') > html.index("</main>")


def section_of(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start: html.index("</section>", start)]


# ----------------------------------------------------------------------------------------------------------
# Single-run reports


def test_report_of_a_real_classification_run(trained: dict[str, Path]) -> None:
    run = trained["lr003_seed0"]
    path = write_report(run)
    assert path == run / "report.html"
    html, md = path.read_text(), (run / "report.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert_self_contained(html)
    for key in ("accuracy", "macro_f1"):
        assert f"<td>{key}</td><td class=\"num\">{metrics[key]:.4f}</td>" in html
        assert f"| {key} | {metrics[key]:.4f} |" in md
    for c in ("class_0", "class_1", "class_2"):
        row = (f"| {c} | {metrics[f'precision/{c}']:.4f} | {metrics[f'recall/{c}']:.4f} | {metrics[f'f1/{c}']:.4f} | "
               f"{metrics[f'support/{c}']} |")
        assert row in md
        assert f"<td>{c}</td><td class=\"num\">{metrics[f'precision/{c}']:.4f}</td>" in html
    # Header: the monitor metric's final value and best epoch; staged fine-tuning described.
    best = metrics["best"]
    assert f"{best['accuracy']:.4f} at epoch {best['epoch']}" in html
    assert "staged: 1 epoch head only; then 1 epoch all stages" in html
    assert "classifier (linear head) on mobilenet_v3_small, random initialisation" in html
    # Sections in the promised order, each linked from the contents.
    order = ["metrics", "protocol", "curves", "task-plots", "examples", "environment"]
    positions = [html.index(f'<section id="{a}">') for a in order]
    assert positions == sorted(positions)
    for anchor in order:
        assert f'href="#{anchor}"' in html
    curves = section_of(html, "curves")
    assert "data:image/png;base64," in curves and "mark the fine-tuning phases" in curves  # two phases logged
    assert "confusion matrix" in section_of(html, "task-plots")
    assert "## Per-epoch log" in md and "| epoch | step | phase |" in md
    assert "## Evaluation protocol" in md and "## Environment" in md
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_detection_report_curves_confusion_gallery_and_protocol(detection_run: Path) -> None:
    html = write_report(detection_run).read_text()
    md = (detection_run / "report.md").read_text()
    assert_self_contained(html)
    metrics = section_of(html, "metrics")
    assert "<td>AP</td><td>AP at IoU 0.50:0.95, all areas, 100 detections</td><td class=\"num\">0.3125</td>" in metrics
    assert "<td>APs</td><td>AP, small objects</td><td class=\"num\">–</td>" in metrics  # pycocotools' -1
    assert "no ground truth in the val split" in metrics
    assert "<td>cat</td><td class=\"num\">0.4321</td><td class=\"num\">0.6543</td>" in metrics
    assert "<td>empty</td><td class=\"num\">–</td><td class=\"num\">–</td>" in metrics
    assert "| cat | 0.4321 | 0.6543 |" in md and "| APs | AP, small objects | – |" in md
    protocol = section_of(html, "protocol")
    for text in ("0.50:0.05:0.95 (10 thresholds)", "1 / 10 / 100", "small: area &lt; 1,024 px² (32²)",
                 "medium: 1,024 px² (32²) ≤ area &lt; 9,216 px² (96²)", "large: area ≥ 9,216 px² (96²)",
                 "crowd regions (iscrowd) are neither rewarded nor penalised", "shorter side resized to 800 px",
                 "longer side at most 1333 px", "IoU ≥ 0.5, detections scoring ≥ 0.3"):
        assert text in protocol, text
    plots = section_of(html, "task-plots")
    assert "Precision–recall per class (bbox)" in plots and "Detection confusion matrix" in plots
    assert plots.count("data:image/png;base64,") == 2
    examples = section_of(html, "examples")
    for png in ("worst_1.png", "best_1.png"):
        assert "data:image/png;base64," + base64.b64encode((detection_run / "gallery" / png).read_bytes()).decode() in examples
    assert "Worst val images" in examples and "Best val images" in examples
    assert "good.jpg — score 0.8750" in examples
    assert "2 val images scored by AP50 of the image (higher is better); mean 0.5000" in examples
    environment = section_of(html, "environment")
    assert "NVIDIA H100 80GB HBM3" in environment and "125.0 s (2 min 5 s)" in environment
    assert "<td>train img/s (mean over epochs, log.csv)</td><td>40.0</td>" in environment


def test_untrusted_strings_are_escaped(detection_run: Path) -> None:
    html = write_report(detection_run).read_text()
    md = (detection_run / "report.md").read_text()
    for raw, escaped in ((SCRIPT_CLASS, "&lt;script&gt;alert(1)&lt;/script&gt;"),
                         (IMG_FILE, "&lt;img src=x onerror=alert(1)&gt;.jpg"), ("<b>bold</b>", "&lt;b&gt;bold&lt;/b&gt;")):
        assert raw not in html
        assert escaped in html
    assert "<script" not in html.lower() and "onerror=alert(1)>" not in html
    # The Markdown twin keeps them text: `<` escaped so GitHub does not read HTML, `|` would end a cell.
    assert SCRIPT_CLASS not in md and "\\<script>alert(1)\\</script>" in md


def test_segmentation_report_bars_confusion_and_missing_files(segmentation_run: Path) -> None:
    html = write_report(segmentation_run).read_text()
    md = (segmentation_run / "report.md").read_text()
    assert_self_contained(html)
    for key, value in (("mIoU", "0.4567"), ("mDice", "0.5678"), ("pixel_accuracy", "0.8765"), ("mean_accuracy", "0.6789")):
        assert f"<td>{key}</td><td class=\"num\">{value}</td>" in html
        assert f"| {key} | {value} |" in md
    assert "| car | 0.0135 | 0.0266 |" in md and "| sky | – | – |" in md
    assert "the class is in neither the ground truth nor the prediction" in html
    plots = section_of(html, "task-plots")
    assert "IoU per class" in plots and "confusion matrix" in plots and plots.count("data:image/png;base64,") == 2
    protocol = section_of(html, "protocol")
    assert "pixels labelled 11 (data.ignore_index) are neither scored nor counted" in protocol
    assert "(1,000 pixels)" in protocol
    assert "This run has no gallery" in section_of(html, "examples")
    header = html[: html.index("<nav>")]
    assert "Not in this run directory: run.json, eval_images.json, gallery/index.json." in header
    assert "eval_raw.npz" not in header  # segmentation has no arrays to miss


def test_metrics_only_folder_and_not_a_run(detection_run: Path, tmp_path: Path) -> None:
    (detection_run / "log.csv").unlink()
    out = tmp_path / "elsewhere" / "det.html"
    assert write_report(detection_run, out) == out
    assert (tmp_path / "elsewhere" / "det.md").is_file()
    assert "log.csv is not in this run directory" in out.read_text()
    from visiontl.errors import DataError

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither metrics.json nor log.csv"):
        read_run(tmp_path / "empty")


def test_older_eval_raw_without_iou_type_prefix(detection_run: Path) -> None:
    """Runs written before the bbox_ prefix stored the box arrays unprefixed; they still get their curves."""
    with np.load(detection_run / "eval_raw.npz") as data:
        arrays = {k.removeprefix("bbox_") if not k.startswith("bbox_confusion") else k: data[k] for k in data.files}
    np.savez_compressed(detection_run / "eval_raw.npz", **arrays)
    assert "precision" in arrays and "bbox_precision" not in arrays
    html = write_report(detection_run).read_text()
    assert "Precision–recall per class (bbox)" in html
    assert "<th>thresholds read from</th><td>eval_raw.npz</td>" in html


def test_precision_recall_series_skips_classes_without_ground_truth() -> None:
    precision, _ = synthetic_precision()
    at50, mean = precision_recall_series(precision, np.linspace(0, 1, 101), np.linspace(0.5, 0.95, 10), 0)
    assert at50[1] == "AP50" and mean[1] == "AP"
    assert sorted(at50[2]) == [0, 1]  # class 2 is all -1
    recall, prec, ap = at50[2][0]
    assert prec[0] == pytest.approx(1.0) and prec[-1] == pytest.approx(0.1) and ap == pytest.approx(0.55)
    # Averaged over IoU 0.50:0.95: precision drops 0.05 per threshold, so 0.225 below the IoU-0.50 curve.
    assert mean[2][1][2] == pytest.approx(float(precision[:, :, 1, 0, -1].mean()))
    assert mean[2][0][2] == pytest.approx(0.55 - 0.225)


def test_confusion_matrix_with_many_classes_stays_bounded() -> None:
    # A `$` in a class name would start matplotlib math text (and an unbalanced one fails to render).
    names = ["$unbalanced", "$x^2$"] + [f"class_{i}_with_a_long_name" for i in range(58)]
    uri = confusion_matrix(np.eye(60, dtype=int) * 3, names, "many")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.width <= 1700 and image.height <= 1500


# ----------------------------------------------------------------------------------------------------------
# Comparison


def test_comparison_groups_seeds_and_names_what_differs(trained: dict[str, Path], tmp_path: Path) -> None:
    dirs = [trained["lr003_seed0"], trained["lr01_seed0"], trained["lr003_seed1"]]
    comparison = compare([read_run(d) for d in dirs])
    assert [g.run_labels for g in comparison.groups] == [["lr003_seed0", "lr003_seed1"], ["lr01_seed0"]]
    assert [k for k, _ in comparison.differing] == ["train.lr"]
    assert comparison.differing[0][1] == ["0.003", "0.01"]

    out = write_comparison(dirs, tmp_path / "cmp" / "compare.html")
    html, md = out.read_text(), (tmp_path / "cmp" / "compare.md").read_text()
    assert_self_contained(html)
    acc = {name: json.loads((trained[name] / "metrics.json").read_text())["accuracy"] for name in trained}
    pair = [acc["lr003_seed0"], acc["lr003_seed1"]]
    mean, sd = statistics.fmean(pair), statistics.stdev(pair)
    assert sd == pytest.approx(abs(pair[0] - pair[1]) / 2**0.5)
    metrics = section_of(html, "metrics")
    expected_cells = (f"<td>accuracy</td><td class=\"num\">{mean:.4f} ± {sd:.4f}<span class=\"detail\">"
                      f"[{min(pair):.4f}, {max(pair):.4f}], n=2</span></td><td class=\"num\">{acc['lr01_seed0']:.4f}</td>")
    assert expected_cells in metrics
    delta = acc["lr01_seed0"] - mean
    marked = abs(delta) > sd
    assert f"{delta:+.4f}" + (" ✱" if marked else "") + "</td>" in metrics
    assert "|Δ| &gt; sd₁ + sd₂" in metrics  # the rule is stated
    assert f"| accuracy | {mean:.4f} ± {sd:.4f} [{min(pair):.4f}, {max(pair):.4f}], n=2 | {acc['lr01_seed0']:.4f} |" in md
    assert "num_samples" not in metrics and "support/class_0" not in metrics  # counts, not metrics
    differs = section_of(html, "differs")
    assert "<td>train.lr</td><td>0.003</td><td>0.01</td>" in differs and "<td>train.seed</td>" not in differs
    assert "| train.lr | 0.003 | 0.01 |" in md
    assert "data:image/png;base64," in section_of(html, "curves")


def test_comparison_of_evaluation_folders_flags_different_val_sets(segmentation_run: Path, tmp_path: Path) -> None:
    """Runs without config.yaml are groups of their own; runs scored on different val sets are flagged."""
    other = tmp_path / "other_eval"
    other.mkdir()
    metrics = json.loads((segmentation_run / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "mIoU": 0.5, "num_pixels": 2000}))
    (segmentation_run / "config.yaml").unlink()
    out = write_comparison([segmentation_run, other], tmp_path / "c.html")
    html = out.read_text()
    assert_self_contained(html)
    assert "num_pixels differs between the runs (seg_run: 1000, other_eval: 2000)" in html
    assert "<td>mIoU</td><td class=\"num\">0.4567</td><td class=\"num\">0.5000</td><td class=\"num\">+0.0433</td>" in html
    assert "Comparison of 2 runs in 2 groups" in html


# ----------------------------------------------------------------------------------------------------------
# CLI


def test_cli_report_one_run_many_runs_and_not_a_run(trained: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "copied_run"
    shutil.copytree(trained["lr003_seed1"], run, ignore=shutil.ignore_patterns("checkpoints", "report.*"))
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert str(run / "report.html") in capsys.readouterr().out

    monkeypatch.chdir(tmp_path)
    assert main(["report", str(trained["lr003_seed0"]), str(run)]) == 0
    assert (tmp_path / "compare.html").is_file() and (tmp_path / "compare.md").is_file()

    (tmp_path / "not_a_run").mkdir()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "not_a_run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a run directory" in err
    assert main(["report", str(run), "--out", str(tmp_path / "x.md")]) == 2


# ----------------------------------------------------------------------------------------------------------
# A real browser: the page renders offline and asks for nothing


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI containers run as root; the background-networking flags keep the browser's own update
    # and sign-in traffic down (what remains is told apart from the page's requests below).
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-default-apps", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def page_request_urls(netlog_path: Path) -> list[str]:
    """URLs the page asked for: URL requests whose initiator is an origin (the page's own, `null` for file:)
    or that were made in the page's network partition. The browser's background requests (time sync,
    sign-in, updates) have no origin and a partition of their own."""
    text = netlog_path.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a browser killed mid-write leaves the events list open
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    types = {name: number for name, number in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event.get("type") != types["URL_REQUEST_START_JOB"] or "url" not in params:
            continue
        from_page = params.get("initiator") != "not an origin" or "file://" in params.get("network_isolation_key", "")
        if from_page:
            urls.append(params["url"])
    return urls


def test_report_in_headless_chromium_renders_offline(trained: dict[str, Path], tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH (.ci/run installs Debian's chromium "
                    "when run as root)")
    report = write_report(trained["lr003_seed0"], tmp_path / "report.html")
    done = run_browser(browser, tmp_path / "profile1", "--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'id="report-end"' in done.stdout and "Training curves" in done.stdout

    netlog, shot = tmp_path / "netlog.json", tmp_path / "shot.png"
    done = run_browser(browser, tmp_path / "profile2", f"--log-net-log={netlog}", f"--screenshot={shot}",
                       "--window-size=1280,4000", "--hide-scrollbars", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    urls = page_request_urls(netlog)
    assert all(u.startswith(("file:", "data:", "about:", "chrome:")) for u in urls), urls
    assert shot.stat().st_size > 50_000  # a rendered page with figures, not a blank one
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        assert len(np.unique(np.asarray(image.convert("L")))) > 20  # text, tables and plots, not one flat colour

    # The check can see a request: the same browser, flags and parsing flag a page that loads a remote image.
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    run_browser(browser, tmp_path / "profile3", f"--log-net-log={tmp_path / 'control.json'}", "--dump-dom",
                control.as_uri())
    assert "http://127.0.0.1:9/x.png" in page_request_urls(tmp_path / "control.json")
