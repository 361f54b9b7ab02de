"""COCO JSON -> `AnnotationSet`: every record parsed and checked, one line naming the file and the record
otherwise (the mapping rules are the package's docstring). Fields beyond the model's are kept in `extra`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.formats.coco.layout import find_image_root
from visiontl.data.formats.common import is_number, read_json, relative_name
from visiontl.data.images import check_image
from visiontl.data.rle import rle_problem
from visiontl.errors import DataError


def read_coco(json_path: Path, image_root: Path | None = None, sanitize: bool = True,
              problems: list[str] | None = None) -> AnnotationSet:
    """Read a COCO JSON file. Without `image_root`, find the folder its file names are relative to
    (`layout.find_image_root`).
    sanitize=False keeps boxes exactly as written (scoring must see the ground truth pycocotools sees).
    With a `problems` list (`visiontl data check`), a bad record is appended there as one line and left out
    instead of stopping the read, so one pass finds every problem; without it, the first one raises."""
    json_path = Path(json_path)
    data = _load_json(json_path)
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: not a COCO file (no '{key}' list)")
    # Image-info files (COCO's test sets) have no annotations at all.
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{json_path}: 'annotations' is not a list")
    if not data["images"]:
        raise DataError(f"{json_path}: no images")

    def each(parse: Any, records: list, *context: Any) -> list:
        out = []
        for i, rec in enumerate(records):
            try:
                out.append(parse(json_path, i, rec, *context))
            except DataError as exc:
                if problems is None:
                    raise
                problems.append(str(exc))
        return out

    categories = _first_of_each_id(each(_category, data["categories"]), "category", json_path, problems)
    images = _first_of_each_id(each(_image, data["images"]), "image", json_path, problems)
    if not images:
        raise DataError(f"{json_path}: no readable image records")
    if image_root is None:
        image_root = find_image_root(json_path, [img.file_name for img in images])
    for img in images:
        if not img.width or not img.height:  # some exporters leave the size out
            try:
                img.width, img.height = check_image(Path(image_root) / img.file_name)
            except DataError as exc:
                if problems is None:
                    raise
                problems.append(f"{json_path}: image {img.id}: no width/height, and {exc}")

    by_id = {img.id: img for img in images}
    cat_ids = {c.id for c in categories}
    instances = _first_of_each_id(each(_instance, annotations, by_id, cat_ids), "annotation", json_path, problems)
    aset = AnnotationSet(categories, images, instances, Path(image_root), ReadReport(source=str(json_path)),
                         extra=_extra(data, _SET_FIELDS))
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset


def _first_of_each_id(records: list, what: str, path: Path, problems: list[str] | None) -> list:
    """Records with an id used before are problems (collected) or errors (raised by validate later)."""
    if problems is None:
        return records
    seen: set[int] = set()
    kept = []
    for rec in records:
        if rec.id in seen:
            problems.append(f"{path}: {what} id {rec.id} is used twice (the later record is left out)")
            continue
        seen.add(rec.id)
        kept.append(rec)
    return kept


# The fields the model holds; any other is kept in `extra` and written back as it was.
_SET_FIELDS = frozenset({"images", "annotations", "categories"})
_IMAGE_FIELDS = frozenset({"id", "file_name", "width", "height", "attributes"})
_INSTANCE_FIELDS = frozenset({"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation", "score",
                              "attributes"})
_CATEGORY_FIELDS = frozenset({"id", "name", "supercategory"})


def _extra(record: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """A record's fields beyond `known`; an `attributes` that is not an object is one of them (the model's
    attributes are a mapping), so it is carried or reported like the others."""
    return {k: v for k, v in record.items()
            if k not in known or (k == "attributes" and not isinstance(v, dict))}


def _load_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO file (the top level is not an object)")
    return data


def _category(path: Path, index: int, rec: Any) -> Category:
    where = f"{path}: category #{index + 1}"
    if not isinstance(rec, dict):
        raise DataError(f"{where}: not an object")
    cid = _int(rec, "id", where)
    where = f"{path}: category {cid}"
    name = rec.get("name")
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: 'name' is missing or not a string")
    return Category(cid, name, str(rec.get("supercategory") or ""), _extra(rec, _CATEGORY_FIELDS))


def _image(path: Path, index: int, rec: Any) -> ImageRecord:
    where = f"{path}: image #{index + 1}"
    if not isinstance(rec, dict):
        raise DataError(f"{where}: not an object")
    iid = _int(rec, "id", where)
    where = f"{path}: image {iid}"
    name = rec.get("file_name")
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: 'file_name' is missing or not a string")
    relative_name(name, where)  # never an absolute path, never ../: the image folder holds every image
    # 0 means "unknown": read from the image header once the image root is known.
    width = _int(rec, "width", where) if rec.get("width") is not None else 0
    height = _int(rec, "height", where) if rec.get("height") is not None else 0
    attributes = rec.get("attributes")
    return ImageRecord(iid, name.replace("\\", "/"), width, height, dict(attributes) if isinstance(attributes, dict) else {},
                       _extra(rec, _IMAGE_FIELDS))


def _instance(path: Path, index: int, rec: Any, images: dict[int, ImageRecord], cat_ids: set[int]) -> Instance:
    where = f"{path}: annotation #{index + 1}"
    if not isinstance(rec, dict):
        raise DataError(f"{where}: not an object")
    aid = _int(rec, "id", where)
    where = f"{path}: annotation {aid}"
    image_id = _int(rec, "image_id", where)
    if image_id not in images:
        raise DataError(f"{where}: image_id {image_id} is not in 'images'")
    where = f"{where} ({images[image_id].file_name})"
    category_id = _int(rec, "category_id", where)
    if category_id not in cat_ids:
        raise DataError(f"{where}: category_id {category_id} is not in 'categories'")
    bbox = rec.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        raise DataError(f"{where}: bbox {bbox!r} is not 4 finite numbers")
    area = rec.get("area")
    if area is not None and not is_number(area):
        raise DataError(f"{where}: area {area!r} is not a finite number")
    iscrowd = rec.get("iscrowd", 0)
    if iscrowd not in (0, 1):  # True/False compare equal to 1/0
        raise DataError(f"{where}: iscrowd {iscrowd!r} is not 0 or 1")
    seg = rec.get("segmentation")
    if seg is not None and not isinstance(seg, (list, dict)):
        raise DataError(f"{where}: segmentation is neither a polygon list nor an RLE object")
    if isinstance(seg, dict) and seg:
        # pycocotools decodes an RLE without checking it (a short one gives pixels it never wrote)
        problem = rle_problem(seg, images[image_id].height, images[image_id].width)
        if problem is not None:
            raise DataError(f"{where}: {problem}")
    for k, poly in enumerate(seg if isinstance(seg, list) else []):
        if not isinstance(poly, list) or not all(is_number(v) for v in poly):
            raise DataError(f"{where}: polygon {k} is not a list of finite numbers")
    score = rec.get("score")
    if score is not None and not is_number(score):
        raise DataError(f"{where}: score {score!r} is not a finite number")
    return Instance(
        id=aid,
        image_id=image_id,
        category_id=category_id,
        bbox=tuple(float(v) for v in bbox),  # type: ignore[arg-type]
        iscrowd=bool(iscrowd),
        segmentation=seg or None,
        area=float(area) if area is not None else None,
        score=float(score) if score is not None else None,
        attributes=dict(rec["attributes"]) if isinstance(rec.get("attributes"), dict) else {},
        extra=_extra(rec, _INSTANCE_FIELDS),
    )


def _int(rec: dict[str, Any], key: str, where: str) -> int:
    v = rec.get(key)
    # 3.0 is what some writers (pandas, JS) make of 3; "3" or 3.5 is a broken file.
    if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
        raise DataError(f"{where}: '{key}' {v!r} is not an integer")
    return int(v)
