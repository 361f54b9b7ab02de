"""The single-run HTML report: header, metrics, protocol, curves, task plots, examples, environment."""

from __future__ import annotations

import statistics

import numpy as np
import yaml

from visiontl.report import plots
from visiontl.report.html import Html, contents, image, join, page, render_table, section, tag
from visiontl.report.protocol import display_threshold_note, evaluation_protocol
from visiontl.report.runs import Run
from visiontl.text import printable
from visiontl.report.tables import (class_names, environment_table, epoch_table, header_facts, headline_tables,
                                    logged_metrics, lr_columns, missing_note, per_class_table, task_group)

TASK_PLOTS_TITLE = {"detection": "Precision–recall and confusion", "segmentation": "Per-class IoU and confusion",
                    "classification": "Confusion matrix"}


def run_html(run: Run) -> str:
    parts = [
        ("metrics", "Metrics", metrics_section(run)),
        ("protocol", "Evaluation protocol", protocol_section(run)),
        ("curves", "Training curves", curves_section(run)),
        ("task-plots", TASK_PLOTS_TITLE[task_group(run.task)], task_plots_section(run)),
        ("examples", "Examples", examples_section(run)),
        ("environment", "Environment", environment_section(run)),
    ]
    body = [header(run), contents([(anchor, title) for anchor, title, _ in parts])]
    body += [section(anchor, title, content) for anchor, title, content in parts]
    return page(f"visiontl report: {run.name}", body, f"Report of {run.path.resolve()}.")


def header(run: Run) -> Html:
    rows = tag("tbody", *(tag("tr", tag("th", k), tag("td", v)) for k, v in header_facts(run)))
    missing = missing_note(run)
    unseen = display_threshold_note(run)
    return tag("header", tag("h1", f"Run report: {run.name}"), tag("table", rows, class_="facts"),
               tag("p", missing, class_="missing") if missing else "",
               tag("p", unseen, class_="missing") if unseen else "")


def metrics_section(run: Run) -> Html:
    parts: list[Html] = [render_table(t) for t in headline_tables(run)]
    if not parts:
        parts.append(tag("p", "metrics.json is not in this run directory (the run has not finished): the val metrics "
                              "of each epoch are under Training curves.", class_="note"))
    per_class = per_class_table(run)
    if per_class is not None:
        parts += [tag("h3", "Per class"), render_table(per_class)]
    return join(parts)


def protocol_section(run: Run) -> Html:
    rows = evaluation_protocol(run)
    body = tag("tbody", *(tag("tr", tag("th", topic), tag("td", text)) for topic, text in rows))
    recorded = isinstance(run.metrics.get("protocol"), dict) and run.metrics["protocol"]
    source = "as the run recorded it (metrics.json)" if recorded else "derived from the run's config and metrics"
    return join([tag("p", f"How the numbers above were computed, {source}.", class_="note"),
                 tag("table", body, class_="facts")])


def curves_section(run: Run) -> Html:
    if not run.log_rows:
        return tag("p", "log.csv is not in this run directory (an evaluation folder): no per-epoch curves.", class_="note")
    parts = []
    uri = plots.training_curves(run, logged_metrics(run), lr_columns(run))
    if uri:
        phases = {row.get("phase") for row in run.log_rows if row.get("phase") is not None}
        note = " Shaded bands and dashed lines mark the fine-tuning phases." if len(phases) > 1 else ""
        parts.append(image(uri, "training curves", f"Per epoch: losses, learning rate per parameter group, "
                                                   f"val metrics.{note}"))
    table = epoch_table(run)
    if table is not None:
        parts.append(tag("details", tag("summary", f"Per-epoch table ({len(table.rows)} epochs)"), render_table(table)))
    return join(parts)


def task_plots_section(run: Run) -> Html:
    group = task_group(run.task)
    if group == "detection":
        return detection_plots(run)
    names = class_names(run.metrics, ["IoU/"] if group == "segmentation" else ["precision/"])
    parts = []
    if group == "segmentation":
        ious = {n: run.metrics.get(f"IoU/{n}") for n in names}
        uri = plots.per_class_bars(ious, "IoU per class", "IoU")
        if uri:
            parts.append(image(uri, "per-class IoU", "IoU per class on the val split; – marks a class in neither "
                                                     "the ground truth nor the prediction."))
    matrix = run.metrics.get("confusion_matrix")
    if isinstance(matrix, list) and matrix:
        labels = names if len(names) == len(matrix) else [str(i) for i in range(len(matrix))]
        what = "pixels" if group == "segmentation" else "images"
        parts.append(image(plots.confusion_matrix(np.asarray(matrix), labels, f"confusion matrix ({what})"),
                           "confusion matrix", f"Rows: true class, columns: predicted class; numbers are {what}, "
                                               "colours each row's shares."))
    if not parts:
        parts.append(tag("p", "metrics.json holds no confusion matrix or per-class values to plot.", class_="note"))
    return join(parts)


