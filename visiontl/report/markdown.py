"""The Markdown twins of the report pages (GitHub-flavoured, for pasting into a pull request): the same
numbers as the HTML, without the pictures.

Text from a run directory is escaped so that it stays text: `|` would end a table cell, a newline would end
the row, and `<` could start HTML, which GitHub would render.
"""

from __future__ import annotations

from visiontl.report.compare import BEYOND_NOISE_RULE, Comparison, delta_text, stat_text
from visiontl.report.protocol import display_threshold_note, evaluation_protocol
from visiontl.report.runs import Run
from visiontl.report.tables import (Table, environment_table, epoch_table, header_facts, headline_tables,
                                    looks_numeric, missing_note, per_class_table)


def md_text(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("<", "\\<").replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def md_table(table: Table) -> list[str]:
    """A GFM table; columns of numbers right-aligned."""
    numeric = [i > 0 and bool(table.rows) and all(looks_numeric(row[i]) for row in table.rows)
               for i in range(len(table.header))]
    lines = ["| " + " | ".join(md_text(h) for h in table.header) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in table.rows]
    lines += [f"\n{md_text(note)}" for note in table.notes]
    return lines + [""]


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`, so the text cannot close it."""
    ticks = 3
    while "`" * ticks in text:
        ticks += 1
    return "`" * ticks


def run_markdown(run: Run) -> str:
    lines = [f"# Run report: {md_text(run.name)}", ""]
    lines += [f"- **{md_text(k)}**: {md_text(v)}" for k, v in header_facts(run)]
    note, unseen = missing_note(run), display_threshold_note(run)
    lines += ["", f"_{md_text(note)}_" if note else "", "", f"**{md_text(unseen)}**" if unseen else "", "",
              "## Metrics", ""]
    for table in headline_tables(run):
        lines += md_table(table)
    per_class = per_class_table(run)
    if per_class is not None:
        lines += ["### Per class", "", *md_table(per_class)]
    lines += ["## Evaluation protocol", "", *md_table(Table(["topic", "how"], [list(r) for r in evaluation_protocol(run)]))]
    lines += ["## Environment", "", *md_table(environment_table(run))]
    epochs = epoch_table(run)
    if epochs is not None:
        lines += ["## Per-epoch log", "", *md_table(epochs)]
    if run.config:
        import yaml

        text = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True)
        fence = _fence(text)
        lines += ["<details><summary>Resolved config</summary>", "", f"{fence}yaml", text.rstrip("\n"), fence, "",
                  "</details>", ""]
    return _tidy(lines)


def comparison_markdown(comparison: Comparison) -> str:
    groups = comparison.groups
    lines = [f"# Comparison of {sum(g.n for g in groups)} runs in {len(groups)} groups", "",
             "Runs whose resolved configs are equal apart from `train.seed` and `run.*` form one group.", "",
             "## Runs and groups", ""]
    lines += md_table(Table(["group", "runs", "n", "train.seed"],
                            [[g.label, ", ".join(g.run_labels), str(g.n),
                              ", ".join(str(r.setting("train.seed", "?")) for r in g.runs)] for g in groups]))
    lines += ["## Metrics", "", *(f"**{md_text(w)}**\n" for w in comparison.count_warnings),
              "Single runs: the value; repeats: mean ± sample standard deviation [min, max], n. Δ vs first: each "
              f"group's mean minus that of the first group ({md_text(groups[0].label)}).", "", md_text(BEYOND_NOISE_RULE), ""]
    if comparison.metrics:
        header = ["metric"]
        for i, g in enumerate(groups):
            header += [g.label] + (["Δ vs first"] if i else [])
        rows = []
        for metric in comparison.metrics:
            row = [metric]
            for i, stat in enumerate(comparison.stats[metric]):
                value, detail = stat_text(stat)
                row.append(f"{value} {detail}".strip())
                if i:
                    row.append(delta_text(comparison.differences[metric][i - 1]))
            rows.append(row)
        lines += md_table(Table(header, rows))
    else:
        lines += ["The runs have no scalar metric in common.", ""]
    lines += ["## What differs", ""]
    if comparison.differing:
        lines += md_table(Table(["config key", *(g.label for g in groups)], [[k, *v] for k, v in comparison.differing]))
    else:
        lines += ["No config key differs between the groups." if len(groups) > 1 else "All runs are one group.", ""]
    return _tidy(lines)


def _tidy(lines: list[str]) -> str:
    """Join lines, with no run of blank lines longer than one."""
    out: list[str] = []
    for line in "\n".join(lines).split("\n"):
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return "\n".join(out).strip("\n") + "\n"
