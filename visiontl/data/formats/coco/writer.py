"""`AnnotationSet` -> COCO JSON: ids, names and shapes as they are, and every field the reader kept in `extra`
written back where it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.atomic import atomic_write_json
from visiontl.data.annotations import AnnotationSet, WriteReport, check_text_names


def write_coco(aset: AnnotationSet, path: Path) -> WriteReport:
    """Write `aset` as COCO JSON, atomically. Ids, names and shapes are written as they are; instance
    attributes go into each annotation's `attributes` object (as CVAT's and Datumaro's COCO exports do)."""
    check_text_names(aset, "COCO")
    report = WriteReport(f"COCO {path}", images=len(aset.images))
    annotations = []
    for inst in aset.instances:
        x, y, w, h = inst.bbox
        ann: dict[str, Any] = {
            "id": inst.id,
            "image_id": inst.image_id,
            "category_id": inst.category_id,
            "bbox": [x, y, w, h],
            "area": inst.area if inst.area is not None else w * h,
            "iscrowd": int(inst.iscrowd),
            "segmentation": inst.segmentation if inst.segmentation is not None else [],
        }
        if inst.score is not None:
            ann["score"] = inst.score
        if inst.attributes:
            ann["attributes"] = inst.attributes
        annotations.append(_with_extra(ann, inst.extra))
        if isinstance(inst.segmentation, list):
            report.polygons += 1
        elif isinstance(inst.segmentation, dict):
            report.masks += 1
        else:
            report.boxes += 1
    images = []
    for i in aset.images:
        record: dict[str, Any] = {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
        if i.attributes:
            record["attributes"] = i.attributes
        images.append(_with_extra(record, i.extra))
    categories = [_with_extra({"id": c.id, "name": c.name, "supercategory": c.supercategory}, c.extra)
                  for c in aset.categories]
    # info and licenses first, where COCO's own files have them
    document = {**aset.extra, "images": images, "annotations": annotations, "categories": categories}
    atomic_write_json(Path(path), document)
    return report

def _with_extra(record: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    record.update((k, v) for k, v in extra.items() if k not in record)
    return record