def detection_plots(run: Run) -> Html:
    raw = run.raw
    if not raw:
        return tag("p", "eval_raw.npz is not in this run directory: no precision–recall curves or confusion matrix.",
                   class_="note")
    parts = []
    for iou_type in ("bbox", "segm"):
        if f"{iou_type}_precision" not in raw:
            continue
        precision = raw[f"{iou_type}_precision"]
        names = detection_class_names(run, iou_type, precision.shape[2])
        labels = [str(v) for v in raw.get(f"{iou_type}_area_labels", ["all"])]
        area = labels.index("all") if "all" in labels else 0
        uri = plots.pr_curves(precision, raw[f"{iou_type}_rec_thresholds"], raw[f"{iou_type}_iou_thresholds"], area,
                              names, iou_type)
        if uri:
            parts += [tag("h3", f"Precision–recall per class ({iou_type})"),
                      image(uri, f"{iou_type} precision-recall curves",
                            "Interpolated precision at each recall point, all areas, the largest detection limit; the "
                            "area under each curve is the class's AP. Classes without ground truth are left out.")]
    if "bbox_confusion" not in raw and parts:
        parts.append(tag("p", "eval_raw.npz has no bbox_confusion (a run from before it was recorded): no detection "
                              "confusion matrix.", class_="note"))
    if "bbox_confusion" in raw:
        matrix = np.asarray(raw["bbox_confusion"])
        names = detection_class_names(run, "bbox", matrix.shape[0] - 1)
        iou, score = _scalar(raw.get("bbox_confusion_iou")), _scalar(raw.get("bbox_confusion_score"))
        title = f"detection confusion (IoU ≥ {iou}, score ≥ {score})"
        parts += [tag("h3", "Detection confusion matrix"),
                  image(plots.confusion_matrix(matrix, [*names, "background"], title), "detection confusion matrix",
                        f"Boxes matched at IoU ≥ {iou}, detections scoring ≥ {score}. Rows: true class, columns: "
                        "predicted class. The background row counts false detections, the background column "
                        "missed objects.")]
    if not parts:
        parts.append(tag("p", "eval_raw.npz holds no precision arrays or confusion matrix.", class_="note"))
    return join(parts)


def detection_class_names(run: Run, iou_type: str, k: int) -> list[str]:
    """class_names from eval_raw.npz, else the metric keys' order (the evaluated categories'), else the ids."""
    stored = [str(n) for n in run.raw.get("class_names", [])]
    if len(stored) == k:
        return stored
    from_metrics = class_names(run.metrics, [f"{iou_type}/AP/"])
    if len(from_metrics) == k:
        return from_metrics
    ids = [str(int(i)) for i in run.raw.get(f"{iou_type}_category_ids", [])]
    return ids if len(ids) == k else [str(i) for i in range(k)]


def _scalar(value: object) -> str:
    return "?" if value is None else f"{float(np.asarray(value).ravel()[0]):g}"


def examples_section(run: Run) -> Html:
    parts = []
    scored = run.eval_images
    if scored and isinstance(scored.get("images"), list):
        values = [float(r["score"]) for r in scored["images"] if isinstance(r, dict)
                  and isinstance(r.get("score"), (int, float)) and not isinstance(r.get("score"), bool)]
        better = "higher" if scored.get("higher_is_better", True) else "lower"
        summary = f"{len(scored['images'])} val images scored by {scored.get('metric', 'a per-image score')} " \
                  f"({better} is better)"
        if values:
            summary += f"; mean {statistics.fmean(values):.4f}, median {statistics.median(values):.4f}"
        parts.append(tag("p", summary + " (eval_images.json).", class_="note"))
    shown = _scalar(run.raw.get("bbox_confusion_score")) if "bbox_confusion_score" in run.raw else None
    if shown is not None:
        parts.append(tag("p", f"Predictions drawn and counted in the per-image F1: detections scoring ≥ {shown} "
                              "(the display threshold, model.display_threshold).", class_="note"))
    if run.gallery is None:
        parts.append(tag("p", "This run has no gallery (gallery/index.json is not in the run directory).",
                         class_="note"))
        return join(parts)
    kinds = [k for k in ("worst", "best") if any(g.kind == k for g in run.gallery)]
    kinds += sorted({g.kind for g in run.gallery} - set(kinds))
    for kind in kinds:
        figures = []
        for item in (g for g in run.gallery if g.kind == kind):
            score = "no score" if item.score is None else f"score {item.score:.4f}"
            caption = f"{printable(item.file)} — {score}"  # names from gallery/index.json: control characters shown
            if item.png is None:
                figures.append(tag("figure", tag("figcaption", f"{caption} (picture {printable(item.png_name, 120)} "
                                                               "missing or not a PNG)")))
            else:
                figures.append(image(plots.png_uri(item.png), item.file, caption))
        title = {"worst": "Worst val images", "best": "Best val images"}.get(kind, f"{kind} val images")
        parts += [tag("h3", title), tag("p", "As the run drew them: ground truth and prediction of each image.", class_="note"),
                  tag("div", *figures, class_="gallery")]
    if not run.gallery:
        parts.append(tag("p", "gallery/index.json lists no images.", class_="note"))
    return join(parts)


def environment_section(run: Run) -> Html:
    parts = [render_table(environment_table(run), align_numbers=False)]
    parts.append(tag("h3", "Resolved config"))
    if run.config:
        parts.append(tag("pre", yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)))
    else:
        parts.append(tag("p", "config.yaml is not in this run directory.", class_="note"))
    return join(parts)
