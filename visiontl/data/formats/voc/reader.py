"""Pascal VOC XML -> `AnnotationSet`.

Layout: one XML per image, `<id>.xml`, in the annotation folder, the images in the image folder, and split
lists `ImageSets/Main/<split>.txt` with one image id per line; the devkit's `Annotations/` + `JPEGImages/`
and the other layouts sets come in are found as `layout` says. Mapping rules:

- images get ids 1..N in list order (sorted file names when no split is named); `file_name` is the XML's
  `<filename>`, relative to the image folder (when no such file exists, e.g. a stale name or one without
  its extension, the image named by the XML's own id and an image extension); `<path>`, an absolute path on
  the annotator's machine, is never read. Split folders read together (Roboflow's train/, valid/, test/)
  share their parent as the image folder: `file_name` is then `train/<filename>`. The size is `<size>`, or
  the image header when that is missing or 0;
- categories get ids 1..K in order of first appearance, or in the order of a given class list; without a
  class list, `root/labels.txt` (one name per line, as `write_voc` writes it) fixes the order of the names it
  lists, and names it does not list follow in order of first appearance;
- instances get ids 1..N in reading order; the box is `(xmin, ymin, xmax - xmin, ymax - ymin)`. The original
  devkit's coordinates are 1-based and inclusive, but labelImg, CVAT, Roboflow and BCCD write 0-based ones,
  so coordinates are read as plain pixel positions with no +1/-1;
- `difficult` and `truncated` are kept as 0/1 in `Instance.attributes` (0 when absent); `occluded` too, when
  the object has the tag;
- with `masks` (the default), an image that has `root/SegmentationObject/<id>.png` gives each object its mask,
  a full-image COCO RLE: the pixels whose index is the object's position among the XML's objects (1-based;
  0 is background, 255 void: VOC's convention), and its `area` is the mask's pixel count; the box stays the
  XML's. An object with no pixels keeps no segmentation (and the box's area);
  images without such a PNG (most detection sets) are read from the XML alone. `SegmentationClass` is not
  read: the class is the XML's.

`write_voc` is the reader's inverse (see its docstring for what VOC cannot hold).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance, ReadReport, sanitize_boxes
from visiontl.data.formats.common import note_input, parse_number, read_xml, relative_name
from visiontl.data.formats.voc.codec import object_masks
from visiontl.data.formats.voc.layout import select
from visiontl.data.images import IMAGE_EXTENSIONS, check_image
from visiontl.errors import DataError

LABELS_FILE = "labels.txt"  # the category names in category id order, written by write_voc


def read_voc(root: Path, split: str | None = None, classes: list[str] | None = None, masks: bool = True,
             sanitize: bool = True, images: Path | None = None, annotations: Path | None = None) -> AnnotationSet:
    """Read the VOC set in `root` (any layout of `layout`'s docstring): split `split` (an ImageSets/Main list
    or a split folder), or every XML when split is None; `images` / `annotations` override the folders
    found. With `masks`, the objects of an image with a `SegmentationObject/<id>.png` get their masks."""
    root = Path(root)
    parts = select(root, split, images, annotations)
    # One image root for the set; each part's <filename>s are relative to its own image folder inside it.
    image_root = parts[0].layout.images if len(parts) == 1 else Path(os.path.commonpath([p.layout.images for p in parts]))
    order = classes if classes is not None else (labels_txt(root / LABELS_FILE)
                                                 or labels_txt(parts[0].layout.root / LABELS_FILE))
    cat_ids: dict[str, int] = {name: i + 1 for i, name in enumerate(order)}
    records: list[ImageRecord] = []
    instances: list[Instance] = []
    unpaired: list[str] = []  # SegmentationObject PNGs that do not pair with their XML: masks left out
    for part in parts:
        if not part.stems:
            raise DataError(f"{part.source}: no images")
        prefix = PurePosixPath(part.layout.images.relative_to(image_root).as_posix())
        for stem in part.stems:
            image_id = len(records) + 1
            xml_path = part.layout.annotations / f"{stem}.xml"
            tree = read_xml(xml_path)
            file_name = _file_name(tree, stem, part.layout.images, xml_path)
            width, height = _int_text(tree, "size/width", xml_path), _int_text(tree, "size/height", xml_path)
            if not width or not height:
                width, height = check_image(part.layout.images / file_name)
            records.append(ImageRecord(image_id, (prefix / file_name).as_posix(), width, height))
            objects = tree.findall("object")
            png = part.layout.root / "SegmentationObject" / f"{stem}.png"
            shapes = object_masks(png, xml_path, width, height, len(objects), unpaired) if masks and png.is_file() else {}
            for k, obj in enumerate(objects, start=1):
                where = f"{xml_path}: object {k}"
                name = (obj.findtext("name") or "").strip()
                if not name:
                    raise DataError(f"{where}: no <name>")
                if name not in cat_ids:
                    if classes is not None:
                        raise DataError(f"{where}: class {name!r} is not in the class list {list(classes)}")
                    cat_ids[name] = len(cat_ids) + 1
                box = obj.find("bndbox")
                if box is None:
                    raise DataError(f"{where}: no <bndbox>")
                x1, y1, x2, y2 = (_coord(box, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
                attributes = {tag: _flag(obj, tag, where) for tag in ("difficult", "truncated")}
                if obj.find("occluded") is not None:
                    attributes["occluded"] = _flag(obj, "occluded", where)
                # The box is the XML's, never the mask's extent (the void band and boxes drawn loosely differ
                # from it); the area is the mask's, as COCO gives a segmented object.
                mask, area = shapes.get(k, (None, None))
                instances.append(Instance(len(instances) + 1, image_id, cat_ids[name], (x1, y1, x2 - x1, y2 - y1),
                                          segmentation=mask, area=None if area is None else float(area),
                                          attributes=attributes))

    categories = [Category(cid, name) for name, cid in cat_ids.items()]
    source = str(parts[0].layout.annotations if len(parts) == 1 else root)
    aset = AnnotationSet(categories, records, instances, image_root, ReadReport(source=source, dropped=unpaired))
    aset.validate()
    return sanitize_boxes(aset) if sanitize else aset  # False: boxes as written (check, convert)


def labels_txt(path: Path) -> list[str]:
    if not path.is_file():
        return []
    note_input(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    names: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if name in names:
            raise DataError(f"{path}: line {n}: class {name!r} is listed twice")
        if name:
            names.append(name)
    return names


def _file_name(tree: ET.Element, stem: str, image_root: Path, xml_path: Path) -> str:
    name = (tree.findtext("filename") or "").strip() or f"{stem}.jpg"
    relative_name(name, str(xml_path), "<filename>")  # inside JPEGImages/, even when stale
    if not (image_root / name).is_file():
        # <filename> is often stale (renamed files, no extension): fall back to the annotation's own id.
        for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
            if (image_root / f"{stem}{ext}").is_file():
                return f"{stem}{ext}"
    return name


def _int_text(tree: ET.Element, path: str, xml_path: Path) -> int:
    text = tree.findtext(path)
    if text is None or not text.strip():
        return 0
    return int(parse_number(text.strip(), path.split("/")[-1], f"{xml_path}: <size>"))


def _coord(box: ET.Element, tag: str, where: str) -> float:
    text = box.findtext(tag)
    if text is None:
        raise DataError(f"{where}: no <bndbox>/<{tag}>")
    return parse_number(text.strip(), tag, where)


def _flag(obj: ET.Element, tag: str, where: str) -> int:
    text = (obj.findtext(tag) or "").strip()
    return int(parse_number(text, tag, where) != 0) if text else 0
