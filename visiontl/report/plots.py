"""The report's figures, each rendered to a PNG and returned as a `data:image/png;base64,...` URI, so the
page needs no other file and no network.

matplotlib runs on the Agg backend (no display needed). Every string from a run directory goes through
`short_label`, which escapes `$`, so a class named `$x$` is drawn as written instead of as math text (which
could also fail to parse). Every figure is closed once rendered.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from visiontl.report.runs import Run  # noqa: E402

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8, "legend.framealpha": 0.8}
PANEL = (4.6, 3.0)  # inches per curve panel; at 100 dpi two panels fill the page's width
DPI = 100
MAX_LEGEND_CLASSES = 20  # beyond this a per-class legend hides the curves
MAX_ANNOTATED_CLASSES = 30  # beyond this a confusion matrix's cell numbers are unreadable


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return png_uri(buf.getvalue())


def short_label(name: str, limit: int = 24) -> str:
    """A name from the data, shortened to `limit` characters and safe from math-text parsing."""
    name = name if len(name) <= limit else name[: limit - 1] + "…"
    return name.replace("$", r"\$")


def _grid(panels: int, columns: int = 2) -> tuple[plt.Figure, list[plt.Axes]]:
    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL[0] * columns, PANEL[1] * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.set_visible(False)
    return fig, flat[:panels]


def _series(run: Run, column: str) -> tuple[list[float], list[float]]:
    points = [(row["epoch"], row.get(column)) for row in run.log_rows if row.get("epoch") is not None]
    points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
    return [p[0] for p in points], [p[1] for p in points]


def _mark_phases(ax: plt.Axes, run: Run) -> None:
    """Shade every other finetune phase and label where each later phase starts."""
    phases = [(row.get("epoch"), row.get("phase")) for row in run.log_rows]
    starts = [(epoch, phase) for i, (epoch, phase) in enumerate(phases)
              if epoch is not None and phase is not None and (i == 0 or phases[i - 1][1] != phase)]
    if len(starts) < 2:
        return
    last_epoch = max(epoch for epoch, _ in phases if epoch is not None)
    bounds = [epoch - 0.5 for epoch, _ in starts] + [last_epoch + 0.5]
    for i, (_, phase) in enumerate(starts):
        if i % 2:
            ax.axvspan(bounds[i], bounds[i + 1], color="tab:gray", alpha=0.10, lw=0)
        if i:
            ax.axvline(bounds[i], color="tab:gray", ls="--", lw=1)
            # At the foot of the panel: legends and titles sit at the top.
            ax.text(bounds[i], 0.02, f" phase {int(phase)}", transform=ax.get_xaxis_transform(), va="bottom",
                    ha="left", fontsize=8, color="dimgray")


def _epoch_axis(ax: plt.Axes, epochs: Sequence[float]) -> None:
    """Whole epochs on the x axis; one epoch alone sits in the middle of its own tick, not on an axis from
    0.945 to 1.05 (matplotlib's margins around a single value)."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and max(epochs) - min(epochs) < 1:
        only = min(epochs)
        ax.set_xlim(only - 1, only + 1)
        ax.set_xticks([only])


def _epochs(runs: Sequence[Run]) -> list[float]:
    return sorted({row["epoch"] for run in runs for row in run.log_rows if row.get("epoch") is not None})


def training_curves(run: Run, metrics: Sequence[str], lr_columns: Sequence[str]) -> str | None:
    """Losses, the LR of every parameter group, and each logged val metric, per epoch."""
    fig = training_figure(run, metrics, lr_columns)
    return None if fig is None else figure_uri(fig)


def training_figure(run: Run, metrics: Sequence[str], lr_columns: Sequence[str]) -> plt.Figure | None:
    """The figure of `training_curves` (for a caller to render or look into; plt.close it when done)."""
    epochs = _epochs([run])
    ms = 3 if len(epochs) > 1 else 7  # one epoch: each curve is a single point, drawn large enough to see
    loss_columns = [c for c in ("train_loss", "val_loss") if _series(run, c)[0]]
    lr_columns = [c for c in lr_columns if _series(run, c)[0]]
    metrics = [m for m in metrics if _series(run, m)[0]]
    panels = (["loss"] if loss_columns else []) + (["lr"] if lr_columns else []) + list(metrics)
    if not panels:
        return None
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(panels))
        for ax, panel in zip(axes, panels):
            if panel == "loss":
                for column in loss_columns:
                    ax.plot(*_series(run, column), marker="o", ms=ms, label=column)
                ax.set_title("loss per epoch")
                ax.legend()
            elif panel == "lr":
                series = {column[3:]: _series(run, column) for column in lr_columns}
                # LRs span decades, so a log scale where there is anything positive; a frozen group's LR of 0
                # cannot sit on it and is left out (the per-epoch table and log.csv show it).
                log_scale = any(y > 0 for _, ys in series.values() for y in ys)
                for name, (xs, ys) in series.items():
                    points = [(x, y) for x, y in zip(xs, ys) if y > 0 or not log_scale]
                    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=ms - 1, lw=1.2,
                            label=short_label(name, 30))
                if log_scale:
                    ax.set_yscale("log")
                frozen = log_scale and any(y <= 0 for _, ys in series.values() for y in ys)
                ax.set_title("learning rate per parameter group" + (" (log scale" + ("; 0 not drawn)" if frozen else ")")
                                                                    if log_scale else ""))
                ax.legend(ncol=2 if len(lr_columns) > 4 else 1)
            else:
                ax.plot(*_series(run, panel), marker="o", ms=ms, color="tab:green")
                ax.set_title(f"val {short_label(panel, 40)}")
            _epoch_axis(ax, epochs)
            _mark_phases(ax, run)
        fig.tight_layout()
        return fig


