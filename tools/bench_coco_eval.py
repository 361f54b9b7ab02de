"""COCO bbox scoring speed and exactness on a COCO-sized synthetic set: pycocotools, `visiontl score` with
each engine (hotcoco, numpy), and optionally faster-coco-eval and hotcoco called directly.

    python tools/bench_coco_eval.py [--images 5000] [--seed 0] [--workdir DIR] [--repeats 3]
        [--options-path /tmp/cocoopts] [--skip-pycocotools PREVIOUS.json] [--out FILE.json]

Writes a deterministic (from --seed) ground truth and results pair, gt.json / results.json, into --workdir
(default: a new temporary folder, kept): COCO's 80 category ids with their gaps, sparse image ids, about 7
boxes per image (some images empty, a few crowded scenes with 50+ of one class), ~1% crowd regions, a COCO
mix of small / medium / large areas, polygons on some boxes; about 40 detections per image (jittered true
positives over a wide IoU spread, duplicates, wrong classes, random false positives everywhere, scores with
many ties, some images with 100+ detections of one class), in shuffled order.

Every library scorer runs in its own fresh process (so imports and memory do not mix; the process writes its
timings and `stats` as JSON): load = COCO(gt) + loadRes(results) from the files, then evaluate(),
accumulate() and summarize() timed separately (the COCOeval construction counts in evaluate). `visiontl
score` is timed as a whole subprocess (interpreter start, imports, reading, scoring, writing), best of
--repeats. The reference for the ratio is pycocotools' evaluate+accumulate+summarize; each scorer's
12 summary numbers are compared with pycocotools' `stats`. The id-0 check scores, with every scorer, one
image with one box whose annotation id is 0 and one perfect detection of it: the right AP is 1.0
(pycocotools gives 0.0: it marks a match with the annotation id, and id 0 reads as "unmatched").

--options-path DIR adds faster-coco-eval (COCO, COCOeval_faster) and hotcoco (COCO, COCOeval), imported
from DIR (e.g. `pip install --target DIR faster-coco-eval hotcoco`). --skip-pycocotools FILE reuses the
pycocotools row (times and stats) of an earlier --out file made from the same files (checked by sha256).
Prints a markdown table and writes it, with the rows, the machine and the command line, to --out (default
bench_coco_eval.json in the workdir).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# COCO's 80 category ids, gaps included (12, 26, 29, 30, 45, 66, 68, 69, 71 and 83 are unused)
COCO_CAT_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
                *range(84, 91)]
LIBRARIES = ("pycocotools", "faster-coco-eval", "hotcoco")
API = {"pycocotools": "pycocotools.coco.COCO(gt); .loadRes(results); pycocotools.cocoeval.COCOeval(gt, dt, 'bbox')",
       "faster-coco-eval": "faster_coco_eval.COCO(gt); .loadRes(results); "
                           "faster_coco_eval.COCOeval_faster(gt, dt, iouType='bbox')",
       "hotcoco": "hotcoco.COCO(gt); .load_res(results); hotcoco.COCOeval(gt, dt, 'bbox')"}


# --------------------------------------------------------------------------------------------- data


def _box(rng, width: int, height: int, side_range: tuple[float, float] | None = None) -> list[float]:
    """A random box inside the image: a COCO-like area class (41% small, 34% medium, 25% large) unless
    side_range (sqrt of the area) is given, aspect ratio 1:3 to 3:1; coordinates rounded to 2 decimals."""
    if side_range is None:
        kind = rng.choice(3, p=[0.41, 0.34, 0.25])
        side_range = [(3.0, 32.0), (32.0, 96.0), (96.0, 0.95 * min(width, height))][kind]
    side = rng.uniform(*side_range)
    ratio = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))
    w = min(side * math.sqrt(ratio), width - 1.0)
    h = min(side / math.sqrt(ratio), height - 1.0)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def _iou(a: list[float], b: list[float]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _jitter(rng, box: list[float], sigma: float, width: int, height: int) -> list[float]:
    """The box moved and rescaled by noise of relative size sigma, clipped to the image (at least 1 px)."""
    x, y, w, h = box
    cx = x + w / 2 + rng.normal() * sigma * w
    cy = y + h / 2 + rng.normal() * sigma * h
    w2 = w * math.exp(rng.normal() * sigma)
    h2 = h * math.exp(rng.normal() * sigma)
    x1, y1 = max(cx - w2 / 2, 0.0), max(cy - h2 / 2, 0.0)
    x2, y2 = min(cx + w2 / 2, width), min(cy + h2 / 2, height)
    if x2 - x1 < 1:
        x1, x2 = min(x1, width - 1.0), min(x1, width - 1.0) + 1.0
    if y2 - y1 < 1:
        y1, y2 = min(y1, height - 1.0), min(y1, height - 1.0) + 1.0
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def _score(rng, value: float) -> float:
    """Clipped to (0, 1); half rounded to 2 decimals (many ties), the rest to 5."""
    value = min(max(value, 0.001), 0.999)
    return round(value, 2) if rng.random() < 0.5 else round(value, 5)


def generate(n_images: int, seed: int) -> tuple[dict, list[dict], dict]:
    """(ground truth dict, results list, summary) — deterministic from seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_cats = len(COCO_CAT_IDS)
    cat_p = 1.0 / (np.arange(n_cats) + 2.0) ** 0.9  # skewed like COCO: the first id ("person") most frequent
    cat_p /= cat_p.sum()
    image_ids = sorted(int(i) for i in rng.choice(np.arange(1, 600_000), n_images, replace=False))
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": int(rng.integers(480, 641)),
               "height": int(rng.integers(360, 641))} for i in image_ids]
    n_special = max(1, round(n_images * 0.005))
    crowded = set(rng.choice(n_images, n_special, replace=False).tolist())  # 50+ gts of one class
    heavy = set(rng.choice(n_images, max(1, round(n_images * 0.01)), replace=False).tolist())  # 100+ dets

    annotations: list[dict] = []
    results: list[dict] = []
    ann_id = 0
    tp_ious: list[float] = []
    counts = {"small": 0, "medium": 0, "large": 0}

    def new_ann_id() -> int:
        nonlocal ann_id
        ann_id += 1 + (int(rng.integers(1, 10)) if rng.random() < 0.05 else 0)  # ids with gaps, never 0
        return ann_id

    def detect(image: dict, cat: int, box: list[float], score: float) -> None:
        results.append({"image_id": image["id"], "category_id": cat, "bbox": box, "score": _score(rng, score)})

    for index, image in enumerate(images):
        W, H = image["width"], image["height"]
        n_gt = 0 if rng.random() < 0.03 and index not in crowded else int(rng.poisson(7))
        classes = [COCO_CAT_IDS[k] for k in rng.choice(n_cats, int(rng.integers(1, 5)), p=cat_p)]
        gt_cats = [classes[int(rng.integers(len(classes)))] for _ in range(n_gt)]
        if index in crowded:
            gt_cats += [classes[0]] * int(rng.integers(50, 81))
        image_gts = []
        for cat in gt_cats:
            crowd = rng.random() < 0.01
            box = _box(rng, W, H, (100.0, 0.95 * min(W, H)) if crowd else None)
            area = box[2] * box[3]
            counts["small" if area < 32 ** 2 else "medium" if area < 96 ** 2 else "large"] += 1
            ann = {"id": new_ann_id(), "image_id": image["id"], "category_id": cat, "bbox": box,
                   "area": float(area), "iscrowd": int(crowd)}
            if rng.random() < 0.4:
                x, y, w, h = box
                ann["segmentation"] = [[x, y, round(x + w, 2), y, round(x + w, 2), round(y + h, 2), x, round(y + h, 2)]]
            annotations.append(ann)
            image_gts.append(ann)

        for ann in image_gts:
            cat, box = ann["category_id"], ann["bbox"]
            if ann["iscrowd"]:  # detections inside a crowd region: neither rewarded nor penalised
                for _ in range(3):
                    inner = _jitter(rng, [box[0] + box[2] / 4, box[1] + box[3] / 4, box[2] / 3, box[3] / 3], 0.3, W, H)
                    detect(image, cat, inner, rng.uniform(0.2, 0.9))
                continue
            if rng.random() >= 0.85:
                continue  # a missed object
            sigma = rng.uniform(0.003, 0.25)  # IoU with its gt: 5% below ~0.35, 5% above ~0.96
            det = _jitter(rng, box, sigma, W, H)
            iou = _iou(det, box)
            tp_ious.append(iou)
            det_cat = cat if rng.random() < 0.95 else COCO_CAT_IDS[int(rng.integers(n_cats))]
            score = 0.55 * iou + 0.45 * rng.random() + 0.05 * rng.normal()
            detect(image, det_cat, det, score)
            if rng.random() < 0.1:  # a duplicate, a little worse and lower scored
                detect(image, det_cat, _jitter(rng, box, sigma * 1.5 + 0.02, W, H), score * rng.uniform(0.3, 0.95))

        for _ in range(int(rng.poisson(31))):  # false positives, on every image (empty ones included)
            cat = classes[int(rng.integers(len(classes)))] if rng.random() < 0.5 else \
                COCO_CAT_IDS[int(rng.choice(n_cats, p=cat_p))]
            detect(image, cat, _box(rng, W, H), rng.beta(1.2, 5.0))

        if index in heavy:  # one class with more than 100 detections (only the top 100 count)
            cat = classes[0]
            near = [a["bbox"] for a in image_gts if a["category_id"] == cat and not a["iscrowd"]]
            for k in range(int(rng.integers(110, 161))):
                box = _jitter(rng, near[k % len(near)], 0.3, W, H) if near and k % 2 else _box(rng, W, H)
                detect(image, cat, box, rng.beta(1.5, 3.0))

    order = rng.permutation(len(results))  # file order differs from image order: ties must keep file order
    results = [results[i] for i in order]
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in COCO_CAT_IDS]
    gt = {"info": {"description": f"synthetic COCO-sized set, seed {seed}"}, "images": images,
          "annotations": annotations, "categories": categories}
    q = np.quantile(np.array(tp_ious), [0.05, 0.25, 0.5, 0.75, 0.95]) if tp_ious else []
    summary = {
        "images": n_images, "images_without_gt": n_images - len({a["image_id"] for a in annotations}),
        "gt_boxes": len(annotations), "crowd": sum(a["iscrowd"] for a in annotations),
        "with_polygon": sum("segmentation" in a for a in annotations), "areas": counts,
        "detections": len(results), "distinct_scores": len({r["score"] for r in results}),
        "true_positive_iou_quantiles_5_25_50_75_95": [round(float(v), 3) for v in q],
        "crowded_images": len(crowded), "images_with_100plus_dets_of_one_class": len(heavy),
    }
    return gt, results, summary


