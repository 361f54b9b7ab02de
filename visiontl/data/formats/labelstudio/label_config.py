"""Label Studio's labelling config: reading one (XML, or the parsed JSON Label Studio's API returns) into a
`LabelConfig`, the one parser used by the reader, `visiontl serve` and `predict --label-config`; and writing one
for the tasks the writer writes (`labelstudio_config`, `config_xml`), with the control names results use
(`controls_of`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from visiontl.data.annotations import AnnotationSet, Category, Instance
from visiontl.data.formats.common import parse_json, parse_xml, read_text
from visiontl.errors import DataError

HELD = ("rectanglelabels", "polygonlabels", "brushlabels")
TAGS = {"rectanglelabels": "RectangleLabels", "polygonlabels": "PolygonLabels", "brushlabels": "BrushLabels"}
# The writer's control names: one per result type, told apart, since Label Studio checks each result's
# from_name against a control of the result's type (one name for two types is a config mismatch on import).
CONTROL_NAMES = {"rectanglelabels": "label", "polygonlabels": "polygon", "brushlabels": "brush"}
# The labelling config the writer writes beside the tasks, and the reader finds there.
CONFIG_NAME = "label_config.xml"
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # not allowed in XML 1.0
_LABEL_TAGS = {"rectanglelabels", "polygonlabels", "brushlabels", "labels"}


@dataclass
class LabelConfig:
    """What a labelling config says.

    Predictions go to the first control of each result type in `HELD`: `controls` holds its name (a result's
    from_name), `to_names` its object (a result's to_name), `labels` its <Label value=...>s. The reader reads
    results with the rest: `label_order` (the labels of every labels control, in order: the category order),
    `aliases` (<Label alias> -> value) and `control_types` (every control's name -> its tag, lower case)."""

    controls: dict[str, str] = field(default_factory=dict)  # result type -> control name (from_name)
    to_names: dict[str, str] = field(default_factory=dict)  # result type -> object name (to_name)
    images: dict[str, str | None] = field(default_factory=dict)  # Image tag name -> data key ($key), else None
    labels: dict[str, list[str]] = field(default_factory=dict)  # result type -> its control's labels
    label_order: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    control_types: dict[str, str] = field(default_factory=dict)

    @property
    def image_keys(self) -> dict[str, str]:
        """Image tag name -> the task data key holding its URL (`<Image value="$key">`)."""
        return {name: key for name, key in self.images.items() if key is not None}

    def image_key(self, kind: str) -> str | None:
        """The data key of the image the control of result type `kind` labels."""
        return self.images.get(self.to_names.get(kind, ""))

    def needed(self) -> LabelConfig:
        """Only what predictions need: the controls, their objects and those objects' data keys (no labels, no
        other Image tags), so a kept config is a few names long whatever its schema held."""
        return LabelConfig(dict(self.controls), dict(self.to_names),
                           {name: self.images[name] for name in self.to_names.values() if name in self.images})

    def chars(self) -> int:
        """Characters held in names (the weight of a kept config)."""
        return sum(len(k) + len(v or "") for d in (self.controls, self.to_names, self.images) for k, v in d.items())

    def from_names(self) -> dict[str, str]:
        """The control name of each result type, for `write_labelstudio(from_name=...)`: the config's own,
        `CONTROL_NAMES` for the types it has no control of."""
        return controls_of(self.controls)

    def _add_control(self, name: str, tag: str, to_name: str, values: list[str]) -> None:
        self.control_types[name] = tag
        if tag in HELD and tag not in self.controls:
            self.controls[tag], self.to_names[tag], self.labels[tag] = name, to_name, values
        if tag in _LABEL_TAGS:
            _add_labels(self, values)


def read_label_config(path: Path, *, predictions: bool = False) -> LabelConfig:
    """`parse_label_config` of a file (a problem, the file not found included, is a one-line DataError)."""
    return parse_label_config(read_text(path, "label config"), str(path), predictions=predictions)


def parse_label_config(text: str, path: str = "label config", *, predictions: bool = False) -> LabelConfig:
    """The `LabelConfig` of a labelling config: XML (parsed by formats.common.parse_xml: entities are
    refused), or the parsed config as JSON (`{control name: {"type", "to_name", "inputs", "labels"}}`, Label Studio's API).
    `path` names the text in error messages (a file, or e.g. "project 3.1: label config"). With `predictions`
    the config is one to write predictions into: one with no RectangleLabels, PolygonLabels or BrushLabels
    control is a DataError."""
    config = _parse(text, path)
    if predictions and not config.controls:
        *others, last = TAGS.values()
        raise DataError(f"{path}: no {', '.join(others)} or {last} control to put predictions in")
    return config


def _parse(text: str, path: str) -> LabelConfig:
    config = LabelConfig()
    if text.lstrip().startswith("{"):  # a parsed config, as Label Studio's API returns it
        parsed = parse_json(text, path)
        for name, info in parsed.items() if isinstance(parsed, dict) else []:
            if not isinstance(info, dict):
                raise DataError(f"{path}: control {name!r} is not an object")
            kind = str(info.get("type", "")).lower()
            to_names = [str(to) for to in info.get("to_name", [])]
            config._add_control(str(name), kind, to_names[0] if to_names else "image",
                                [str(v) for v in info.get("labels", [])] if kind in _LABEL_TAGS else [])
            inputs = [i for i in info.get("inputs", [])
                      if isinstance(i, dict) and str(i.get("type", "")).lower() == "image"]
            for to in to_names:
                if inputs and re.fullmatch(r"\w+", str(inputs[0].get("value", ""))):
                    config.images[to] = str(inputs[0]["value"])
        return config
    tree = parse_xml(text, path, "label config")
    for el in tree.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        name = el.get("name")
        if tag == "image" and name:
            value = el.get("value") or ""
            config.images[name] = value[1:] if value.startswith("$") and len(value) > 1 else None
        elif name and tag not in ("view", "header", "label", "image", "text", "style"):
            values = []
            for label in el.iter() if tag in _LABEL_TAGS else ():
                if isinstance(label.tag, str) and label.tag.lower() == "label" and label.get("value") is not None:
                    values.append(label.get("value", ""))
                    if label.get("alias"):
                        config.aliases[label.get("alias", "")] = label.get("value", "")
            config._add_control(name, tag, (el.get("toName") or "image").split(",")[0].strip(), values)
    return config


def _add_labels(config: LabelConfig, values: list[str]) -> None:
    for v in values:
        if v not in config.label_order:
            config.label_order.append(v)


def controls_of(from_name: str | Mapping[str, str] | None = None) -> dict[str, str]:
    """The control name (a result's from_name) of each result type: `CONTROL_NAMES` by default, one name for
    every type, or a mapping from result type to name (types it leaves out keep their default)."""
    if from_name is None:
        return dict(CONTROL_NAMES)
    if isinstance(from_name, str):
        return {k: from_name for k in HELD}
    unknown = set(from_name) - set(HELD)
    if unknown:
        raise ValueError(f"from_name keys must be result types {', '.join(HELD)}, not {', '.join(sorted(unknown))}")
    return {k: from_name.get(k, CONTROL_NAMES[k]) for k in HELD}


def result_kind(inst: Instance) -> str:
    """The result type the writer gives an instance: brushlabels (an RLE mask), polygonlabels (a polygon of
    3 points or more), else rectanglelabels."""
    seg = inst.segmentation
    if isinstance(seg, dict):
        return "brushlabels"
    if any(len(p) >= 6 and len(p) % 2 == 0 for p in seg or []):
        return "polygonlabels"
    return "rectanglelabels"


def labelstudio_config(aset: AnnotationSet, *, from_name: str | Mapping[str, str] | None = None,
                       to_name: str = "image") -> str:
    """A labelling config for the tasks `write_labelstudio` writes: one Image and one control per result type
    used (RectangleLabels for boxes, PolygonLabels, BrushLabels), listing every category in id order."""
    kinds = {result_kind(inst) for inst in aset.instances}
    return config_xml(aset.categories, controls_of(from_name), to_name, kinds)


def config_xml(categories: list[Category], controls: dict[str, str], to_name: str, kinds: set[str]) -> str:
    """The config's XML: each control of `kinds` (none: a RectangleLabels) names every category, in id order,
    so that reading the tasks back keeps the categories' order (ids 1..N) and the ones with no result."""
    kinds = kinds or {"rectanglelabels"}
    if len({controls[k] for k in kinds}) < len(kinds):
        raise ValueError(f"the set has {', '.join(sorted(kinds))} results: give from_name one control name per "
                         "result type, e.g. {'rectanglelabels': 'box', 'polygonlabels': 'poly', 'brushlabels': 'mask'}")
    ordered = sorted(categories, key=lambda c: c.id)
    for c in ordered:
        if _NOT_XML.search(c.name):
            raise DataError(f"category {c.id} {c.name!r}: its name holds characters no XML file can hold")
    labels = "".join(f"    <Label value={quoteattr(c.name)}/>\n" for c in ordered)
    lines = ["<View>", f"  <Image name={quoteattr(to_name)} value=\"$image\"/>"]
    for kind in HELD:
        if kind in kinds:
            lines.append(f"  <{TAGS[kind]} name={quoteattr(controls[kind])} toName={quoteattr(to_name)}>\n"
                         f"{labels}  </{TAGS[kind]}>")
    return "\n".join(lines + ["</View>", ""])