def precision_recall_series(precision: np.ndarray, rec_thresholds: np.ndarray, iou_thresholds: np.ndarray,
                            area_index: int) -> list[tuple[str, str, dict[int, tuple[np.ndarray, np.ndarray, float]]]]:
    """From pycocotools' precision [T, R, K, A, M] at one area range and the largest detection limit: per
    class k, (recall points, precision, AP) at IoU 0.50 and averaged over all IoU thresholds (COCO's AP).
    Entries of -1 (no ground truth for the class) are left out; a class with none left is absent."""
    p = np.asarray(precision, dtype=np.float64)[:, :, :, area_index, -1]  # [T, R, K]
    recall = np.asarray(rec_thresholds, dtype=np.float64)
    ious = np.asarray(iou_thresholds, dtype=np.float64)
    t50 = int(np.argmin(np.abs(ious - 0.5)))
    valid = p > -1
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_over_iou = np.where(valid.any(axis=0), np.where(valid, p, 0).sum(axis=0) / valid.sum(axis=0), -1)
    out = []
    for title, ap_name, prec in ((f"IoU {ious[t50]:.2f}", "AP50", p[t50]),
                                 (f"mean over IoU {ious.min():.2f}:{ious.max():.2f}", "AP", mean_over_iou)):
        curves = {}
        for k in range(prec.shape[1]):
            ok = prec[:, k] > -1
            if ok.any():
                curves[k] = (recall[ok], prec[ok, k], float(prec[ok, k].mean()))
        out.append((title, ap_name, curves))
    return out


def pr_curves(precision: np.ndarray, rec_thresholds: np.ndarray, iou_thresholds: np.ndarray, area_index: int,
              names: Sequence[str], title: str) -> str | None:
    """Per-class precision–recall curves, one panel at IoU 0.50 and one averaged over the IoU thresholds;
    with many classes the per-class legend gives way to a thick mean curve."""
    panels = precision_recall_series(precision, rec_thresholds, iou_thresholds, area_index)
    if not any(curves for _, _, curves in panels):
        return None
    k = np.asarray(precision).shape[2]
    legend = k <= MAX_LEGEND_CLASSES
    with plt.rc_context(STYLE):
        fig, axes = _grid(2)
        for ax, (subtitle, ap_name, curves) in zip(axes, panels):
            for c, (recall, prec, ap) in curves.items():
                name = short_label(names[c]) if c < len(names) else str(c)
                ax.plot(recall, prec, lw=1.4 if legend else 0.7, alpha=1.0 if legend else 0.5,
                        label=f"{name} ({ap_name} {ap:.3f})" if legend else None)
            if not legend and curves:
                grid = np.asarray(rec_thresholds, dtype=np.float64)
                stacked = np.array([np.interp(grid, r, p, left=np.nan, right=np.nan) for r, p, _ in curves.values()])
                ax.plot(grid, np.nanmean(stacked, axis=0), color="black", lw=2.2, label="mean over classes")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"{title}: {subtitle}")
            if curves:
                ax.legend(loc="lower left", fontsize=7 if k > 8 else 8)
        fig.tight_layout()
        return figure_uri(fig)


