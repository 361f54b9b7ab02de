"""`visiontl data stats`: what is in an annotated set, as a table and one PNG of histograms."""

from __future__ import annotations

import heapq
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from visiontl.data.annotations import AnnotationSet
from visiontl.text import printable

SIZE_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, math.inf)  # sqrt(box area), px; 32 and 96 are COCO's bounds
# Classes the table and the bar chart show: all of them up to this many, else this many with the most instances
# (a file may declare a million categories; stats.json lists every one).
TOP_CLASSES = 50


def dataset_stats(aset: AnnotationSet) -> dict[str, Any]:
    per_image = Counter(a.image_id for a in aset.instances)
    instances = Counter(a.category_id for a in aset.instances)
    images_with = Counter(c for _, c in {(a.image_id, a.category_id) for a in aset.instances})
    sizes = np.array([math.sqrt(max(a.bbox[2], 0) * max(a.bbox[3], 0)) for a in aset.instances])
    aspects = np.array([a.bbox[2] / a.bbox[3] for a in aset.instances if a.bbox[2] > 0 and a.bbox[3] > 0])
    counts = np.array([per_image.get(img.id, 0) for img in aset.images])
    return {
        "images": len(aset.images),
        "images_without_instances": int((counts == 0).sum()),
        "instances": len(aset.instances),
        "crowd": sum(a.iscrowd for a in aset.instances),
        "with_segmentation": sum(a.segmentation is not None for a in aset.instances),
        "classes": [{"id": c.id, "name": c.name, "instances": instances.get(c.id, 0),
                     "images": images_with.get(c.id, 0)} for c in aset.categories],
        "instances_per_image": _summary(counts),
        "box_size_px": _summary(sizes),
        "box_aspect_w_over_h": _summary(aspects),
        "box_size_histogram": {f"{lo}-{hi}": int(((sizes >= lo) & (sizes < hi)).sum())
                               for lo, hi in zip(SIZE_EDGES[:-1], SIZE_EDGES[1:])},
        "coco_area": {"small": int((sizes**2 <= 32**2).sum()), "medium": int(((sizes**2 > 32**2) & (sizes**2 < 96**2)).sum()),
                      "large": int((sizes**2 >= 96**2).sum())},
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"min": 0.0, "median": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": float(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
            "max": float(values.max())}


def shown_classes(classes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every class, in id order, when there are at most TOP_CLASSES; else the TOP_CLASSES with the most
    instances (ties in id order)."""
    if len(classes) <= TOP_CLASSES:
        return classes
    return heapq.nlargest(TOP_CLASSES, classes, key=lambda c: c["instances"])


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"{stats['images']} images ({stats['images_without_instances']} without instances), "
             f"{stats['instances']} instances ({stats['crowd']} crowd, {stats['with_segmentation']} with a mask or polygon)",
             "", f"{'id':>6} {'class':30s} {'instances':>10} {'images':>8}"]
    shown = shown_classes(stats["classes"])
    for c in shown:
        lines.append(f"{c['id']:>6} {printable(c['name'])[:30]:30s} {c['instances']:>10} {c['images']:>8}")
    if len(shown) < len(stats["classes"]):
        lines.append(f"(the {len(shown)} classes with the most instances, of {len(stats['classes'])}; stats.json "
                     "lists every one)")
    for key, label in (("instances_per_image", "instances per image"), ("box_size_px", "box size sqrt(w*h) px"),
                       ("box_aspect_w_over_h", "box aspect w/h")):
        s = stats[key]
        lines.append(f"{label:24s} min {s['min']:.3g}  median {s['median']:.3g}  mean {s['mean']:.3g}  max {s['max']:.3g}")
    a = stats["coco_area"]
    lines.append(f"{'COCO area ranges':24s} small {a['small']}  medium {a['medium']}  large {a['large']}")
    return "\n".join(lines)


def stats_png(aset: AnnotationSet) -> bytes:
    """Four panels: instances per class, instances per image, box size, box aspect ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_class = Counter(a.category_id for a in aset.instances)
    classes = shown_classes([{"id": c.id, "name": c.name, "instances": per_class.get(c.id, 0)} for c in aset.categories])
    names = [_label(c["name"]) for c in classes]
    per_image = Counter(a.image_id for a in aset.instances)
    counts = [per_image.get(img.id, 0) for img in aset.images]
    sizes = [math.sqrt(max(a.bbox[2], 0) * max(a.bbox[3], 0)) for a in aset.instances]
    aspects = [a.bbox[2] / a.bbox[3] for a in aset.instances if a.bbox[2] > 0 and a.bbox[3] > 0]

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    ax.barh(range(len(names)), [c["instances"] for c in classes], color="#3b7dd8")
    ax.set_yticks(range(len(names)), labels=names, fontsize=8 if len(names) < 30 else 5)
    ax.invert_yaxis()
    cut = len(classes) < len(aset.categories)
    ax.set_title(f"instances per class (top {len(classes)} of {len(aset.categories)})" if cut else "instances per class")
    ax = axes[0, 1]
    ax.hist(counts, bins=min(50, max(counts, default=0) + 1), color="#3b7dd8")
    ax.set_title("instances per image")
    ax.set_xlabel("instances")
    ax.set_ylabel("images")
    ax = axes[1, 0]
    if sizes:
        ax.hist(sizes, bins=_log_bins(sizes, 1.0, 2.0), color="#3b7dd8")
        ax.set_xscale("log")
    for bound, label in ((32, "32 (small | medium)"), (96, "96 (medium | large)")):
        ax.axvline(bound, color="#d84b3b", linestyle="--", linewidth=1)
        ax.text(bound, ax.get_ylim()[1] * 0.95, label, fontsize=7, rotation=90, va="top", ha="right")
    ax.set_title("box size sqrt(w·h), px")
    ax = axes[1, 1]
    if aspects:
        ax.hist(aspects, bins=_log_bins(aspects, 1e-2, 1.01), color="#3b7dd8")
        ax.set_xscale("log")
    ax.set_title("box aspect ratio w/h")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _log_bins(values: list[float], floor: float, least_top: float) -> np.ndarray:
    """40 log-spaced bin edges from the smallest value (at least `floor`) to the largest (at least
    `least_top`), always increasing: a set whose boxes all have one size has a range of zero width."""
    finite = [v for v in values if math.isfinite(v)] or [floor]  # a box of 1e200 x 1e200 px has an infinite area
    lo = max(min(finite), floor)
    hi = max(max(finite), least_top, lo * 2.0)
    return np.geomspace(lo, hi, 40)


def _label(name: str) -> str:
    """A class name as a tick label: escaped, cut, and with `$` taken literally (matplotlib would parse
    text between two of them as math, and fail on a name that is not valid math)."""
    return printable(name, 40).replace("$", r"\$")


def write_stats(aset: AnnotationSet, out_dir: Path) -> dict[str, Any]:
    from visiontl.atomic import atomic_write_bytes, atomic_write_json

    stats = dataset_stats(aset)
    atomic_write_json(Path(out_dir) / "stats.json", stats)
    atomic_write_bytes(Path(out_dir) / "stats.png", stats_png(aset))
    return stats
