"""Runs side by side: which runs are repeats of one setting, their spread, and how settings differ.

Runs whose resolved configs are equal once `train.seed` and the `run.*` keys are removed are one group:
the same experiment with different seeds. A group of two or more shows its mean, sample standard deviation
and range. A difference between groups is marked when it is larger than the two groups' standard
deviations added together (`BEYOND_NOISE_RULE`): a rule of thumb to tell a gain from seed noise, not a
significance test. Sample counts (num_samples, support/<class>) are not metrics: they are left out of the
table, and flagged when they differ, since then the runs were not scored on the same val set.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from visiontl.report.runs import Run
from visiontl.report.tables import COCO_NAMES, HEADLINE, IOU_TYPES, MISSING, NOT_SCALARS, format_metric, is_missing

IGNORED_KEYS = ("train.seed",)
IGNORED_SECTIONS = ("run",)
BEYOND_NOISE_RULE = (
    "A difference from the first group is marked ✱ when its size is larger than the two groups' sample standard "
    "deviations added together (|Δ| > sd₁ + sd₂, a single run counting 0), and only where at least one of the two "
    "groups repeats its setting with n ≥ 2 seeds. Unmarked differences are within seed noise or have no spread to "
    "be judged against. This is a rule of thumb, not a significance test: with few seeds, add runs before trusting "
    "a small gain."
)


@dataclass
class Group:
    label: str
    runs: list[Run]
    run_labels: list[str]

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass
class Stat:
    n: int  # runs with a value (NaN and -1 are no value)
    mean: float | None
    sd: float | None  # sample standard deviation (n - 1); None for fewer than two values
    low: float | None
    high: float | None


@dataclass
class Difference:
    delta: float | None
    beyond_noise: bool | None  # None: neither group has a spread to judge against


@dataclass
class Comparison:
    groups: list[Group]
    metrics: list[str]
    stats: dict[str, list[Stat]]  # metric -> one Stat per group
    differences: dict[str, list[Difference]]  # metric -> one per group after the first
    differing: list[tuple[str, list[str]]]  # dotted config key -> its value in each group
    count_warnings: list[str]  # sample counts that differ between runs: their numbers are not comparable


def compare(runs: list[Run]) -> Comparison:
    groups = group_runs(runs)
    shared = common_metrics(runs)
    metrics = [m for m in shared if not is_count(m)]
    stats = {m: [metric_stat(g, m) for g in groups] for m in metrics}
    differences = {m: [difference(stats[m][0], s) for s in stats[m][1:]] for m in metrics}
    return Comparison(groups, metrics, stats, differences, differing_keys(groups), count_warnings(groups, shared))


def is_count(metric: str) -> bool:
    """Sample counts (num_samples, num_pixels, support/<class>) say what was scored, not how well."""
    return metric.startswith(("num_", "support/"))


# Counts of what was scored (not of what a model predicted, like num_detections): equal for runs on one val set.
SCORED_COUNTS = ("num_samples", "num_images", "num_pixels")


def count_warnings(groups: list[Group], metrics: list[str]) -> list[str]:
    warnings = []
    for metric in (m for m in metrics if m in SCORED_COUNTS):
        values = [(label, run.metrics[metric]) for g in groups for label, run in zip(g.run_labels, g.runs)]
        if len({v for _, v in values}) > 1:
            warnings.append(f"{metric} differs between the runs ({', '.join(f'{label}: {v}' for label, v in values)}): "
                            "they were not scored on the same val set, so their metrics do not compare directly.")
    return warnings


def run_labels(runs: list[Run]) -> list[str]:
    """Directory names; where two runs share one, `parent/name` for both."""
    names = [r.name for r in runs]
    return [f"{r.path.resolve().parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def setting_of(run: Run) -> dict[str, Any]:
    """The config minus what does not define the experiment: the seed and where the run was written."""
    return {k: v for k, v in flatten(run.config).items()
            if k not in IGNORED_KEYS and k.split(".", 1)[0] not in IGNORED_SECTIONS}


def group_runs(runs: list[Run]) -> list[Group]:
    """Groups in the order their first run was given. A run without config.yaml is a group of its own: there
    is nothing to show it repeats another."""
    labels = run_labels(runs)
    keyed: dict[str, tuple[list[Run], list[str]]] = {}
    for run, label in zip(runs, labels):
        key = json.dumps(setting_of(run), sort_keys=True, default=str) if run.config else f"no config: {run.path.resolve()}"
        members = keyed.setdefault(key, ([], []))
        members[0].append(run)
        members[1].append(label)
    return [Group(group_label(names), members, names) for members, names in keyed.values()]


def group_label(names: list[str]) -> str:
    if len(names) <= 3:
        return " + ".join(names)
    return f"{names[0]} + {len(names) - 1} more"


def common_metrics(runs: list[Run]) -> list[str]:
    """Scalar metrics every run has: the task's headline metrics first, then the rest in the first run's order."""
    def scalars(run: Run) -> list[str]:
        return [k for k, v in run.metrics.items()
                if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)]

    shared = scalars(runs[0])
    for run in runs[1:]:
        present = set(scalars(run))
        shared = [k for k in shared if k in present]
    headline = [*(f"{t}/{n}" for t in IOU_TYPES for n in COCO_NAMES), *(k for keys in HEADLINE.values() for k in keys)]
    first = [k for k in headline if k in shared]
    return first + [k for k in shared if k not in first]


def metric_stat(group: Group, metric: str) -> Stat:
    values = [float(r.metrics[metric]) for r in group.runs if not is_missing(r.metrics.get(metric))]
    if not values:
        return Stat(0, None, None, None, None)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), statistics.fmean(values), sd, min(values), max(values))


def difference(first: Stat, other: Stat) -> Difference:
    if first.mean is None or other.mean is None:
        return Difference(None, None)
    delta = other.mean - first.mean
    if first.sd is None and other.sd is None:
        return Difference(delta, None)
    spread = (first.sd or 0.0) + (other.sd or 0.0)
    return Difference(delta, abs(delta) > spread and not math.isclose(abs(delta), spread, abs_tol=1e-12))


def differing_keys(groups: list[Group]) -> list[tuple[str, list[str]]]:
    """Dotted config keys whose value is not the same in every group that has a config (each group's first run
    speaks for it: within a group the settings are equal by construction)."""
    if len(groups) < 2:
        return []
    settings = [setting_of(g.runs[0]) if g.runs[0].config else None for g in groups]
    known = [s for s in settings if s is not None]
    keys: list[str] = []
    for s in known:
        keys += [k for k in s if k not in keys]
    rows = []
    for key in keys:
        values = [("(no config.yaml)" if s is None else _config_text(s[key]) if key in s else "(absent)") for s in settings]
        # Runs without a config cannot differ in a key they do not record; only the others decide.
        if len({v for v, s in zip(values, settings) if s is not None}) > 1:
            rows.append((key, values))
    return rows


def _config_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "null" if value is None else str(value)


def stat_text(stat: Stat) -> tuple[str, str]:
    """(value, detail): a single run's plain value; a group's `mean ± sd` and `[min, max], n=N`."""
    if stat.mean is None:
        return MISSING, ""
    if stat.sd is None:
        return format_metric(stat.mean), ""
    return (f"{stat.mean:.4f} ± {stat.sd:.4f}", f"[{stat.low:.4f}, {stat.high:.4f}], n={stat.n}")


def delta_text(diff: Difference) -> str:
    if diff.delta is None:
        return MISSING
    return f"{diff.delta:+.4f}" + (" ✱" if diff.beyond_noise else "")
