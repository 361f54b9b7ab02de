"""The comparison HTML page: groups of runs, their metrics with spread, what differs, overlaid curves."""

from __future__ import annotations

from visiontl.report import plots
from visiontl.report.compare import BEYOND_NOISE_RULE, Comparison, Difference, Stat, delta_text, stat_text
from visiontl.report.html import Html, contents, image, join, page, section, tag
from visiontl.report.tables import logged_metrics


def comparison_html(comparison: Comparison) -> str:
    groups = comparison.groups
    runs = sum(g.n for g in groups)
    parts = [
        ("groups", "Runs and groups", groups_section(comparison)),
        ("metrics", "Metrics", metrics_section(comparison)),
        ("differs", "What differs", differs_section(comparison)),
        ("curves", "Curves", curves_section(comparison)),
    ]
    body = [tag("header", tag("h1", f"Comparison of {runs} runs in {len(groups)} groups"),
                tag("p", "Runs whose resolved configs are equal apart from train.seed and run.* form one group: the "
                         "same experiment repeated with other seeds.", class_="note")),
            contents([(anchor, title) for anchor, title, _ in parts])]
    body += [section(anchor, title, content) for anchor, title, content in parts]
    return page("visiontl comparison", body, "Comparison of " + ", ".join(str(r.path.resolve()) for g in groups
                                                                         for r in g.runs) + ".")


def groups_section(comparison: Comparison) -> Html:
    rows = []
    for g in comparison.groups:
        seeds = ", ".join(str(r.setting("train.seed", "?")) for r in g.runs)
        rows.append(tag("tr", tag("td", g.label), tag("td", ", ".join(g.run_labels)), tag("td", str(g.n), class_="num"),
                        tag("td", seeds)))
    head = tag("thead", tag("tr", tag("th", "group"), tag("th", "runs (directory names)"), tag("th", "n", class_="num"),
                            tag("th", "train.seed")))
    return tag("div", tag("table", head, tag("tbody", *rows)), class_="scroll")


def metrics_section(comparison: Comparison) -> Html:
    groups = comparison.groups
    if not comparison.metrics:
        return tag("p", "The runs have no scalar metric in common (metrics.json).", class_="note")
    header = [tag("th", "metric")]
    for i, g in enumerate(groups):
        header.append(tag("th", g.label, class_="num"))
        if i:
            header.append(tag("th", "Δ vs first", class_="num"))
    rows = []
    for metric in comparison.metrics:
        cells = [tag("td", metric)]
        for i, stat in enumerate(comparison.stats[metric]):
            cells.append(stat_cell(stat))
            if i:
                cells.append(delta_cell(comparison.differences[metric][i - 1]))
        rows.append(tag("tr", *cells))
    table = tag("table", tag("thead", tag("tr", *header)), tag("tbody", *rows))
    warnings = [tag("p", w, class_="missing") for w in comparison.count_warnings]
    return join([*warnings,
                 tag("p", "Each group: its value for a single run; for repeats the mean ± sample standard deviation, "
                          f"then [min, max] and n. Δ vs first: each group's mean minus that of the first group "
                          f"({groups[0].label}).", class_="note"),
                 tag("p", BEYOND_NOISE_RULE, class_="note"), tag("div", table, class_="scroll")])


def stat_cell(stat: Stat) -> Html:
    value, detail = stat_text(stat)
    return tag("td", value, tag("span", detail, class_="detail") if detail else "", class_="num")


def delta_cell(diff: Difference) -> Html:
    return tag("td", delta_text(diff), class_="num beyond" if diff.beyond_noise else "num")


def differs_section(comparison: Comparison) -> Html:
    groups = comparison.groups
    if len(groups) < 2:
        return tag("p", "All runs are one group: their configs differ only in train.seed and run.*.", class_="note")
    if not comparison.differing:
        return tag("p", "No config key differs between the groups that have a config.yaml.", class_="note")
    head = tag("thead", tag("tr", tag("th", "config key"), *(tag("th", g.label) for g in groups)))
    body = tag("tbody", *(tag("tr", tag("td", key), *(tag("td", v) for v in values))
                          for key, values in comparison.differing))
    return join([tag("p", "Config keys (dotted) whose values differ between groups; train.seed and run.* are left out.",
                     class_="note"), tag("div", tag("table", head, body), class_="scroll")])


def curves_section(comparison: Comparison) -> Html:
    runs = [r for g in comparison.groups for r in g.runs]
    columns = ["train_loss", "val_loss"]
    for run in runs:
        columns += [c for c in logged_metrics(run) if c not in columns]
    uri = plots.comparison_curves([(g.label, g.runs) for g in comparison.groups], columns)
    if uri is None:
        return tag("p", "None of the runs has a log.csv: no curves.", class_="note")
    return image(uri, "overlaid training curves", "One colour per group; a group's seeds thin, their per-epoch mean "
                                                  "thick.")
