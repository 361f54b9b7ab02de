"""YAML from files visiontl did not write (configs, YOLO data.yaml, run directories), loaded safely.

`yaml.safe_load` already refuses tags that build Python objects (`!!python/object/apply:os.system`), but it
still expands aliases: nine lines of `&a [*b, *b, ...]` make a document that is a few hundred bytes on disk
and hundreds of millions of values once anything walks it (a "billion laughs"). PyYAML shares the aliased
objects, so loading is quick; the blow-up comes later, in whatever prints, validates or copies the result.
`load` counts the values the document stands for, aliases expanded, before building it, and refuses more
than `MAX_NODES` (a config has a few hundred; the longest data.yaml, ImageNet-21k's names, about 22,000).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 1_000_000


class YamlRefused(yaml.YAMLError):
    """A document refused before it was built (callers that report yaml.YAMLError report this too)."""


class _Loader(yaml.SafeLoader):
    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return self.construct_document(node)


def load(text: str | bytes) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand to more than MAX_NODES values or refer to
    themselves. Raises yaml.YAMLError (YamlRefused for those)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)


def _check_size(root: yaml.Node) -> None:
    """Count the nodes under `root` with every alias expanded, each distinct node walked once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise YamlRefused(f"refused: its aliases (*name) expand to more than {MAX_NODES:,} values "
                                  "(a billion-laughs document?)")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlRefused("refused: an alias (*name) refers to the collection that holds it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
