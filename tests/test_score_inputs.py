"""What `visiontl score` reads is checked before anything decodes or scores it (issue 15, items 3, 8, 10, 11,
12): every number a real finite JSON number, every polygon finite and near its image, every RLE of the
image's size with run lengths adding up to its pixels; both engines are handed the same checked arrays, so
they refuse exactly the same files with the same line. Ends with a property test: random mutations of
valid files, under a memory and a time limit, end only in scores or one-line refusals, the same for both
engines."""

from __future__ import annotations

import copy
import json
import math
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from visiontl.errors import DataError
from visiontl.evaluation.cocoeval import MAX_SCORED_CATEGORIES, hotcoco_available
from visiontl.evaluation.score import format_table, score_files

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ["numpy", pytest.param("hotcoco", marks=pytest.mark.skipif(not hotcoco_available(), reason="no hotcoco"))]


def _compressed(box: tuple[int, int, int, int], h: int, w: int) -> dict:
    m = np.zeros((h, w), np.uint8, order="F")
    x, y, bw, bh = box
    m[y: y + bh, x: x + bw] = 1
    rle = mask_utils.encode(m)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _uncompressed(box: tuple[int, int, int, int], h: int, w: int) -> dict:
    """COCO's crowd-region form: run lengths down the columns, starting with background."""
    m = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    m[y: y + bh, x: x + bw] = 1
    flat = m.ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, edges, len(flat)]).tolist()
    return {"size": [h, w], "counts": ([0] if flat[0] else []) + runs}


