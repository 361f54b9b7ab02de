"""The import graph of the `visiontl` package: every module imports in a fresh interpreter, and no two modules
import each other, directly or round a longer loop, at module level.

A cycle works only while the modules' top-level statements happen to run in a lucky order: it breaks the day
one of them uses a name of the other at import time, and it means the two cannot be read (or reused) apart.
The graph is read with `ast` from visiontl/**/*.py: module-level imports (those under `if TYPE_CHECKING:`
never run). Importing `visiontl.a.b` runs the package `visiontl.a` first, so that is an edge too, unless the
importer is inside `visiontl.a` (its own packages are already being imported).

Imports inside functions run later, when every module is loaded, so a loop through one does not fail; it
still ties two modules together (serve and preannotate imported each other that way until issue 17). A
second test counts them too, with the loops that exist today listed as known.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "visiontl"

# Module-level cycles that exist and are not broken yet, as the edges (importer, imported) that close them:
# each is left out of the graph, so any other cycle (a new one) still fails. None today.
KNOWN_EDGES: set[tuple[str, str]] = set()

# Loops closed by an import inside a function, known (issue 17): the edge named is the function-level import
# that closes each; left out of the graph of every import, so a new loop still fails. Remove one when it goes.
KNOWN_DEFERRED_EDGES: set[tuple[str, str]] = {
    # the registry loads the backbone modules so that they register; they import the registry's types
    ("visiontl.backbones.registry", "visiontl.backbones.timm_backbones"),
    ("visiontl.backbones.registry", "visiontl.backbones.torchvision_backbones"),
    # cocoeval runs the optional hotcoco engine, which reads cocoeval's Detections / GroundTruth
    ("visiontl.evaluation.cocoeval", "visiontl.evaluation.hotcoco_engine"),
}


def module_names() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its __init__.py)."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imports(body: list[ast.stmt], in_functions: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: at top level, in module-level if/try/with blocks
    and class bodies, not under `if TYPE_CHECKING:`; with `in_functions`, those in functions too."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test not in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                found += _imports(node.body, in_functions)
            found += _imports(node.orelse, in_functions)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                found += _imports(block, in_functions)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            found += _imports(node.body, in_functions)
        elif in_functions and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return found


def imported_modules(name: str, path: Path, modules: dict[str, Path], in_functions: bool = False) -> set[str]:
    """The visiontl modules that importing `name` (its file: `path`) imports at module level (with
    `in_functions`, or in any of its functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8")).body, in_functions):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
            continue
        if node.level:  # relative: `from . import x`, `from ..a import x`
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        targets.add(source)
        # `from pkg import sub`: sub is a module of its own when pkg/sub.py or pkg/sub/ exists
        targets |= {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules}
    edges = set()
    for target in targets:
        if not (target == "visiontl" or target.startswith("visiontl.")):
            continue
        parts = target.split(".")
        # importing a.b.c runs a.b (and a) first: those are imported too, except the importer's own packages
        for k in range(2, len(parts) + 1):
            dotted = ".".join(parts[:k])
            if dotted in modules and dotted != name and not (name + ".").startswith(dotted + "."):
                edges.add(dotted)
    return edges


def import_graph(in_functions: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports, less the known edges."""
    modules = module_names()
    known = KNOWN_EDGES | (KNOWN_DEFERRED_EDGES if in_functions else set())
    return {name: imported_modules(name, path, modules, in_functions) - {b for a, b in known if a == name}
            for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, first == last) per strongly connected component of more than one module
    (Tarjan's algorithm, iterative so a deep graph never hits the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        components.append(component)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest loop through the first module (by name) of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no loop through {start}")  # a component of more than one module always has one


def test_the_import_graph_has_no_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles between visiontl modules (module-level imports):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_no_new_cycle_through_imports_in_functions() -> None:
    """Counting the imports inside functions as well: no loop but the known ones (serve and preannotate, the
    Label Studio package and its callers: none)."""
    cycles = find_cycles(import_graph(in_functions=True))
    assert not cycles, "import cycles between visiontl modules (imports in functions included):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_known_edges_are_still_imports() -> None:
    """A known edge that is gone (its cycle broken) is removed from the lists, so it cannot hide a new one."""
    modules = module_names()
    gone = [(a, b) for a, b in sorted(KNOWN_EDGES) if b not in imported_modules(a, modules[a], modules)]
    gone += [(a, b) for a, b in sorted(KNOWN_DEFERRED_EDGES)
             if a not in modules or b not in imported_modules(a, modules[a], modules, in_functions=True)]
    assert not gone, f"not imports any more, remove from KNOWN_EDGES / KNOWN_DEFERRED_EDGES: {gone}"


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    """Each module, imported in turn by one new interpreter: an import error (a cycle that fails at import
    time, a missing name) fails the test with the module's name."""
    names = sorted(n for n in module_names() if n != "visiontl.__main__")  # __main__ runs the CLI
    code = ("import importlib, sys\nfailed = []\n"
            f"for name in {names!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as exc:\n        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
            "print('\\n'.join(failed))\nsys.exit(1 if failed else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_the_graph_reader_finds_a_cycle(tmp_path: Path, monkeypatch) -> None:
    """The checker itself: a two-module loop and a three-module loop are found, relative imports resolve,
    TYPE_CHECKING imports are never edges and imports in functions only when asked for."""
    pkg = tmp_path / "visiontl"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from visiontl.b import thing\n",
        "b.py": "import visiontl.a\n",
        "c.py": "from .sub import d\n",
        "sub/__init__.py": "",
        "sub/d.py": "from ..e import x\n",
        "e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from visiontl import f\n"
                "try:\n    from visiontl.c import y\nexcept ImportError:\n    pass\n",
        "f.py": "def later():\n    from visiontl import a\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = import_graph()
    assert graph["visiontl.c"] == {"visiontl.sub", "visiontl.sub.d"}
    assert graph["visiontl.sub.d"] == {"visiontl.e"} and graph["visiontl.f"] == set()
    assert sorted(find_cycles(graph)) == [["visiontl.a", "visiontl.b", "visiontl.a"],
                                          ["visiontl.c", "visiontl.sub.d", "visiontl.e", "visiontl.c"]]
    # counting imports in functions: f -> a (a loop only if a came back to f)
    assert import_graph(in_functions=True)["visiontl.f"] == {"visiontl.a"}
    (pkg / "b.py").write_text("def later():\n    import visiontl.f\n")
    assert find_cycles(import_graph()) == [["visiontl.c", "visiontl.sub.d", "visiontl.e", "visiontl.c"]]
    assert sorted(find_cycles(import_graph(in_functions=True)))[0] == [
        "visiontl.a", "visiontl.b", "visiontl.f", "visiontl.a"]
