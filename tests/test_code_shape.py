"""The engine stays readable: no function (or method) in visiontl/engine/ longer than 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "visiontl" / "engine"
MAX_LINES = 80


def long_functions(folder: Path, limit: int) -> list[str]:
    """`file:line name (N lines)` for every def in `folder`'s modules longer than `limit` lines, decorators and
    docstring included."""
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                lines = node.end_lineno - first + 1
                if lines > limit:
                    found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_engine_function_is_longer_than_80_lines() -> None:
    offenders = long_functions(ENGINE, MAX_LINES)
    assert not offenders, f"functions in visiontl/engine/ longer than {MAX_LINES} lines: {', '.join(offenders)}"


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (tmp_path / "long.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n", encoding="utf-8")
    assert long_functions(tmp_path, MAX_LINES) == ["long.py:5 long (81 lines)"]
