"""Writing an `AnnotationSet` as Label Studio tasks (full-export style, importable)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from visiontl.atomic import atomic_write_json, atomic_write_text
from visiontl.data.annotations import AnnotationSet, WriteReport, check_text_names
from visiontl.data.formats.labelstudio.label_config import CONFIG_NAME, config_xml, controls_of
from visiontl.data.formats.labelstudio.reader import IMAGE_RESERVED
from visiontl.data.formats.labelstudio.results import instance_results
from visiontl.data.formats.labelstudio.urls import image_url
from visiontl.errors import DataError

_INSTANCE_HELD = {"rotated_box", "result_id"}


def write_labelstudio(aset: AnnotationSet, json_path: Path, *, from_name: str | Mapping[str, str] | None = None,
                      to_name: str = "image", image_prefix: str = "/data/local-files/?d=",
                      as_predictions: bool = False, model_version: str | None = None,
                      label_config: str | None = CONFIG_NAME) -> WriteReport:
    """Write `aset` as a Label Studio task list (full-export style, importable), atomically, and the labelling
    config that imports it beside it (the file name `label_config`; None: none).

    Box-only instances become `rectanglelabels` (rotated when their `rotated_box` still has the box as its
    envelope), polygons `polygonlabels`, RLE masks `brushlabels`. `from_name` names the controls: by default
    one per result type (`CONTROL_NAMES`), else one name for every result or a mapping from result type to
    control name, as a project's config has them. The config has the Image `to_name` and one control per result
    type written, each listing every category in id order: reading the tasks back keeps the categories (ids
    1..N), their order and the ones no result names. `data.image` is `image_prefix` + file name (URL-quoted
    when the prefix is a URL). With `as_predictions` the results go under `predictions` (Label Studio's
    pre-annotation import format), each with its score, and the prediction's score is their mean."""
    aset.validate()
    check_text_names(aset, "Label Studio")
    json_path = Path(json_path)
    report = WriteReport(target=str(json_path))
    names = {c.id: c.name for c in aset.categories}
    controls = controls_of(from_name)
    used_ids: set[str] = set()
    by_image = aset.by_image()
    expected = [c.id for c in sorted(aset.categories, key=lambda c: c.id)]
    if expected != list(range(1, len(expected) + 1)):
        report.lost.append("category ids: Label Studio holds label names only; they read back as 1..N "
                           "in label-config order")
    tasks = []
    for img in aset.images:
        where = img.file_name
        if img.width <= 0 or img.height <= 0:
            raise DataError(f"{aset.report.source}: image {img.id} ({img.file_name}): size {img.width}x{img.height} "
                            "is needed for Label Studio's percent coordinates")
        data: dict[str, Any] = {"image": image_url(image_prefix, img.file_name)}
        for k, v in img.attributes.items():
            if k in IMAGE_RESERVED or k == "image":
                continue
            if _jsonable(v):
                data[k] = v
            else:
                report.lost.append(f"{where}: image attribute {k!r} is not JSON data")
        results: list[dict[str, Any]] = []
        scores: list[float] = []
        for inst in by_image[img.id]:
            iwhere = f"{where}: annotation {inst.id}"
            for r in instance_results(inst, img, names[inst.category_id], controls, to_name, used_ids, report,
                                      iwhere):
                if as_predictions and inst.score is not None:
                    r["score"] = inst.score
                results.append(r)
            if inst.score is not None:
                if as_predictions:
                    scores.append(inst.score)
                else:
                    report.lost.append(f"{iwhere}: score {inst.score} (annotations have no score; "
                                       "write as_predictions)")
            if inst.iscrowd:
                report.lost.append(f"{iwhere}: iscrowd (Label Studio has no crowd regions)")
            held = _INSTANCE_HELD if inst.segmentation is None else {"result_id"}  # rotation: boxes only
            extra = sorted(set(inst.attributes) - held)
            if extra:
                report.lost.append(f"{iwhere}: attributes {', '.join(extra)}")
        task: dict[str, Any] = {"data": data}
        if as_predictions:
            pred: dict[str, Any] = {}
            if model_version is not None:
                pred["model_version"] = model_version
            if scores:
                pred["score"] = sum(scores) / len(scores)
            pred["result"] = results
            task["predictions"] = [pred]
        else:
            task["annotations"] = [{"result": results}]
        tasks.append(task)
        report.images += 1
    if label_config is not None:
        _write_config(aset, json_path.parent / label_config, controls, to_name, tasks, report)
    else:
        _lost_empty_categories(aset, report)
    atomic_write_json(json_path, tasks)
    return report


def _write_config(aset: AnnotationSet, path: Path, controls: dict[str, str], to_name: str,
                  tasks: list[dict[str, Any]], report: WriteReport) -> None:
    kinds = {r["type"] for task in tasks for a in task.get("annotations", task.get("predictions", []))
             for r in a["result"]}
    try:
        text = config_xml(aset.categories, controls, to_name, kinds)
    except DataError as exc:
        report.lost.append(f"{path.name}: not written ({exc})")
        _lost_empty_categories(aset, report)
        return
    atomic_write_text(path, text)


def _lost_empty_categories(aset: AnnotationSet, report: WriteReport) -> None:
    """Without the config, a category that no result names is not in the tasks."""
    counts = aset.category_counts()
    for c in aset.categories:
        if not counts.get(c.id):
            report.lost.append(f"category {c.id} {c.name!r}: has no annotations, so no result names it "
                               "(and no label config is written)")


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
