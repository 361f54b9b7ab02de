"""The numbers of a report as plain tables of strings, so the HTML page and its Markdown twin show the same
values formatted the same way. Renderers escape; nothing here does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from visiontl.report.runs import Run

MISSING = "–"  # an en dash: NaN, None, or pycocotools' -1 ("no ground truth")

COCO_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
COCO_MEANING = {
    "AP": "AP at IoU 0.50:0.95, all areas, 100 detections",
    "AP50": "AP at IoU 0.50",
    "AP75": "AP at IoU 0.75",
    "APs": "AP, small objects",
    "APm": "AP, medium objects",
    "APl": "AP, large objects",
    "AR1": "AR, 1 detection per image",
    "AR10": "AR, 10 detections per image",
    "AR100": "AR, 100 detections per image",
    "ARs": "AR, small objects",
    "ARm": "AR, medium objects",
    "ARl": "AR, large objects",
}
IOU_TYPES = ("bbox", "segm")
DETECTION_TASKS = ("detection", "instance_segmentation")

HEADLINE = {
    "classification": ("accuracy", "macro_f1"),
    "segmentation": ("mIoU", "mDice", "pixel_accuracy", "mean_accuracy"),
}
# Per-class columns: (column label, metric-key prefix).
PER_CLASS = {
    "classification": (("precision", "precision/"), ("recall", "recall/"), ("F1", "f1/"), ("support", "support/")),
    "segmentation": (("IoU", "IoU/"), ("Dice", "Dice/")),
    "detection": (("bbox AP", "bbox/AP/"), ("bbox AP50", "bbox/AP50/")),
    "instance_segmentation": (("bbox AP", "bbox/AP/"), ("bbox AP50", "bbox/AP50/"), ("segm AP", "segm/AP/"),
                              ("segm AP50", "segm/AP50/")),
}
MISSING_NOTE = {
    "classification": f"{MISSING}: not computed",
    "segmentation": f"{MISSING}: the class is in neither the ground truth nor the prediction of the val split",
    "detection": f"{MISSING}: no ground truth in the val split (pycocotools reports -1 or NaN)",
}
# Top-level entries of metrics.json that are not scalar metrics.
NOT_SCALARS = ("best", "raw", "protocol", "confusion_matrix", "sklearn_head")
# log.csv columns that are bookkeeping rather than val metrics.
LOG_BOOKKEEPING = ("epoch", "step", "phase", "trainable_params", "train_loss", "val_loss", "seconds", "train_seconds",
                   "img_per_s", "gpu_mem_gib")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


_NUMERIC = re.compile(r"^[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?( ✱)?$|^" + re.escape(MISSING) + "$")


def looks_numeric(text: str) -> bool:
    """A formatted number (or the missing-value dash): renderers right-align these."""
    return bool(_NUMERIC.match(text))


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isnan(value) or value == -1


def format_metric(value: Any) -> str:
    """Metric values: 4 decimals for fractions and losses, integers as they are, MISSING for NaN and -1."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 10):
        return str(int(value))
    return f"{value:.4f}"


def format_value(value: Any) -> str:
    """Config and environment values: scalars as they read, lists and mappings as compact JSON."""
    if value is None:
        return "null"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def task_group(task: str) -> str:
    """The family whose tables a task shares: detection covers instance segmentation."""
    return "detection" if task in DETECTION_TASKS else task if task in HEADLINE else "classification"


def monitor_of(run: Run) -> str | None:
    monitor = run.setting("train.monitor")
    if monitor:
        return str(monitor)
    best = run.metrics.get("best")
    if isinstance(best, dict):
        keys = [k for k in best if k != "epoch"]
        if keys:
            return keys[0]
    return None


def header_facts(run: Run) -> list[tuple[str, str]]:
    """The first lines of the report: what was trained, how, and how well by the monitor metric."""
    facts = [("task", run.task)]
    if run.config:
        arch = run.setting("model.arch", "?")
        if run.task == "classification":
            arch += f" ({run.setting('model.head', '?')} head)"
        facts.append(("model", f"{arch} on {run.setting('model.backbone', '?')}, {weights_summary(run)}"))
        facts.append(("fine-tuning", finetune_summary(run)))
    facts += data_facts(run)
    monitor = monitor_of(run)
    if monitor:
        final = run.metrics.get(monitor)
        if final is None and run.log_rows:
            final = run.log_rows[-1].get(monitor)
        facts.append((f"{monitor} (final)", format_metric(final)))
        best = run.metrics.get("best")
        if isinstance(best, dict) and best.get("epoch") is not None:
            facts.append((f"{monitor} (best)", f"{format_metric(best.get(monitor))} at epoch {best['epoch']}"))
    return facts


