"""Lays out the bad-input corpus (tests/corpus/) as the datasets users point visiontl at, and builds the
cases that are better generated than committed (non-UTF-8 file names, deep JSON nesting).

Every builder takes an empty folder, writes one dataset into it and returns the command line of the entry
point to run on it (`visiontl data check`, `visiontl data convert` or `visiontl train`). The committed files
are whole files of each format with one thing wrong (tests/corpus/README.md lists them); the layouts put them
where the format's reader looks: `annotations.json` + `images/`, `Annotations/` + `JPEGImages/`, ...
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"
IMAGES = CORPUS / "images"
W, H = 32, 24  # the size of the corpus images (exif_rotated.jpg is shown 24x32)
NON_UTF8 = b"caf\xe9.png"  # Latin-1 "café.png": not a valid UTF-8 file name


def _copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def non_utf8_name(folder: Path) -> Path:
    """The path of a file called b"caf\\xe9.png" in `folder` (how Python spells an undecodable name)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), NON_UTF8)))


# --- entry points ---------------------------------------------------------------------------------------


def check(src: Path, fmt: str, *extra: str) -> list[str]:
    return ["data", "check", str(src), "--format", fmt, *extra]


def convert(src: Path, fmt: str, to: str, out: Path, *extra: str) -> list[str]:
    return ["data", "convert", str(src), "--from", fmt, "--to", to, "--out", str(out), *extra]


def train(config: Path, *overrides: str) -> list[str]:
    return ["train", str(config), *overrides]


# --- layouts --------------------------------------------------------------------------------------------


def coco(tmp: Path, name: str) -> Path:
    """tmp/annotations.json (tests/corpus/coco/<name>.json) + tmp/images/{good,gray}.png."""
    for image in ("good.png", "gray.png"):
        _copy(IMAGES / image, tmp / "images" / image)
    return _copy(CORPUS / "coco" / f"{name}.json", tmp / "annotations.json")


def coco_of_image(tmp: Path, image: str, width: int = W, height: int = H, **annotation: Any) -> Path:
    """A one-image COCO file around the corpus image `image` (an image case: the image is what is wrong)."""
    _copy(IMAGES / image, tmp / "images" / image)
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 8], "iscrowd": 0, **annotation}
    doc = {"images": [{"id": 1, "file_name": image, "width": width, "height": height}], "annotations": [ann],
           "categories": [{"id": 1, "name": "cell"}]}
    path = tmp / "annotations.json"
    path.write_text(json.dumps(doc))
    return path


def deeply_nested_json(tmp: Path) -> Path:
    """A JSON file nested 100000 levels deep (parses as a list of lists ... of lists)."""
    for image in ("good.png",):
        _copy(IMAGES / image, tmp / "images" / image)
    path = tmp / "annotations.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


def huge_integer_json(tmp: Path) -> Path:
    """A COCO file whose category id has 5000 digits (Python refuses to convert more than 4300)."""
    _copy(IMAGES / "good.png", tmp / "images" / "good.png")
    path = tmp / "annotations.json"
    path.write_text('{"images": [], "annotations": [], "categories": [{"id": ' + "9" * 5000 + ', "name": "a"}]}')
    return path


def voc(tmp: Path, name: str) -> Path:
    """A VOC root: Annotations/a.xml (tests/corpus/voc/<name>.xml), JPEGImages/good.png, ImageSets/Main/train.txt;
    and outside.png beside the root, where the escaping file names point."""
    root = tmp / "voc"
    _copy(CORPUS / "voc" / f"{name}.xml", root / "Annotations" / "a.xml")
    _copy(IMAGES / "good.png", root / "JPEGImages" / "good.png")
    _copy(IMAGES / "good.png", tmp / "outside.png")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return root


def yolo(tmp: Path, label: str = "good", data_yaml: str | None = "good", image: str = "good.png",
         list_file: str | None = None) -> Path:
    """A YOLO root: images/train/<image>, labels/train/<stem>.txt (tests/corpus/yolo/<label>.txt) and
    data.yaml (tests/corpus/yolo/<data_yaml>.yaml); with `list_file`, train.txt from the corpus too."""
    root = tmp / "yolo"
    dest = _copy(IMAGES / image, root / "images" / "train" / image)
    _copy(CORPUS / "yolo" / f"{label}.txt", root / "labels" / "train" / f"{dest.stem}.txt")
    if data_yaml is not None:
        _copy(CORPUS / "yolo" / f"{data_yaml}.yaml", root / "data.yaml")
    if list_file is not None:
        _copy(CORPUS / "yolo" / f"{list_file}.txt", root / "train.txt")
        _copy(IMAGES / "good.png", tmp / "outside" / "outside.png")
    return root