# Two small images (masks stay a few hundred pixels), polygons, uncompressed RLE (a crowd region) and
# compressed RLE in the ground truth; boxes and masks in the results.
GT: dict[str, Any] = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 24},
               {"id": 2, "file_name": "b.jpg", "width": 20, "height": 16}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 8], "area": 80, "iscrowd": 0,
         "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [16, 4, 12, 12], "area": 144, "iscrowd": 1,
         "segmentation": _uncompressed((16, 4, 12, 12), 24, 32)},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [3, 3, 8, 6], "area": 48, "iscrowd": 0,
         "segmentation": _compressed((3, 3, 8, 6), 16, 20)},
    ],
}
RESULTS: list[dict[str, Any]] = [
    {"image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "score": 0.9, "segmentation": _compressed((2, 3, 10, 8), 24, 32)},
    {"image_id": 1, "category_id": 2, "bbox": [17, 4, 11, 12], "score": 0.6,
     "segmentation": [[17, 4, 28, 4, 28, 16, 17, 16]]},
    {"image_id": 2, "category_id": 1, "bbox": [3, 4, 8, 6], "score": 0.7, "segmentation": _compressed((3, 4, 8, 6), 16, 20)},
    {"image_id": 2, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.3, "segmentation": _compressed((0, 0, 5, 5), 16, 20)},
]
BIG_INTEGER = "9" * 5000  # written into the text: Python's json refuses to convert it


def _write(tmp: Path, gt: Any, results: Any) -> tuple[Path, Path]:
    gt_path, res_path = tmp / "gt.json", tmp / "results.json"
    for path, doc in ((gt_path, gt), (res_path, results)):
        text = doc if isinstance(doc, str) else json.dumps(doc)
        path.write_text(text.replace('"BIG_INTEGER"', BIG_INTEGER))
    return gt_path, res_path


def _annotation(i: int, **change: Any) -> Callable[[dict, list], None]:
    def mutate(gt: dict, results: list) -> None:
        gt["annotations"][i].update(change)
    return mutate


def _result(i: int, **change: Any) -> Callable[[dict, list], None]:
    def mutate(gt: dict, results: list) -> None:
        results[i].update(change)
    return mutate


def _image(i: int, **change: Any) -> Callable[[dict, list], None]:
    def mutate(gt: dict, results: list) -> None:
        gt["images"][i].update(change)
    return mutate


def _without(key: str, i: int) -> Callable[[dict, list], None]:
    def mutate(gt: dict, results: list) -> None:
        del gt["annotations"][i][key]
    return mutate


def _category_name(name: Any) -> Callable[[dict, list], None]:
    def mutate(gt: dict, results: list) -> None:
        gt["categories"][0]["name"] = name
    return mutate


NAN, INF = float("nan"), float("inf")
# name: (mutation, iou type, the line's tail after "<file>: ")
CASES: dict[str, tuple[Callable[[dict, list], None], str, str]] = {
    # item 3: polygons and RLEs, results and ground truth
    "result polygon NaN": (_result(1, segmentation=[[10, 10, NAN, 10, 30, 30]]), "segm",
                           "result #1: segmentation polygon has a non-finite coordinate"),
    "result polygon 1e9": (_result(1, segmentation=[[10, 10, 1e9, 10, 30, 30]]), "segm",
                           "result #1: segmentation polygon has x = 1e+09, far outside the 32x24 image"),
    "gt polygon -1e9": (_annotation(0, segmentation=[[2, 2, -1e9, 2, 12, 10]]), "segm",
                        "annotation 1: segmentation polygon has x = -1e+09, far outside the 32x24 image"),
    "gt polygon inf": (_annotation(0, segmentation=[[2, 2, 12, INF, 12, 10]]), "segm",
                       "annotation 1: segmentation polygon has a non-finite coordinate"),
    "polygon odd length": (_result(1, segmentation=[[1, 1, 5, 1, 5, 5, 1]]), "segm",
                           "result #1: segmentation polygon has 7 coordinates; a polygon has an even number, at least 6"),
    "polygon two points": (_annotation(0, segmentation=[[2, 2, 12, 2, 12, 10, 2, 10], [1, 1, 3, 3]]), "segm",
                           "annotation 1: segmentation polygon 1 has 4 coordinates"),
    "polygon of strings": (_result(1, segmentation=[["1", "1", "5", "1", "5", "5"]]), "segm",
                           "result #1: segmentation polygon is not a list of numbers"),
    "rle counts negative": (_result(0, segmentation={"size": [24, 32], "counts": [-5, 773]}), "segm",
                            "result #0: segmentation RLE 'counts' has a negative run length (-5)"),
    "rle counts 2**63": (_result(0, segmentation={"size": [24, 32], "counts": [2**63, 10]}), "segm",
                         "result #0: segmentation RLE 'counts' add up to 9223372036854775818 pixels, not the image's 768"),
    "rle counts floats": (_result(0, segmentation={"size": [24, 32], "counts": [700.0, 68]}), "segm",
                          "result #0: segmentation RLE 'counts' holds something other than integers"),
    "rle counts short": (_annotation(1, segmentation={"size": [24, 32], "counts": [100, 20]}), "segm",
                         "annotation 2: segmentation RLE 'counts' add up to 120 pixels, not the image's 768"),
    "rle string of ~": (_result(0, segmentation={"size": [24, 32], "counts": "~" * 100}), "segm",
                        "result #0: segmentation RLE 'counts' has a character outside pycocotools' encoding"),
    "rle string sums wrong": (_result(2, segmentation=_compressed((3, 4, 8, 6), 24, 32) | {"size": [16, 20]}), "segm",
                              "result #2: segmentation RLE 'counts' add up to 768 pixels, not the image's 320"),
    "rle string cut": (_annotation(2, segmentation={"size": [16, 20], "counts": "0o"}), "segm",
                       "annotation 3: segmentation RLE 'counts' string is cut short"),
    "rle string negative run": (_result(3, segmentation={"size": [16, 20], "counts": "@"}), "segm",
                                "result #3: segmentation RLE 'counts' decode to a negative run length"),
    "rle size negative": (_result(0, segmentation={"size": [-24, 32], "counts": "abc"}), "segm",
                          "result #0: segmentation RLE 'size' [-24, 32] is not the image's [height, width] [24, 32]"),
    "rle size of floats": (_result(0, segmentation={"size": [24.0, 32.0], "counts": [768]}), "segm",
                           "result #0: segmentation RLE 'size' is [24.0, 32.0], not [height, width] as integers"),
    "rle size not the image's": (_annotation(1, segmentation={"size": [25, 32], "counts": [800]}), "segm",
                                 "annotation 2: segmentation RLE 'size' [25, 32] is not the image's [height, width] [24, 32]"),
    # item 12: what one engine used to accept and the other refuse
    "score as a string": (_result(0, score="0.9"), "bbox", "result #0: 'score' is '0.9', not a finite number"),
    "bbox of strings": (_result(0, bbox=["1", "2", "3", "4"]), "bbox",
                        "result #0: 'bbox' is ['1', '2', '3', '4'], not 4 finite numbers"),
    "gt bbox null": (_annotation(0, bbox=None), "bbox", "annotation 1: 'bbox' is None, not 4 finite numbers"),
    "result bbox null in segm": (_result(0, bbox=None), "segm", "result #0: 'bbox' is None, not 4 finite numbers"),
    "gt segmentation missing": (_without("segmentation", 0), "segm",
                                "annotation 1: missing segmentation (segm evaluation needs one)"),
    "gt area NaN": (_annotation(0, area=NAN), "bbox", "annotation 1: 'area' is nan, not a finite number"),
    # item 11: each one line, no traceback
    "score as a bool": (_result(0, score=True), "bbox", "result #0: 'score' is True, not a finite number"),
    "bbox with a bool": (_annotation(0, bbox=[1, 2, True, 4]), "bbox",
                         "annotation 1: 'bbox' is [1, 2, True, 4], not 4 finite numbers"),
    "category id as a string": (_result(0, category_id="1"), "bbox", "result #0: 'category_id' is '1', not an integer"),
    "category id a fraction": (_result(0, category_id=1.5), "bbox", "result #0: 'category_id' is 1.5, not an integer"),
    "image id as a bool": (_result(0, image_id=True), "bbox", "result #0: 'image_id' is True, not an integer"),
    "5000-digit score": (_result(0, score="BIG_INTEGER"), "bbox",
                         "holds an integer of more than 4,300 digits; no COCO value has that many"),
    "integer beyond floats": (_result(0, score=10**400), "bbox",
                              "result #0: 'score' is an integer of 401 digits, not a finite number"),
    "category name a number": (_category_name(5), "bbox", "category 1: 'name' is 5, not a string"),
    "iscrowd yes": (_annotation(0, iscrowd="yes"), "bbox", "annotation 1: 'iscrowd' is 'yes', not 0 or 1"),
    "negative width": (_image(0, width=-32), "bbox", "image 1: 'width' is -32, not a positive integer"),
    "width 0 in segm": (_image(1, width=0), "segm", "image 2: 'width' is 0, not a positive integer"),
    "height a string": (_image(1, height="16"), "bbox", "image 2: 'height' is '16', not a positive integer"),
    "gt area negative": (_annotation(2, area=-1), "bbox", "annotation 3: 'area' is -1, not a finite number ≥ 0"),
    "annotation id a list": (_annotation(2, id=[3]), "bbox", "annotation #2: 'id' is [3], not an integer"),
    "image too big for masks": (_image(0, width=70_000, height=70_000), "segm",
                                "image 1: 70000x70000 is more pixels than masks can be scored on"),
}


def _refusal(name: str, tmp: Path, engine: str) -> str:
    mutate, iou_type, _ = CASES[name]
    gt, results = copy.deepcopy(GT), copy.deepcopy(RESULTS)
    mutate(gt, results)
    gt_path, res_path = _write(tmp, json.dumps(gt, allow_nan=True), json.dumps(results, allow_nan=True))
    with pytest.raises(DataError) as caught:
        score_files(gt_path, res_path, iou_type, engine)
    return str(caught.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_both_engines_refuse_with_the_same_line(tmp_path: Path, name: str) -> None:
    engines = ["numpy", "hotcoco"] if hotcoco_available() else ["numpy"]
    lines = {engine: _refusal(name, tmp_path, engine) for engine in engines}
    expected_file = "gt.json" if CASES[name][2].startswith(("annotation", "image", "category")) else "results.json"
    for engine, line in lines.items():
        assert "\n" not in line
        assert line.startswith(str(tmp_path / expected_file) + ": "), (engine, line)
        assert CASES[name][2] in line, (engine, line)
    assert len(set(lines.values())) == 1, lines


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_the_valid_files_score_alike(tmp_path: Path, iou_type: str) -> None:
    gt_path, res_path = _write(tmp_path, GT, RESULTS)
    scores = [score_files(gt_path, res_path, iou_type, engine) for engine in
              (["numpy", "hotcoco"] if hotcoco_available() else ["numpy"])]
    assert scores[0][f"{iou_type}/AP50"] > 0.5
    same = [json.dumps({k: v for k, v in s.items() if k != "engine"}, sort_keys=True) for s in scores]
    assert len(set(same)) == 1  # through JSON, so that NaN (a class without ground truth) equals NaN


def _limited(memory_bytes: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    return limit


# Address space is reserved per thread (malloc arenas, BLAS buffers, hotcoco's worker stacks): with a few
# threads the limits below measure what scoring uses, not how many cores the machine has.
FEW_THREADS = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "RAYON_NUM_THREADS": "2", "MALLOC_ARENA_MAX": "2"}


def _cli(args: list[str], memory_bytes: int = 2 << 30, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visiontl", "score", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=FEW_THREADS, preexec_fn=_limited(memory_bytes))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_279_byte_results_file_is_one_line_under_a_memory_limit(tmp_path: Path, engine: str) -> None:
    """Issue 15, item 3: a NaN in a polygon reached pycocotools' rasteriser (20 GB, then the OOM killer)."""
    gt_path, _ = _write(tmp_path, GT, RESULTS)
    res_path = tmp_path / "nan.json"
    res_path.write_text('[{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": [[10, 10, NaN, 10, 30, 30]]}]')
    done = _cli([str(gt_path), str(res_path), "--iou-type", "segm", "--engine", engine])
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"visiontl: error: {res_path}: result #0: segmentation polygon has a non-finite coordinate"]


def _categories_file(tmp: Path, unused: int, used: int = 1) -> Path:
    gt = {"images": [{"id": 1, "width": 64, "height": 48}],
          "categories": [{"id": i, "name": f"c{i}"} for i in range(used + unused)],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": i, "bbox": [1, 1, 5, 5], "area": 25}
                          for i in range(used)]}
    path = tmp / f"gt_{unused}_{used}.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_unused_categories_cost_no_memory(tmp_path: Path, engine: str) -> None:
    """Issue 15, item 8: 10,000 categories without ground truth took 3.9 GB; only categories with ground
    truth are evaluated now, so a 1 GB address-space limit is plenty (imports included)."""
    gt_path = _categories_file(tmp_path, 10_000)
    res_path = tmp_path / "res.json"
    res_path.write_text(json.dumps([{"image_id": 1, "category_id": 0, "bbox": [1, 1, 5, 5], "score": 0.5}]))
    done = _cli([str(gt_path), str(res_path), "--engine", engine, "--out", str(tmp_path / "m.json")], 1 << 30)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["bbox/AP/c0"] == pytest.approx(1.0) and math.isnan(metrics["bbox/AP/c9999"])
    assert "(10,000 classes have no ground truth: not listed; their AP is NaN in --out)" in done.stdout
    assert len(done.stdout.splitlines()) < 30


def test_more_categories_with_ground_truth_than_the_bound_is_one_line(tmp_path: Path) -> None:
    gt_path = _categories_file(tmp_path, 0, MAX_SCORED_CATEGORIES + 1)
    res_path = tmp_path / "res.json"
    res_path.write_text("[]")
    done = _cli([str(gt_path), str(res_path), "--engine", "numpy"], 2 << 30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"visiontl: error: {gt_path}: 20,001 categories have ground truth; visiontl score evaluates at most 20,000 "
        "(about 0.4 MB of memory each)"]


def test_a_category_name_cannot_forge_a_row(tmp_path: Path) -> None:
    """Issue 15, item 10: names from the file are printed with control characters escaped."""
    gt = copy.deepcopy(GT)
    gt["categories"][1]["name"] = "dog\nAP         1.0000\x1b[2J"
    gt_path, res_path = _write(tmp_path, gt, RESULTS)
    table = format_table(score_files(gt_path, res_path, "bbox", "numpy"), "bbox")
    assert [line for line in table.splitlines() if line.startswith("AP ")] == [
        next(line for line in table.splitlines() if line.startswith("AP "))]
    assert "\x1b" not in table and "dog\\nAP         1.000" in table


# ------------------------------------------------------------------------------------------ property test

# Values a mutation puts somewhere in a valid file: wrong types, non-finite and huge numbers, broken masks.
NASTY: list[Any] = [NAN, INF, -INF, -1e9, 1e9, 1e200, 2**63, 10**400, -5, 0, 0.5, 1, "0.9", "", True, False, None, [], {},
                    [1, 2, 3], [0, 0, 1e9, 0, 5, 5], [[1, 2, 3, 4, 5, 6]], [[NAN, 0, 4, 0, 4, 4]],
                    {"size": [24, 32], "counts": "~" * 100}, {"size": [16, 20], "counts": [-1, 321]},
                    {"size": [-1, 5], "counts": [5]}, {"size": [24, 32], "counts": "0"}, "BIG_INTEGER",
                    "a\nb\x1b[2J"]


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a JSON document (the root excluded)."""
    out = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*path, i))
    return out


def _mutate(doc: Any, path: tuple, action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    else:
        parent[last] = copy.deepcopy(value)
    return doc


def _outcome(gt_path: Path, res_path: Path, iou_type: str, engine: str) -> tuple[str, Any]:
    try:
        metrics = score_files(gt_path, res_path, iou_type, engine)
    except DataError as exc:
        line = str(exc)
        assert line and "\n" not in line and len(line) < 400, line
        return "refused", line
    return "scored", json.dumps({k: v for k, v in metrics.items() if k != "engine"}, sort_keys=True)


def fuzz(examples: int, folder: str) -> None:
    """Run in a subprocess under resource limits by the test below (hypothesis, derandomized)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    warnings.simplefilter("error", RuntimeWarning)  # a numpy warning would be a second line on stderr
    engines = ["numpy", "hotcoco"] if hotcoco_available() else ["numpy"]
    tmp = Path(folder)
    docs = {"gt": GT, "results": RESULTS}
    paths = {name: _paths(doc) for name, doc in docs.items()}
    outcomes: dict[str, int] = {}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        files = dict(docs)
        for _ in range(data.draw(st.integers(1, 3))):
            which = data.draw(st.sampled_from(["gt", "results"]))
            path = data.draw(st.sampled_from(paths[which]))
            action = data.draw(st.sampled_from(["replace", "replace", "replace", "delete", "duplicate"]))
            try:
                files[which] = _mutate(files[which], path, action, data.draw(st.sampled_from(NASTY)))
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation removed or replaced what this path points into
        iou_type = data.draw(st.sampled_from(["bbox", "segm"]))
        gt_path, res_path = _write(tmp, json.dumps(files["gt"]), json.dumps(files["results"]))
        seen = {engine: _outcome(gt_path, res_path, iou_type, engine) for engine in engines}
        assert len(set(seen.values())) == 1, seen
        kind = next(iter(seen.values()))[0]
        outcomes[kind] = outcomes.get(kind, 0) + 1

    run()
    print(json.dumps(outcomes))


def test_mutated_files_end_in_scores_or_one_line_under_limits(tmp_path: Path) -> None:
    """Random mutations of the valid files above (1 to 3 each: a value replaced by one of NASTY, a key
    deleted, a record duplicated), bbox and segm, in a subprocess limited to 2 GB of address space and 120 s:
    every one ends in scores or a one-line DataError, and both engines end the same way."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_score_inputs as t; " \
           f"t.fuzz(150, {str(tmp_path)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=FEW_THREADS, preexec_fn=_limited(2 << 30))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcomes.get("refused", 0) > 20 and outcomes.get("scored", 0) > 10, outcomes  # both kinds exercised


@pytest.mark.parametrize("engine", ENGINES)
def test_an_empty_bbox_on_a_mask_result_means_no_box(tmp_path: Path, engine: str) -> None:
    """pycocotools' loadRes reads `bbox: []` as "no box" (box and area from the mask); `bbox: null` it
    cannot read, and neither engine accepts it (CASES)."""
    without = [{k: v for k, v in r.items() if k != "bbox"} for r in RESULTS]
    empty = [{**r, "bbox": []} for r in RESULTS]
    gt_path, res_path = _write(tmp_path, GT, without)
    expected = score_files(gt_path, res_path, "segm", engine)
    res_path.write_text(json.dumps(empty))
    assert json.dumps(score_files(gt_path, res_path, "segm", engine)) == json.dumps(expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_result_ids_written_as_whole_floats_are_the_integers(tmp_path: Path, engine: str) -> None:
    """`image_id: 1.0`, `category_id: 2.0` (what `.tolist()` of a float array writes) name images and
    categories 1 and 2, as in pycocotools' lookups; `1.5` is refused (CASES)."""
    gt_path, res_path = _write(tmp_path, GT, RESULTS)
    expected = score_files(gt_path, res_path, "bbox", engine)
    res_path.write_text(json.dumps([{**r, "image_id": float(r["image_id"]), "category_id": float(r["category_id"])}
                                    for r in RESULTS]))
    assert json.dumps(score_files(gt_path, res_path, "bbox", engine)) == json.dumps(expected)