def data_facts(run: Run) -> list[tuple[str, str]]:
    """From data.json: the val split taken from the train split, and the images left out before training."""
    facts = []
    val = run.data.get("val_from_train")
    if isinstance(val, dict) and isinstance(val.get("images"), list):
        facts.append(("val split", f"{_number(val.get('fraction'))} of the train split, seed {_number(val.get('seed'))}: "
                                   f"{len(val['images'])} images (listed in data.json)"))
    left = run.data.get("left_out")
    if isinstance(left, list) and left:
        shown = "; ".join(str(line) for line in left[:5]) + (f"; and {len(left) - 5} more" if len(left) > 5 else "")
        facts.append(("left out", f"{len(left)} image(s) failed the checks before training and were left out "
                                  f"(data.on_bad_image=skip): {shown}"))
    return facts


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def missing_files(run: Run) -> list[str]:
    """The contract's files this run should have but lacks: eval_raw.npz only for detection (the other tasks
    have no arrays), log.csv not for an evaluation folder."""
    expected = [name for name in run.missing if name != "eval_raw.npz" or task_group(run.task) == "detection"]
    if run.info.get("command") == "evaluate":
        expected = [name for name in expected if name != "log.csv"]
    return expected


def missing_note(run: Run) -> str:
    missing = missing_files(run)
    if not missing:
        return ""
    return (f"Not in this run directory: {', '.join(missing)}. Older runs lack the later files; this report "
            "shows what is there.")


def weights_summary(run: Run) -> str:
    weights = run.setting("model.weights", "?")
    if weights == "none":
        return "random initialisation"
    if weights == "imagenet":
        return "ImageNet weights"
    return f"weights from {weights}"


def finetune_summary(run: Run) -> str:
    """The strategy as configured, then the phases as they ran (run.json, in optimizer steps) where the run
    recorded them: a budget shorter than the phases scales them, and only the ran ones are told."""
    strategy = run.setting("finetune.strategy", "?")
    if strategy == "partial":
        written = f"partial (first {run.setting('finetune.freeze_stages')} backbone stages frozen)"
    elif strategy == "staged":
        stages = [s for s in run.setting("finetune.stages") or [] if isinstance(s, dict)]
        written = "staged: " + "; then ".join(_phase_summary(s) for s in stages)
    else:
        written = str(strategy)
    ran = [p for p in run.info.get("phases") or [] if isinstance(p, dict)]
    if not ran:
        return written
    return f"{written}. Ran: " + "; ".join(_ran_summary(p) for p in ran)


def _phase_summary(phase: dict[str, Any]) -> str:
    epochs, unfreeze = phase.get("epochs"), phase.get("unfreeze")
    what = "head only" if unfreeze == 0 else "all stages" if unfreeze == "all" else f"deepest {unfreeze} stages"
    lr = f" at lr {phase['lr']}" if phase.get("lr") is not None else ""
    return f"{epochs} epoch{'' if epochs == 1 else 's'} {what}{lr}"


def _ran_summary(phase: dict[str, Any]) -> str:
    first, last, planned = phase.get("first_step"), phase.get("last_step"), phase.get("planned_steps")
    stages, of = phase.get("trainable_stages"), phase.get("backbone_stages")
    what = "head only" if stages == 0 else "all stages" if stages == of else f"deepest {stages} of {of} stages"
    cut = ""
    if isinstance(first, int) and isinstance(last, int) and isinstance(planned, int) and last - first + 1 < planned:
        cut = f" (stopped before its {planned} steps)"
    return f"phase {phase.get('phase')} steps {first}-{last} {what} at lr {phase.get('lr')}{cut}"