def yolo_non_utf8(tmp: Path, image: str = "good.png") -> Path:
    """A YOLO root whose one image (corpus `image`, and its label file) has a non-UTF-8 name."""
    root = tmp / "yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    shutil.copyfile(IMAGES / image, non_utf8_name(root / "images" / "train"))
    label = non_utf8_name(root / "labels" / "train").with_suffix(".txt")
    shutil.copyfile(CORPUS / "yolo" / "good.txt", label)
    _copy(CORPUS / "yolo" / "good.yaml", root / "data.yaml")
    return root


def cvat(tmp: Path, name: str) -> Path:
    """tmp/annotations.xml (tests/corpus/cvat/<name>.xml) + tmp/images/{good,gray}.png + tmp/outside.png."""
    for image in ("good.png", "gray.png"):
        _copy(IMAGES / image, tmp / "images" / image)
    _copy(IMAGES / "good.png", tmp / "outside.png")
    return _copy(CORPUS / "cvat" / f"{name}.xml", tmp / "annotations.xml")


def labelstudio(tmp: Path, name: str) -> Path:
    """tmp/tasks.json (tests/corpus/labelstudio/<name>.json) + tmp/images/good.png + tmp/outside.png."""
    _copy(IMAGES / "good.png", tmp / "images" / "good.png")
    _copy(IMAGES / "good.png", tmp / "outside.png")
    return _copy(CORPUS / "labelstudio" / f"{name}.json", tmp / "tasks.json")


def labelme(tmp: Path, name: str) -> Path:
    """tmp/labelme/good.json (tests/corpus/labelme/<name>.json) beside good.png."""
    _copy(IMAGES / "good.png", tmp / "labelme" / "good.png")
    _copy(CORPUS / "labelme" / f"{name}.json", tmp / "labelme" / "good.json")
    return tmp / "labelme"


def labelme_absolute_outside(tmp: Path) -> Path:
    """A labelme file whose imagePath is the absolute path of an image outside the folder read, and an
    image of the same name beside the JSON."""
    folder = labelme(tmp, "good")
    outside = _copy(IMAGES / "gray.png", tmp / "elsewhere" / "good.png")
    doc = json.loads((folder / "good.json").read_text())
    doc["imagePath"] = str(outside)
    (folder / "good.json").write_text(json.dumps(doc))
    return folder


def labelme_mask_bomb(tmp: Path) -> Path:
    """A labelme mask shape whose base64 PNG is the 20000x20000 header of images/."""
    import base64

    folder = labelme(tmp, "good")
    doc = json.loads((folder / "good.json").read_text())
    bomb = base64.b64encode((IMAGES / "bomb_20000x20000.png").read_bytes()).decode("ascii")
    doc["shapes"] = [{"label": "cell", "points": [[4, 4], [14, 12]], "shape_type": "mask", "mask": bomb}]
    (folder / "good.json").write_text(json.dumps(doc))
    return folder


def masks(tmp: Path, mask: str, image: str = "good.png") -> Path:
    """A masks dataset: images/{train,val}/a.png + masks/{train,val}/a.png (tests/corpus/masks/<mask>.png)."""
    for split in ("train", "val"):
        _copy(IMAGES / image, tmp / "images" / split / "a.png")
        src = CORPUS / "masks" / f"{mask}.png" if (CORPUS / "masks" / f"{mask}.png").is_file() else IMAGES / mask
        _copy(src, tmp / "masks" / split / "a.png")
    return tmp


def imagefolder(tmp: Path, train: dict[str, list[str]], val: dict[str, list[str]] | None = None) -> Path:
    """root/{train,val}/<class>/<image>: `train` maps class names to corpus image names ([] for an empty class)."""
    for split, classes in (("train", train), ("val", val or train)):
        for cls, images in classes.items():
            (tmp / split / cls).mkdir(parents=True, exist_ok=True)
            for k, image in enumerate(images):
                _copy(IMAGES / image, tmp / split / cls / f"{k}_{image}")
    return tmp


