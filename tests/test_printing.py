"""What visiontl prints of a dataset's text, and what it builds from a dataset's declared sizes (issue 15:
terminal and log injection, category lists that are claims). The corpus (tests/test_corpus.py, `hostile_names`,
`coco_100000_categories`, ...) runs the same through the commands; these pin the shared mechanisms."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from visiontl.data.annotations import MAX_UNUSED_CATEGORIES, AnnotationSet, Category, ImageRecord, Instance, LabelMap
from visiontl.data.check import Problem
from visiontl.data.stats import TOP_CLASSES, _label, _log_bins, dataset_stats, format_stats
from visiontl.errors import DataError
from visiontl.text import PrintableFormatter

FILE = "evil\x1b[2J.png"
CLASS = "dog\nAP 1.0000 (forged)"


def _record(msg: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("visiontl", logging.INFO, __file__, 1, msg, args, exc_info)


def test_a_log_record_is_one_line_whatever_its_arguments_hold() -> None:
    line = PrintableFormatter("%(message)s").format(_record("data: %s, %d images", f"{FILE} {CLASS}", 3))
    assert line == "data: evil\\x1b[2J.png dog\\nAP 1.0000 (forged), 3 images"
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed on %s", FILE, exc_info=sys.exc_info())
        with_traceback = PrintableFormatter("%(message)s").format(record)
    first, *rest = with_traceback.splitlines()
    assert first == "failed on evil\\x1b[2J.png" and rest[0].startswith("Traceback") and "ValueError: boom" in rest[-1]


def test_the_cli_error_line_and_check_problems_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from visiontl.cli import main

    logger = logging.getLogger("visiontl")
    monkeypatch.setattr(logger, "handlers", [])  # main() installs its own, for this test only
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)

    assert str(Problem("error", f"{FILE}: the annotation says 64x48")) == \
        "error: evil\\x1b[2J.png: the annotation says 64x48"
    bad = tmp_path / "a\x1b]0;title\x07.json"  # an OSC sequence would retitle the terminal window
    bad.write_text("{not json")
    assert main(["data", "convert", str(bad), "--from", "coco", "--to", "yolo", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "a\\x1b]0;title\\x07.json: not valid JSON" in err
    assert len(err.splitlines()) == 1


def _aset(categories: int, used: list[int]) -> AnnotationSet:
    cats = [Category(i, CLASS if i == 1 else f"c{i}") for i in range(1, categories + 1)]
    images = [ImageRecord(1, FILE, 32, 24)]
    instances = [Instance(k, 1, c, (4.0, 4.0, 10.0, 8.0)) for k, c in enumerate(used, start=1)]
    return AnnotationSet(cats, images, instances, Path("."))


def test_stats_table_shows_the_top_classes_escaped() -> None:
    text = format_stats(dataset_stats(_aset(3, [1, 2, 2])))
    assert "     1 dog\\nAP 1.0000 (forged)" in text and not any(line.startswith("AP") for line in text.splitlines())
    many = format_stats(dataset_stats(_aset(TOP_CLASSES + 30, [70, 70, 3])))
    rows = [line.split()[1] for line in many.splitlines() if line.startswith(" ") and line.split()[0].isdigit()]
    assert len(rows) == TOP_CLASSES and rows[:3] == ["c70", "c3", "dog\\nAP"]  # by instances, then id order
    assert f"(the {TOP_CLASSES} classes with the most instances, of {TOP_CLASSES + 30};" in many


def test_histogram_bins_always_increase() -> None:
    bins = _log_bins([8.94, 8.94], 1.0, 2.0)  # every box one size (tests/corpus/coco/good.json)
    assert len(bins) == 40 and (bins[1:] > bins[:-1]).all() and bins[0] == pytest.approx(8.94)
    assert (_log_bins([float("inf"), 3.0], 1.0, 2.0)[1:] > _log_bins([float("inf"), 3.0], 1.0, 2.0)[:-1]).all()
    assert _label("$\\frac$ x") == "\\$\\frac\\$ x"  # matplotlib would parse it as (invalid) math


def test_the_head_keeps_unused_categories_up_to_a_bound() -> None:
    ok = LabelMap.from_set(_aset(MAX_UNUSED_CATEGORIES + 1, [1]))  # exactly the bound unused: kept, ids honest
    assert ok.num_classes == MAX_UNUSED_CATEGORIES + 1 and ok.category(2) == 2
    with pytest.raises(DataError, match="memory: 10002 categories, 10001 of them without a single annotation"):
        LabelMap.from_set(_aset(MAX_UNUSED_CATEGORIES + 2, [1]))


def test_report_gallery_names_no_file_can_have(tmp_path: Path) -> None:
    from visiontl.report.runs import _gallery_png

    (tmp_path / "gallery").mkdir()
    assert _gallery_png(tmp_path, "a\x00b.png") is None
    assert _gallery_png(tmp_path, "a" * 300 + ".png") is None