def headline_tables(run: Run) -> list[Table]:
    """The headline scalars (the task's own first), then any other scalars of metrics.json."""
    m = run.metrics
    tables = []
    shown: set[str] = set()
    if task_group(run.task) == "detection":
        types = [t for t in IOU_TYPES if f"{t}/AP" in m]
        if types:
            rows = [[name, COCO_MEANING[name], *(format_metric(m.get(f"{t}/{name}")) for t in types)] for name in COCO_NAMES]
            shown.update(f"{t}/{name}" for t in types for name in COCO_NAMES)
            table = Table(["metric", "meaning", *types], rows)
            if any(is_missing(m.get(f"{t}/{name}")) for t in types for name in COCO_NAMES):
                table.notes.append(MISSING_NOTE["detection"])
            tables.append(table)
    else:
        keys = [k for k in HEADLINE[task_group(run.task)] if k in m]
        shown.update(keys)
        if keys:
            tables.append(Table(["metric", "value"], [[k, format_metric(m[k])] for k in keys]))
    extras = [k for k, v in m.items() if k not in shown and k not in NOT_SCALARS and "/" not in k
              and isinstance(v, (int, float)) and not isinstance(v, bool)]
    if extras:
        tables.append(Table(["other", "value"], [["loss (val)" if k == "loss" else k, format_metric(m[k])] for k in extras]))
    return tables


def class_names(metrics: dict[str, Any], prefixes: list[str]) -> list[str]:
    """Class names in the order metrics.json lists them (the label order) under any of the prefixes."""
    names: list[str] = []
    for key in metrics:
        for prefix in prefixes:
            if key.startswith(prefix) and key[len(prefix):] not in names:
                names.append(key[len(prefix):])
    return names


def per_class_table(run: Run) -> Table | None:
    columns = [(label, prefix) for label, prefix in PER_CLASS.get(run.task, PER_CLASS[task_group(run.task)])
               if any(k.startswith(prefix) for k in run.metrics)]
    if not columns:
        return None
    names = class_names(run.metrics, [prefix for _, prefix in columns])
    rows = [[name, *(format_metric(run.metrics.get(prefix + name)) for _, prefix in columns)] for name in names]
    table = Table(["class", *(label for label, _ in columns)], rows)
    if any(cell == MISSING for row in rows for cell in row[1:]):
        table.notes.append(MISSING_NOTE[task_group(run.task)])
    return table


def logged_metrics(run: Run) -> list[str]:
    """The val metrics log.csv logs per epoch (everything that is not bookkeeping or an LR)."""
    return [c for c in run.log_columns if c not in LOG_BOOKKEEPING and not c.startswith("lr/")]


def lr_columns(run: Run) -> list[str]:
    return [c for c in run.log_columns if c.startswith("lr/")]


def epoch_table(run: Run) -> Table | None:
    """One row per epoch. Of the LRs only the head's: the other groups are in log.csv and the LR plot."""
    if not run.log_rows:
        return None
    lrs = lr_columns(run)
    lr_shown = ["lr/head"] if "lr/head" in lrs else lrs[-1:]
    columns = [c for c in run.log_columns if not c.startswith("lr/") or c in lr_shown]
    rows = [[_format_log_cell(c, row.get(c)) for c in columns] for row in run.log_rows]
    table = Table(columns, rows)
    if len(lrs) > len(lr_shown):
        table.notes.append(f"learning rates of the other parameter groups ({', '.join(c[3:] for c in lrs if c not in lr_shown)}) "
                           "are in log.csv")
    return table


def _format_log_cell(column: str, value: float | None) -> str:
    if value is None:
        return MISSING
    if column in ("epoch", "step", "phase", "trainable_params"):
        return str(int(value))
    if column in ("seconds", "train_seconds", "img_per_s"):
        return f"{value:.1f}"
    if column == "gpu_mem_gib":
        return f"{value:.2f}"
    if column.startswith("lr/"):
        return f"{value:.3g}"
    return format_metric(value)


def mean_img_per_s(run: Run) -> float | None:
    values = [v for v in run.column("img_per_s") if v is not None]
    return sum(values) / len(values) if values else None


def environment_table(run: Run) -> Table:
    rows = []
    for key, value in run.info.items():
        if key == "wall_seconds" and isinstance(value, (int, float)):
            rows.append([key, f"{value:.1f} s ({_duration(value)})"])
        else:
            rows.append([key, format_value(value)])
    speed = mean_img_per_s(run)
    if speed is not None:
        rows.append(["train img/s (mean over epochs, log.csv)", f"{speed:.1f}"])
    if run.log_rows:
        rows.append(["epochs logged", str(len(run.log_rows))])
    table = Table(["field", "value"], rows)
    if not run.info:
        table.notes.append("run.json is not in this run directory: versions, device and timing were not recorded")
    return table


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"