def csv_split(tmp: Path, rows: list[tuple[str, str]], name: str = "train.csv", encoding: str = "utf-8") -> Path:
    """root/<name> with `path,label` rows naming corpus images (copied to root/images/)."""
    for image, _ in rows:
        if (IMAGES / image).is_file():
            _copy(IMAGES / image, tmp / "images" / image)
    text = "path,label\n" + "".join(f"images/{image},{label}\n" for image, label in rows)
    path = tmp / name
    path.write_bytes(text.encode(encoding))
    return path


# --- training configs -----------------------------------------------------------------------------------


def config(tmp: Path, task: str, data: dict[str, Any], model: dict[str, Any] | None = None) -> Path:
    """tmp/config.yaml: a small CPU run of `task` on `data` (root: tmp), its run directory tmp/run."""
    arch = {"detection": "faster_rcnn", "instance_segmentation": "mask_rcnn", "segmentation": "unet"}.get(task)
    raw = {
        "task": task,
        "model": {"backbone": "resnet18", "weights": "none", **({"arch": arch} if arch else {}), **(model or {})},
        "data": {"root": str(tmp), **({"image_size": 32} if task in ("classification", "segmentation") else {}),
                 **data},
        "train": {"epochs": 1, "batch_size": 2, "workers": 0, "device": "cpu", "progress": False},
        "run": {"dir": str(tmp / "run")},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def corpus_config(tmp: Path, name: str) -> Path:
    """tests/corpus/config/<name>.yaml as tmp/config.yaml (the file itself is what is wrong)."""
    return _copy(CORPUS / "config" / f"{name}.yaml", tmp / "config.yaml")


# --- names that would drive a terminal ------------------------------------------------------------------

HOSTILE_FILE = "evil\x1b[2J.png"  # ESC [2J clears the terminal it is printed on
HOSTILE_CLASS = "dog\nAP 1.0000 (forged)"  # printed raw, a second line that reads as a metric


def coco_hostile_names(tmp: Path, width: int = W, height: int = H, **annotation: Any) -> Path:
    """tmp/annotations.json: one image, file tmp/images/<HOSTILE_FILE>, one box of category <HOSTILE_CLASS>."""
    _copy(IMAGES / "good.png", tmp / "images" / HOSTILE_FILE)
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 8], "iscrowd": 0, **annotation}
    doc = {"images": [{"id": 1, "file_name": HOSTILE_FILE, "width": width, "height": height}], "annotations": [ann],
           "categories": [{"id": 1, "name": HOSTILE_CLASS}]}
    path = tmp / "annotations.json"
    path.write_text(json.dumps(doc))
    return path


def stats(src: Path, fmt: str, out: Path, *extra: str) -> list[str]:
    return ["data", "stats", str(src), "--format", fmt, "--out", str(out), *extra]


def coco_many_categories(tmp: Path, n: int) -> Path:
    """tests/corpus/coco/good.json declaring `n` categories; its one box is of the last, c<n>."""
    coco(tmp, "good")
    doc = json.loads((tmp / "annotations.json").read_text())
    doc["categories"] = [{"id": i, "name": f"c{i}"} for i in range(1, n + 1)]
    doc["annotations"][0]["category_id"] = n
    (tmp / "annotations.json").write_text(json.dumps(doc))
    return tmp / "annotations.json"


def labelme_embedded_only(tmp: Path) -> Path:
    """tests/corpus/labelme/good.json with good.png embedded as imageData, and no image file beside it."""
    import base64

    folder = labelme(tmp, "good")
    doc = json.loads((folder / "good.json").read_text())
    doc["imageData"] = base64.b64encode((IMAGES / "good.png").read_bytes()).decode("ascii")
    (folder / "good.json").write_text(json.dumps(doc))
    (folder / "good.png").unlink()
    return folder


def run_dir(tmp: Path, gallery_png: str | None = None, metrics: str = '{"accuracy": 0.5}') -> Path:
    """A run directory holding metrics.json (text `metrics`) and, given a name, a gallery index naming it."""
    run = tmp / "run"
    run.mkdir()
    (run / "metrics.json").write_text(metrics)
    if gallery_png is not None:
        (run / "gallery").mkdir()
        (run / "gallery" / "index.json").write_text(json.dumps([{"png": gallery_png, "file": "x.png",
                                                                 "kind": "worst"}]))
    return run
