"""Label Studio's labelling config: reading one (XML, or the parsed JSON Label Studio's API returns) for the
reader, and writing one for the tasks the writer writes.

`visiontl.serve.parse_label_config` is a second parser, for the ML backend and `predict --label-config`: it
reads the first control of each result type and its object, which the config written here has exactly one
of (tests/test_format_labelstudio.py reads the written config with both). Issue 17 makes them one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

from visiontl.data.annotations import AnnotationSet, Category, Instance
from visiontl.data.formats.common import first_line, note_input, parse_json, parse_xml
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


class ProjectConfig:
    """What a label config says: label order (aliases -> values), Image tag name -> data key, control types."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.aliases: dict[str, str] = {}
        self.image_keys: dict[str, str] = {}  # Image tag name -> data key
        self.controls: dict[str, str] = {}  # control name -> lower-case tag type


def read_config(path: Path) -> ProjectConfig:
    note_input(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: label config not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
    config = ProjectConfig()
    if text.lstrip().startswith("{"):  # a parsed config, as Label Studio's API returns it
        parsed = parse_json(text, path)
        for name, info in parsed.items() if isinstance(parsed, dict) else []:
            if not isinstance(info, dict):
                raise DataError(f"{path}: control {name!r} is not an object")
            kind = str(info.get("type", "")).lower()
            config.controls[str(name)] = kind
            if kind in _LABEL_TAGS:
                _add_labels(config, [str(v) for v in info.get("labels", [])])
            inputs = [i for i in info.get("inputs", [])
                      if isinstance(i, dict) and str(i.get("type", "")).lower() == "image"]
            for to in info.get("to_name", []):
                if inputs and re.fullmatch(r"\w+", str(inputs[0].get("value", ""))):
                    config.image_keys[str(to)] = str(inputs[0]["value"])
        return config
    tree = parse_xml(text, path, "label config")
    for el in tree.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        name = el.get("name")
        if tag == "image" and name and (el.get("value") or "").startswith("$"):
            config.image_keys[name] = el.get("value", "")[1:]
        elif name and tag not in ("view", "header", "label", "image", "text", "style"):
            config.controls[name] = tag
            if tag in _LABEL_TAGS:
                values = []
                for label in el.iter():
                    if isinstance(label.tag, str) and label.tag.lower() == "label" and label.get("value") is not None:
                        values.append(label.get("value", ""))
                        if label.get("alias"):
                            config.aliases[label.get("alias", "")] = label.get("value", "")
                _add_labels(config, values)
    return config


def _add_labels(config: ProjectConfig, values: list[str]) -> None:
    for v in values:
        if v not in config.labels:
            config.labels.append(v)


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
