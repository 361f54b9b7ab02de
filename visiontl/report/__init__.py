"""Run reports: one self-contained HTML page per run (plus a Markdown twin), and run comparisons.

    write_report(run_dir)               -> run_dir/report.html and run_dir/report.md
    write_comparison([a, b, c], out)    -> out (HTML) and out with suffix .md

A report reads only the run directory (docs/run-directory.md), so a run copied to another machine without
its dataset makes the same report. The HTML needs nothing else to open: inline CSS, images as data: URIs,
no script, no network. Both files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

from visiontl.atomic import atomic_write_text  # the function engine.checkpoint re-exports, without importing torch
from visiontl.errors import ConfigError, DataError
from visiontl.report.compare import compare
from visiontl.report.compare_page import comparison_html
from visiontl.report.markdown import comparison_markdown, run_markdown
from visiontl.report.run_page import run_html
from visiontl.report.runs import Run, read_run

__all__ = ["Run", "read_run", "write_comparison", "write_report"]


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's report to `out` (default run_dir/report.html) and its Markdown twin beside it (same
    name, suffix .md: report.md by default). Returns the HTML path."""
    html_path = _html_target(Path(out) if out is not None else Path(run_dir) / "report.html")
    run = read_run(Path(run_dir))
    markdown = run_markdown(run)
    atomic_write_text(html_path, run_html(run))
    atomic_write_text(html_path.with_suffix(".md"), markdown)
    return html_path


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    """Compare runs side by side in `out` (HTML) and its .md twin beside it. Returns the HTML path."""
    if len(run_dirs) < 2:
        raise DataError(f"a comparison needs at least two run directories, got {len(run_dirs)}")
    out = _html_target(Path(out))
    comparison = compare([read_run(Path(d)) for d in run_dirs])
    markdown = comparison_markdown(comparison)
    atomic_write_text(out, comparison_html(comparison))
    atomic_write_text(out.with_suffix(".md"), markdown)
    return out


def _html_target(path: Path) -> Path:
    # The Markdown twin takes the same name with .md: an .md target would be overwritten by its own twin.
    if path.suffix.lower() == ".md":
        raise ConfigError(f"--out {path}: name the HTML file (e.g. {path.with_suffix('.html').name}); the .md twin "
                          "is written beside it")
    return path
