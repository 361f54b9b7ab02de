"""Label Studio results (the `result` list of an annotation or a prediction) of instances: the one conversion
used by the writer (`write_labelstudio`), `visiontl serve` and pre-annotation, so a served prediction and a
written one are the same JSON."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from visiontl.data.annotations import AnnotationSet, ImageRecord, Instance, WriteReport
from visiontl.data.formats.labelstudio.codec import mask_to_brush
from visiontl.data.formats.rotation import check_rotated_box, to_labelstudio


def prediction_results(aset: AnnotationSet, controls: dict[str, str], to_name: str,
                       kind: str | None = None) -> list[list[dict[str, Any]]]:
    """Per image of `aset` (predictions), in order: the results of its instances, each with its `score`.
    `kind`, the result type the predictions are for: "rectanglelabels" gives every instance's box,
    "polygonlabels" leaves out instances without a shape (predicted with masks="polygon": a mask too small to
    trace), else each instance gives its own type, as `instance_results` (`controls`, `to_name` as there)."""
    names = {c.id: c.name for c in aset.categories}
    by_image = aset.by_image()
    out = []
    for img in aset.images:
        used: set[str] = set()
        report = WriteReport(target="predictions")
        results = []
        for inst in by_image[img.id]:
            if kind == "rectanglelabels":
                inst = replace(inst, segmentation=None)
            elif kind == "polygonlabels" and not inst.segmentation:
                continue  # no polygon traced (a mask of a few pixels): nothing to draw
            for r in instance_results(inst, img, names[inst.category_id], controls, to_name, used, report,
                                      f"{img.file_name}: region {inst.id}"):
                r["score"] = inst.score
                results.append(r)
        out.append(results)
    return out


def instance_results(inst: Instance, img: ImageRecord, label: str, controls: dict[str, str], to_name: str,
                     used: set[str], report: WriteReport, where: str) -> list[dict[str, Any]]:
    """The results of one instance on image `img`, labelled `label`: an RLE mask is one `brushlabels` (Label
    Studio's brush RLE), polygons of 3 points or more are one `polygonlabels` each, else the box is one
    `rectanglelabels` (rotated when its `rotated_box` still has the box as its envelope). Coordinates are in
    percent of the image. `controls`: the control name (from_name) of each result type (`controls_of`);
    `to_name`: the Image's name; `used`: the result ids given so far in the task (each new one is added:
    ids stay unique); `report` counts boxes, polygons and masks and notes what is lost, `where` naming the
    instance."""
    W, H = img.width, img.height
    seg = inst.segmentation

    def result(kind: str, value: dict[str, Any], suffix: str = "") -> dict[str, Any]:
        value[kind] = [label]
        return {"id": _result_id(inst, used, suffix), "type": kind, "from_name": controls[kind], "to_name": to_name,
                "original_width": W, "original_height": H, "image_rotation": 0, "value": value}

    if isinstance(seg, dict):
        from visiontl.data.masks import instance_mask

        mask = instance_mask(inst, H, W, where)
        report.masks += 1
        return [result("brushlabels", {"format": "rle", "rle": mask_to_brush(mask)})]
    polygons = [p for p in (seg or []) if len(p) >= 6 and len(p) % 2 == 0]
    if seg and len(polygons) < len(seg):
        report.lost.append(f"{where}: {len(seg) - len(polygons)} polygon(s) with fewer than 3 points")
    if polygons:
        report.polygons += 1
        if len(polygons) > 1:
            report.lost.append(f"{where}: {len(polygons)} polygons written as {len(polygons)} separate regions")
        out = []
        for k, poly in enumerate(polygons):
            points = [[poly[i] / W * 100, poly[i + 1] / H * 100] for i in range(0, len(poly), 2)]
            out.append(result("polygonlabels", {"points": points, "closed": True}, f"_{k + 1}" if k else ""))
        return out
    report.boxes += 1
    x, y, w, h = (float(v) for v in inst.bbox)
    rotation: float = 0
    if inst.attributes.get("rotated_box") is not None:
        rotated, why = check_rotated_box(inst.attributes["rotated_box"], inst.bbox, W, H)
        if rotated is None:
            report.lost.append(f"{where}: {why}; the box is written unrotated")
        else:
            x, y, w, h, rotation = to_labelstudio(rotated)
    value = {"x": x / W * 100, "y": y / H * 100, "width": w / W * 100, "height": h / H * 100, "rotation": rotation}
    return [result("rectanglelabels", value)]


def _result_id(inst: Instance, used: set[str], suffix: str) -> str:
    rid = inst.attributes.get("result_id")
    rid = f"{rid}{suffix}" if isinstance(rid, str) and re.fullmatch(r"[A-Za-z0-9_-]+", rid) else f"vtl{inst.id}{suffix}"
    base, n = rid, 1
    while rid in used:
        n += 1
        rid = f"{base}-{n}"
    used.add(rid)
    return rid