def id0_files(folder: Path) -> tuple[Path, Path]:
    """One image, one box with annotation id 0, one perfect detection: AP should be 1.0."""
    folder.mkdir(parents=True, exist_ok=True)
    box = [100.0, 120.0, 60.0, 80.0]
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
          "annotations": [{"id": 0, "image_id": 1, "category_id": 1, "bbox": box, "area": 4800.0, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "thing", "supercategory": "thing"}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9}]
    (folder / "gt.json").write_text(json.dumps(gt))
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "gt.json", folder / "results.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------- one library, in its own process


def worker(library: str, gt_path: str, results_path: str, out: str, options_path: str | None) -> None:
    """Load, evaluate, accumulate, summarize with one library; write timings and stats as JSON to out."""
    if options_path:
        sys.path.insert(0, options_path)
    quiet = contextlib.redirect_stdout(io.StringIO())  # Python-level prints only; Rust's go to the log
    t = time.perf_counter()
    if library == "pycocotools":
        import pycocotools as module
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        def load():
            gt = COCO(gt_path)
            return gt, gt.loadRes(results_path)

        def make(gt, dt):
            return COCOeval(gt, dt, "bbox")
    elif library == "faster-coco-eval":
        import faster_coco_eval as module
        from faster_coco_eval import COCO, COCOeval_faster

        def load():
            gt = COCO(gt_path)
            return gt, gt.loadRes(results_path)

        def make(gt, dt):
            return COCOeval_faster(gt, dt, iouType="bbox")
    elif library == "hotcoco":
        import hotcoco as module
        from hotcoco import COCO, COCOeval

        def load():
            gt = COCO(gt_path)
            return gt, gt.load_res(results_path)

        def make(gt, dt):
            return COCOeval(gt, dt, "bbox")
    else:
        raise SystemExit(f"unknown library {library!r}")
    row = {"version": importlib.metadata.version(library), "module": str(Path(module.__file__).parent),
           "api": API[library], "numpy": sys.modules["numpy"].__version__, "import_s": time.perf_counter() - t}
    with quiet:
        t = time.perf_counter()
        gt, dt = load()
        row["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ev = make(gt, dt)
        ev.evaluate()
        row["evaluate_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ev.accumulate()
        row["accumulate_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ev.summarize()
        row["summarize_s"] = time.perf_counter() - t
    row["stats"] = [float(v) for v in list(ev.stats)[:12]]
    Path(out).write_text(json.dumps(row))


def run_worker(library: str, gt: Path, results: Path, folder: Path, tag: str, options_path: str | None) -> dict:
    out = folder / f"{library}_{tag}.json"
    log = folder / f"{library}_{tag}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", library, "--worker-gt", str(gt),
           "--worker-results", str(results), "--worker-out", str(out)]
    if options_path:
        cmd += ["--options-path", options_path]
    out.unlink(missing_ok=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    seconds = time.perf_counter() - t
    if rc != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {rc}: {tail[0]} (log: {log})"}
    row = json.loads(out.read_text())
    row["process_s"] = seconds
    return row


def run_visiontl(gt: Path, results: Path, folder: Path, repeats: int, engine: str) -> dict:
    metrics_path = folder / "m.json"
    cmd = [sys.executable, "-m", "visiontl", "score", str(gt), str(results), "--iou-type", "bbox",
           "--engine", engine, "--out", str(metrics_path)]
    times = []
    for _ in range(repeats):
        metrics_path.unlink(missing_ok=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0 or not metrics_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return {"error": f"exit {proc.returncode}: {tail[0]}"}
    metrics = json.loads(metrics_path.read_text())
    return {"process_s": min(times), "all_process_s": times,
            "stats": [float(metrics[f"bbox/{name}"]) for name in METRIC_NAMES]}


# ---------------------------------------------------------------------------------------------- report


def max_abs_diff(a: list[float] | None, b: list[float] | None) -> float | None:
    if not a or not b:
        return None
    return max(abs(x - y) for x, y in zip(a, b))


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_diff(value: float | None) -> str:
    if value is None:
        return "—"
    return "0 (exact)" if value == 0 else f"{value:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where gt.json / results.json go "
                        "(default: a new temporary folder, kept)")
    parser.add_argument("--repeats", type=int, default=3, help="visiontl score runs; the best counts")
    parser.add_argument("--options-path", default=None, metavar="DIR",
                        help="also time faster-coco-eval and hotcoco, imported from DIR")
    parser.add_argument("--skip-pycocotools", type=Path, default=None, metavar="FILE",
                        help="reuse the pycocotools row of an earlier --out file made from the same files")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: WORKDIR/bench_coco_eval.json)")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-gt", help=argparse.SUPPRESS)
    parser.add_argument("--worker-results", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.worker_gt, args.worker_results, args.worker_out, args.options_path)
        return
    options_path = str(Path(args.options_path).resolve()) if args.options_path else None
    if options_path and not Path(options_path).is_dir():
        parser.error(f"--options-path {options_path}: not a folder")

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench_coco_eval_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = args.out or workdir / "bench_coco_eval.json"
    command = shlex.join([sys.executable, *sys.argv])
    print(f"workdir {workdir}")

    t = time.perf_counter()
    gt, results, summary = generate(args.images, args.seed)
    gt_path, results_path = workdir / "gt.json", workdir / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    del gt, results
    data = {"seed": args.seed, **summary, "gt_json": str(gt_path), "results_json": str(results_path),
            "gt_sha256": sha256(gt_path), "results_sha256": sha256(results_path),
            "gt_mb": round(gt_path.stat().st_size / 1e6, 1), "results_mb": round(results_path.stat().st_size / 1e6, 1)}
    print(f"data written in {time.perf_counter() - t:.1f} s: " + json.dumps(summary))
    zero_gt, zero_results = id0_files(workdir / "id0")
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)

    libraries = ["pycocotools"] + (["faster-coco-eval", "hotcoco"] if options_path else [])
    rows: dict[str, dict] = {}
    for library in libraries:
        if library == "pycocotools" and args.skip_pycocotools:
            previous = json.loads(args.skip_pycocotools.read_text())
            if (previous.get("data", {}).get("gt_sha256"), previous.get("data", {}).get("results_sha256")) != \
                    (data["gt_sha256"], data["results_sha256"]):
                raise SystemExit(f"{args.skip_pycocotools}: measured on other files (sha256 differs; "
                                 "use the same --images and --seed)")
            row = next(r for r in previous["rows"] if r["scorer"] == "pycocotools")
            row = {k: v for k, v in row.items() if k not in ("ratio", "max_abs_diff", "id0_AP")}
            row["reused_from"] = str(args.skip_pycocotools)
            print(f"pycocotools: reusing {args.skip_pycocotools}")
        else:
            print(f"{library}: scoring ...", flush=True)
            row = run_worker(library, gt_path, results_path, logs, "full", None if library == "pycocotools" else options_path)
        zero = run_worker(library, zero_gt, zero_results, logs, "id0", None if library == "pycocotools" else options_path)
        row["id0_AP"] = zero["stats"][0] if "stats" in zero else None
        if "error" in zero:
            row["id0_error"] = zero["error"]
        if "load_s" in row:
            row["eas_s"] = row["evaluate_s"] + row["accumulate_s"] + row["summarize_s"]
            row["whole_s"] = row["load_s"] + row["eas_s"]
        rows[library] = {"scorer": library, **row}
        print(json.dumps(rows[library]), flush=True)

    for engine in ("hotcoco", "numpy"):
        name = f"visiontl score --engine {engine}"
        print(f"{name}: {args.repeats} runs ...", flush=True)
        row = run_visiontl(gt_path, results_path, logs, args.repeats, engine)
        zero = run_visiontl(zero_gt, zero_results, workdir / "id0", 1, engine)
        row["id0_AP"] = zero["stats"][0] if "stats" in zero else None
        if "error" in zero:
            row["id0_error"] = zero["error"]
        row["whole_s"] = row.get("process_s")
        rows[name] = {"scorer": name, **row}
        print(json.dumps(rows[name]), flush=True)

    reference = rows["pycocotools"]
    for name, row in rows.items():
        base = row.get("whole_s") if name.startswith("visiontl score") else row.get("eas_s")
        row["ratio"] = reference["eas_s"] / base if base and reference.get("eas_s") else None
        row["max_abs_diff"] = max_abs_diff(row.get("stats"), reference.get("stats"))

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version()}
    setting = (f"{datetime.now():%Y-%m-%d %H:%M}, {machine['platform']}, {machine['cpu_count']} CPUs, Python "
               f"{machine['python']}; {data['images']} images, {data['gt_boxes']} gt boxes ({data['crowd']} crowd), "
               f"{data['detections']} detections, bbox")
    header = ["scorer", "load s", "evaluate+accumulate+summarize s", "whole s",
              "pycocotools e+a+s ÷ this", "max \\|Δ\\| vs pycocotools (12 stats)", "id-0 AP"]
    lines = [setting, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        label = name + (f" {row['version']}" if row.get("version") else "")
        if "error" in row:
            lines.append(f"| {label} | error: {row['error']} | | | | | {fmt(row.get('id0_AP'), 3)} |")
            continue
        whole = fmt(row.get("whole_s")) + (" (process)" if name.startswith("visiontl score") else "")
        lines.append(f"| {label} | {fmt(row.get('load_s'))} | {fmt(row.get('eas_s'))} | {whole} | "
                     f"{fmt(row.get('ratio'))}× | {fmt_diff(row.get('max_abs_diff'))} | {fmt(row.get('id0_AP'), 3)} |")
    notes = ["", "load = COCO(gt) + loadRes(results) from the files; whole = load + e+a+s, in one process after its "
             "imports, except `visiontl score`: the wall time of the whole `python -m visiontl score ... --out` "
             f"process (start, imports, reading, scoring, writing), best of {args.repeats}; its ratio uses that whole time."]
    for name, row in rows.items():
        if "evaluate_s" in row:
            notes.append(f"{name}: evaluate {row['evaluate_s']:.2f} s, accumulate {row['accumulate_s']:.2f} s, "
                         f"summarize {row['summarize_s']:.3f} s, import {row['import_s']:.2f} s"
                         + (f" (reused from {row['reused_from']})" if row.get("reused_from") else ""))
    table = "\n".join(lines + notes)
    print("\n" + table)
    report = {"date": datetime.now().isoformat(timespec="seconds"), "machine": machine, "command": command,
              "data": data, "rows": list(rows.values()), "table": table}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out_path}")


if __name__ == "__main__":
    main()