def confusion_matrix(matrix: np.ndarray, labels: Sequence[str], title: str) -> str:
    """Rows true, columns predicted; colours are each row's shares (so rare classes are as visible as common
    ones), numbers are counts. With many classes the numbers are dropped and the labels shrink."""
    counts = np.asarray(matrix, dtype=np.float64)
    k = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = float(np.clip(0.42 * k + 2.6, 4.6, 14.0))
    annotate = k <= MAX_ANNOTATED_CLASSES
    tick_size = 8 if k <= 12 else max(3.0, min(7.0, 260.0 / k))
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(side + 1.0, side))
        image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_label("share of the true class (row)")
        names = [short_label(n, 18 if k > 12 else 24) for n in labels]
        upright = k <= 6 and max(len(n) for n in names) <= 6  # short labels only fit side by side
        ax.set_xticks(range(k), names, rotation=0 if upright else 45, ha="center" if upright else "right",
                      fontsize=tick_size, rotation_mode="anchor")
        ax.set_yticks(range(k), names, fontsize=tick_size)
        ax.set(xlabel="predicted", ylabel="true", title=title)
        if annotate:
            size = max(5.0, min(9.0, 140.0 / k))
            for i in range(k):
                for j in range(k):
                    if counts[i, j]:
                        ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=size,
                                color="white" if shares[i, j] > 0.55 else "black")
        fig.tight_layout()
        return figure_uri(fig)


def per_class_bars(values: dict[str, float | None], title: str, xlabel: str) -> str | None:
    """Horizontal bars, one per class in label order; a class without a value is marked, not drawn as 0."""
    if not values:
        return None
    names = list(values)
    k = len(names)
    height = float(np.clip(0.26 * k + 1.2, 2.4, 24.0))
    font = 8 if k <= 40 else max(3.0, 320.0 / k)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(PANEL[0] * 1.5, height))
        y = np.arange(k)
        numbers = [v if v is not None and math.isfinite(v) and v != -1 else None for v in values.values()]
        ax.barh(y, [v or 0.0 for v in numbers], color="tab:blue", height=0.7)
        for i, v in enumerate(numbers):
            ax.text((v or 0.0) + 0.01, i, "–" if v is None else f"{v:.3f}", va="center", fontsize=font)
        ax.set_yticks(y, [short_label(n) for n in names], fontsize=font)
        ax.invert_yaxis()  # first class at the top, as in the tables
        ax.set(xlim=(0, 1.1), xlabel=xlabel, title=title)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        return figure_uri(fig)


def comparison_curves(groups: Sequence[tuple[str, Sequence[Run]]], columns: Sequence[str]) -> str | None:
    """One panel per column; one colour per group; a group's runs thin, their per-epoch mean thick."""
    columns = [c for c in columns if any(_series(r, c)[0] for _, runs in groups for r in runs)]
    if not columns:
        return None
    colours = plt.get_cmap("tab10")
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(columns))
        for ax, column in zip(axes, columns):
            for g, (label, runs) in enumerate(groups):
                colour = colours(g % 10)
                series = [_series(r, column) for r in runs]
                if len(runs) > 1:
                    for xs, ys in series:
                        ax.plot(xs, ys, color=colour, lw=0.8, alpha=0.45)
                    by_epoch: dict[float, list[float]] = {}
                    for xs, ys in series:
                        for x, y in zip(xs, ys):
                            by_epoch.setdefault(x, []).append(y)
                    epochs = sorted(by_epoch)
                    ax.plot(epochs, [float(np.mean(by_epoch[e])) for e in epochs], color=colour, lw=2.4,
                            label=f"{short_label(label, 30)} (mean of {len(runs)})")
                else:
                    ax.plot(*series[0], color=colour, lw=2.0, marker="o", ms=3, label=short_label(label, 30))
            ax.set_title(short_label(column, 40) + " per epoch")
            _epoch_axis(ax, _epochs([r for _, runs in groups for r in runs]))
        axes[0].legend()
        fig.tight_layout()
        return figure_uri(fig)
