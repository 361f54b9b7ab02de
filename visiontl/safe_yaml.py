"""YAML from files visiontl did not write (configs, YOLO data.yaml, run directories), loaded safely.

`yaml.safe_load` already refuses tags that build Python objects (`!!python/object/apply:os.system`), but a
document can still hurt whatever reads it:

- aliases: nine lines of `&a [*b, *b, ...]` make a document that is a few hundred bytes on disk and hundreds of
  millions of values once anything walks it (a "billion laughs"). PyYAML shares the aliased objects, so loading
  is quick; the blow-up comes later, in whatever prints, validates or copies the result. `load` counts the
  values that aliases add, before building anything, and refuses more than `MAX_ALIASED_VALUES`. Values
  written out in the text are not counted against it: their number is bounded by the text's length, at most
  `MAX_CHARS` (callers may bound it lower: a config is at most `visiontl.config.MAX_CONFIG_BYTES`);
- duplicate keys: YAML keeps only the last (`train:` twice silently drops the first section): refused, naming
  the key and both lines;
- nesting: PyYAML composes recursively (a RecursionError) and libyaml stops at 1000 levels; both, and any
  document nested deeper than `MAX_DEPTH` (aliases included), are refused in one line;
- an integer of more digits than Python converts (`sys.get_int_max_str_digits()`, a ValueError) and any other
  scalar YAML cannot build (`2001-13-01` as a date) are refused in one line.

Parsing uses libyaml (`yaml.CSafeLoader`) where PyYAML was built with it: the same results, several times faster
than the pure-Python loader on large files.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from visiontl.text import printable

MAX_ALIASED_VALUES = 1_000_000  # configs use a handful (`<<: *base`); a bomb needs millions
# The largest YAML visiontl reads is a data.yaml naming ImageNet-21k's 21,841 classes, ~0.5 MB. PyYAML builds
# about 1 MB a second, so this bounds any reader's parse to seconds, not minutes.
MAX_CHARS = 4 * 2**20
MAX_DEPTH = 100  # a config is 4 levels deep, a data.yaml 3; libyaml alone stops at 1000

_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
# Python refuses to convert longer digit strings (a ValueError, since 3.11's int_max_str_digits)
_MAX_INT_CHARS = getattr(sys, "get_int_max_str_digits", lambda: 0)() or 4300
_MERGE_TAG = "tag:yaml.org,2002:merge"
_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlRefused(yaml.YAMLError):
    """A document refused before it was built (callers that report yaml.YAMLError report this too)."""


class _Loader(_Base):  # type: ignore[misc, valid-type]
    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        mappings = _check_shape(node)
        _check_unique_keys(self, mappings)
        return self.construct_document(node)


def load(text: str | bytes) -> Any:
    """yaml.safe_load, refusing what the module docstring lists. Raises yaml.YAMLError (YamlRefused for those)."""
    if len(text) > MAX_CHARS:
        raise YamlRefused(f"refused: {len(text):,} characters of YAML, more than any file visiontl reads needs "
                          f"({MAX_CHARS:,})")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        if exc.problem == "exceeded maximum nesting depth":  # libyaml's own limit, hit while scanning
            raise _too_deep(exc.problem_mark.line + 1 if exc.problem_mark else None) from None
        raise
    except RecursionError:  # the pure-Python composer recurses once per level
        raise _too_deep(None) from None
    except ValueError as exc:  # a scalar that matched a YAML type its constructor cannot build
        raise YamlRefused(f"refused: a value YAML cannot build ({printable(exc, 200)})") from None


def _too_deep(line: int | None) -> YamlRefused:
    where = f" (line {line})" if line else ""
    return YamlRefused(f"refused: nested more than {MAX_DEPTH} levels deep{where}")


def _check_shape(root: yaml.Node) -> list[yaml.MappingNode]:
    """Walk every distinct collection once (aliases share nodes) and refuse a document whose aliases add more
    than MAX_ALIASED_VALUES values, that nests deeper than MAX_DEPTH, that holds an alias to the collection
    holding it or an integer too long to convert. Returns the mapping nodes (for the duplicate-key check).

    Scalars are counted in their collection's loop, not walked: most of a large document is scalars, and an
    aliased scalar adds one value where its alias is written, so only aliased collections can blow up."""
    if isinstance(root, yaml.ScalarNode):
        _check_scalar(root)
        return []
    sizes: dict[int, int] = {}  # id(collection) -> values it stands for, aliases expanded
    depths: dict[int, int] = {}
    written = 0  # values the text writes out: distinct collections and the scalars in them
    mappings: list[yaml.MappingNode] = []
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, list[yaml.Node] | None, int]] = [(root, None, 0)]
    while stack:
        node, collections, scalars = stack.pop()
        key = id(node)
        if collections is not None:  # every child is done
            on_path.discard(key)
            size = sizes[key] = 1 + scalars + sum(sizes[id(c)] for c in collections)
            depth = depths[key] = 1 + max((depths[id(c)] for c in collections), default=1 if scalars else 0)
            # size counts every value under this node, aliases expanded, and at most `written` of them are in
            # the text: the rest came from aliases
            if size - written > MAX_ALIASED_VALUES:
                raise YamlRefused(f"refused: its aliases (*name) expand to more than {MAX_ALIASED_VALUES:,} values "
                                  "(a billion-laughs document?)")
            if depth > MAX_DEPTH:
                raise _too_deep(node.start_mark.line + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlRefused("refused: an alias (*name) refers to the collection that holds it")
        on_path.add(key)
        if isinstance(node, yaml.MappingNode):
            mappings.append(node)
            items = [n for pair in node.value for n in pair]
        else:
            items = node.value
        children = []
        for child in items:
            if isinstance(child, yaml.ScalarNode):
                _check_scalar(child)
            else:
                children.append(child)
        scalars = len(items) - len(children)
        written += 1 + scalars
        stack.append((node, children, scalars))
        stack.extend((c, None, 0) for c in children if id(c) not in sizes)
    return mappings


def _check_scalar(node: yaml.ScalarNode) -> None:
    if node.tag == _INT_TAG and len(node.value) > _MAX_INT_CHARS:
        raise YamlRefused(f"refused: line {node.start_mark.line + 1}: an integer of {len(node.value):,} characters "
                          f"(at most {_MAX_INT_CHARS:,})")


def _check_unique_keys(loader: yaml.SafeLoader, mappings: list[yaml.MappingNode]) -> None:
    """Refuse a mapping that writes one key twice. Keys are compared as built (`1` and `0x1`, `"a"` and `a` are
    the same key); merge keys (`<<: *base`) are meant to be overridden and are left out. Runs before
    construction, which rewrites merged mappings in place."""
    for mapping in mappings:
        lines: dict[Any, int] = {}
        for key_node, _ in mapping.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # a collection as a key is refused by the constructor ("found unhashable key")
            key = key_node.value if key_node.tag == _STR_TAG else loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise YamlRefused(f"refused: key '{printable(key, 80)}' appears twice in one mapping "
                                  f"(lines {lines[key]} and {line}); YAML would keep only the last")
            lines[key] = line
