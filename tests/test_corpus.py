"""The bad-input corpus, case by case, through the entry points users run: `visiontl data check`, `visiontl
data convert` and `visiontl train` (whose `prepare_data` checks everything before a model is built), and
`visiontl data stats` and `visiontl report` where those are what a file breaks.

Each row of CASES is one kind of broken (or merely unusual) input: its name, the entry point, the outcome
and a piece of the message. Outcomes:

- `ok`: handled correctly; `verify` then asserts the value visiontl computed (train: the data reached the
  point where the model would be built);
- `exit1`: `data check` lists the problem, one line naming the file and the record, and exits 1;
- `exit2`: refused with exit status 2 and one line on stderr naming the file (and record), never a
  traceback; for `train`, before any model is built or checkpoint written.

The test ids read `<case>-<entry>-<outcome>`, so `pytest --collect-only -q tests/test_corpus.py` lists the
corpus with its outcomes; docs/reliability.md has the same table.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import corpus_build as cb
from conftest import fresh_log
from visiontl.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str
    tmp: Path
    data: Any = None  # train: what prepare_data returned
    model_built: bool = False  # train: the trainer got as far as building the backbone

    def error_lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith("error: ")]


@dataclass
class Case:
    name: str
    entry: str  # check | convert | train
    outcome: str  # ok | exit1 | exit2
    message: str  # a piece of the one line naming the file, the record and the problem (ok: of stdout, or "")
    build: Callable[[Path], list[str]]  # lays the dataset out in an empty folder; returns the command line
    verify: Callable[[Result], None] | None = None

    @property
    def id(self) -> str:
        return f"{self.name}-{self.entry}-{self.outcome}"


class _ModelBuildReached(Exception):
    """Raised where the trainer would build the backbone: the data passed every check."""


def run(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Result:
    argv = case.build(tmp)
    capsys.readouterr()
    monkeypatch.chdir(tmp)  # a payload that would write a file writes it here, where the test looks
    prepared: dict[str, Any] = {}
    if case.entry == "train":
        from visiontl.engine import trainer

        real_get_task = trainer.get_task

        def get_task(cfg: Any) -> Any:
            task = real_get_task(cfg)
            real_prepare = task.prepare_data

            def prepare_data(cfg: Any, **options: Any) -> Any:
                prepared["data"] = real_prepare(cfg, **options)
                return prepared["data"]

            task.prepare_data = prepare_data
            return task

        def create_backbone(*args: Any, **kwargs: Any) -> Any:
            raise _ModelBuildReached

        monkeypatch.setattr(trainer, "get_task", get_task)
        monkeypatch.setattr(trainer, "create_backbone", create_backbone)
    reached = False
    try:
        with fresh_log():
            code = main(argv)
    except _ModelBuildReached:
        code, reached = 0, True
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err, tmp, prepared.get("data"), reached)


# --- builders of the cases that need more than a corpus file ---------------------------------------------


def det(fmt: str, split: str, images: str | None = None, task: str = "detection") -> Callable[[Path], Path]:
    """A detection (instance, semantic segmentation) config training on the split `split` of the data in tmp."""
    def make(tmp: Path) -> Path:
        data = {"format": fmt, "train": split, "val": split, **({"images": images} if images else {})}
        return cb.config(tmp, task, data)
    return make


def coco_train(name: str, task: str = "detection") -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.coco(tmp, name)
        return cb.train(det("coco", "annotations.json", task=task)(tmp))
    return build


def coco_check(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.check(cb.coco(tmp, name), "coco")


def coco_convert(name: str, to: str = "coco") -> Callable[[Path], list[str]]:
    return lambda tmp: cb.convert(cb.coco(tmp, name), "coco", to, tmp / "out")


def image_check(image: str, width: int = cb.W, height: int = cb.H) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.check(cb.coco_of_image(tmp, image, width, height), "coco")


def image_train(image: str) -> Callable[[Path], list[str]]:
    """Classification on an image folder whose first class holds `image`."""
    def build(tmp: Path) -> list[str]:
        cb.imagefolder(tmp, {"a": [image, "good.png"], "b": ["gray.png"]}, {"a": ["good.png"], "b": ["gray.png"]})
        return cb.train(cb.config(tmp, "classification", {"format": "imagefolder"}))
    return build


def voc_check(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.check(cb.voc(tmp, name), "voc")


def voc_convert(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.convert(cb.voc(tmp, name), "voc", "coco", tmp / "out")


def voc_train(name: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.voc(tmp, name)
        return cb.train(cb.config(tmp, "detection", {"format": "voc", "root": str(tmp / "voc"), "train": "train",
                                                      "val": "train"}))
    return build


def yolo_check(label: str = "good", data_yaml: str | None = "good", **kw: Any) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.check(cb.yolo(tmp, label, data_yaml, **kw), "yolo")


def yolo_convert(label: str = "good", data_yaml: str | None = "good", **kw: Any) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.convert(cb.yolo(tmp, label, data_yaml, **kw), "yolo", "coco", tmp / "out")


def yolo_train(label: str = "good", data_yaml: str | None = "good", **kw: Any) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.yolo(tmp, label, data_yaml, **kw)
        return cb.train(cb.config(tmp, "detection", {"format": "yolo", "root": str(tmp / "yolo"), "train": "train",
                                                      "val": "train"}))
    return build


def cvat_check(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.check(cb.cvat(tmp, name), "cvat")


def cvat_convert(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.convert(cb.cvat(tmp, name), "cvat", "coco", tmp / "out")


def cvat_train(name: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.cvat(tmp, name)
        return cb.train(det("cvat", "annotations.xml", "images")(tmp))
    return build


def ls_check(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.check(cb.labelstudio(tmp, name), "labelstudio", "--images", str(tmp / "images"))


def ls_convert(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.convert(cb.labelstudio(tmp, name), "labelstudio", "coco", tmp / "out",
                                  "--images", str(tmp / "images"))


def ls_train(name: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.labelstudio(tmp, name)
        return cb.train(det("labelstudio", "tasks.json", "images")(tmp))
    return build


def labelme_check(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.check(cb.labelme(tmp, name), "labelme")


def labelme_convert(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.convert(cb.labelme(tmp, name), "labelme", "coco", tmp / "out")


def labelme_train(name: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.labelme(tmp, name)
        return cb.train(det("labelme", "labelme")(tmp))
    return build


def masks_train(mask: str, image: str = "good.png") -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.masks(tmp, mask, image)
        data = {"format": "masks", "train": "images/train", "train_masks": "masks/train", "val": "images/val",
                "val_masks": "masks/val", "classes": ["background", "red", "green"]}
        return cb.train(cb.config(tmp, "segmentation", data))
    return build


def csv_train(rows: list[tuple[str, str]], encoding: str = "utf-8",
              val: list[tuple[str, str]] = (("good.png", "a"), ("gray.png", "b"))) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.csv_split(tmp, rows, "train.csv", encoding)
        cb.csv_split(tmp, list(val), "val.csv")
        return cb.train(cb.config(tmp, "classification", {"format": "csv", "train": "train.csv", "val": "val.csv"}))
    return build


def imagefolder_train(train: dict[str, list[str]]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / "train").mkdir()
        cb.imagefolder(tmp, train, {"a": ["good.png"], "b": ["gray.png"]})
        return cb.train(cb.config(tmp, "classification", {"format": "imagefolder"}))
    return build


def non_utf8_imagefolder(tmp: Path) -> list[str]:
    cb.imagefolder(tmp, {"a": ["good.png"], "b": ["gray.png"]})
    shutil.copyfile(cb.IMAGES / "good.png", cb.non_utf8_name(tmp / "train" / "a"))
    return cb.train(cb.config(tmp, "classification", {"format": "imagefolder"}))


def yolo_empty_split(tmp: Path) -> list[str]:
    root = cb.yolo(tmp, data_yaml=None)  # images/<split>/ layout: the val folder is there, and empty
    (root / "images" / "val").mkdir()
    (root / "classes.txt").write_text("cell\n")
    return cb.check(root, "yolo", "--split", "val")


def labelme_absolute_outside(tmp: Path) -> list[str]:
    cb.labelme_absolute_outside(tmp)
    return cb.train(det("labelme", "labelme")(tmp))


def config_train(name: str) -> Callable[[Path], list[str]]:
    return lambda tmp: cb.train(cb.corpus_config(tmp, name))


def hostile_train(**kw: Any) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.coco_hostile_names(tmp, **kw)
        return cb.train(det("coco", "annotations.json")(tmp))
    return build


def many_categories_train(n: int) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        cb.coco_many_categories(tmp, n)
        return cb.train(det("coco", "annotations.json")(tmp))
    return build


def labelme_embedded_train(tmp: Path) -> list[str]:
    cb.labelme_embedded_only(tmp)
    return cb.train(det("labelme", "labelme")(tmp))


def report_of(**kw: Any) -> Callable[[Path], list[str]]:
    return lambda tmp: ["report", str(cb.run_dir(tmp, **kw))]


# --- what "handled correctly" means, case by case -----------------------------------------------------------


def rgb_at(path_in_tmp: str, *pixels: tuple[int, int, tuple[int, int, int]]) -> Callable[[Result], None]:
    """The image decodes to 8-bit RGB with these (x, y) -> colour values (within JPEG's error)."""
    def verify(r: Result) -> None:
        from visiontl.data.images import read_image

        rgb = read_image(r.tmp / path_in_tmp)
        assert rgb.dtype == np.uint8 and rgb.shape == (cb.H, cb.W, 3)
        for x, y, colour in pixels:
            assert np.abs(rgb[y, x].astype(int) - colour).max() <= 3, (x, y, rgb[y, x], colour)
    return verify


def exif_boxes(r: Result) -> None:
    """The YOLO box is normalised by the image as shown (24x32 after EXIF rotation), not as stored (32x24)."""
    img = r.data.train.images[0]
    assert (img.width, img.height) == (24, 32)
    x, y, w, h = r.data.train.instances[0].bbox
    assert (x, y, w, h) == pytest.approx((0.125 * 24, 0.1666665 * 32, 0.3125 * 24, 0.333333 * 32), abs=1e-4)


def dropped(what: str) -> Callable[[Result], None]:
    def verify(r: Result) -> None:
        assert r.data.train.instances == [] and any(what in line for line in r.data.train.report.dropped)
        assert r.model_built
    return verify


def trained_on(n: int) -> Callable[[Result], None]:
    def verify(r: Result) -> None:
        assert r.model_built and len(r.data.train) == n
    return verify


def beside_the_json(r: Result) -> None:
    """The absolute imagePath (a grey image elsewhere) is not opened: the red image beside the JSON is."""
    img = r.data.train.images[0]
    assert r.model_built and img.file_name == "good.png"
    assert r.data.train.image_path(img).resolve() == (r.tmp / "labelme" / "good.png").resolve()


def no_pwned(r: Result) -> None:
    assert not (r.tmp / "pwned").exists()


def nothing_raw(r: Result) -> None:
    """No ESC reaches the terminal (or train.log) and the category's newline makes no line of its own."""
    texts = [r.out, r.err] + [p.read_text(encoding="utf-8") for p in [r.tmp / "run" / "train.log"] if p.exists()]
    for text in texts:
        assert "\x1b" not in text and "\x00" not in text
        assert not any(line.startswith("AP 1.0000") for line in text.splitlines()), text
    if (r.tmp / "run" / "train.log").exists() and r.code == 0:
        assert "dog\\nAP 1.0000 (forged)" in texts[-1]


def embedded_pixels(r: Result) -> None:
    """Training reads the image that exists only as the JSON's imageData: good.png's pixels."""
    from visiontl.data.images import read_image

    img = r.data.train.images[0]
    path = r.data.train.image_path(img)
    assert r.model_built and not path.exists() and img.attributes["embedded_image"]
    assert np.array_equal(read_image(path), read_image(cb.IMAGES / "good.png"))


def top_classes(r: Result) -> None:
    rows = [line.split() for line in r.out.splitlines() if re.match(r" *\d+ c\d+ ", line)]
    # the class with instances (the last declared) first, then the others in id order
    assert len(rows) == 50 and [r[1:3] for r in rows[:2]] == [["c100000", "1"], ["c1", "0"]] and rows[-1][1] == "c49"
    assert (r.tmp / "out" / "stats.png").stat().st_size > 10_000


def gallery_picture_missing(r: Result) -> None:
    html = (r.tmp / "run" / "report.html").read_text(encoding="utf-8")
    assert "\x00" not in html and "missing or not a PNG" in html


CASES = [
    # --- images -----------------------------------------------------------------------------------------
    Case("image_truncated_jpg", "check", "exit1", "truncated.jpg: cannot be decoded", image_check("truncated.jpg")),
    Case("image_truncated_jpg", "train", "exit2", "truncated.jpg: cannot decode image", image_train("truncated.jpg")),
    Case("image_zero_bytes", "check", "exit1", "zero_bytes.jpg: not a readable image", image_check("zero_bytes.jpg")),
    Case("image_zero_bytes", "train", "exit2", "zero_bytes.jpg: not a readable image", image_train("zero_bytes.jpg")),
    Case("image_not_an_image", "check", "exit1", "not_an_image.jpg: not a readable image",
         image_check("not_an_image.jpg")),
    Case("image_cmyk_jpg", "check", "ok", "0 error(s)", image_check("cmyk.jpg"),
         verify=rgb_at("images/cmyk.jpg", (0, 0, (255, 0, 0)), (31, 23, (255, 0, 0)))),
    Case("image_16bit_png", "check", "ok", "0 error(s)", image_check("gray16.png"),
         verify=rgb_at("images/gray16.png", (0, 0, (0, 0, 0)), (31, 0, (255, 255, 255)), (16, 5, (132, 132, 132)))),
    Case("image_palette_png", "check", "ok", "0 error(s)", image_check("palette.png"),
         verify=rgb_at("images/palette.png", (0, 0, (10, 200, 30)), (31, 0, (250, 250, 0)))),
    Case("image_grayscale_png", "check", "ok", "0 error(s)", image_check("gray.png"),
         verify=rgb_at("images/gray.png", (5, 5, (128, 128, 128)))),
    Case("image_rgba_png", "check", "ok", "0 error(s)", image_check("rgba.png"),
         verify=rgb_at("images/rgba.png", (0, 0, (255, 0, 0)), (31, 0, (0, 0, 0)))),
    Case("image_exif_rotated", "check", "ok", "0 error(s)", image_check("exif_rotated.jpg", 24, 32)),
    Case("image_exif_rotated_stored_size", "check", "exit1", "exif_rotated.jpg: the annotation says 32x24, the image "
         "is 24x32", image_check("exif_rotated.jpg")),
    Case("image_exif_rotated", "train", "ok", "", yolo_train(image="exif_rotated.jpg"), verify=exif_boxes),
    Case("image_decompression_bomb", "check", "exit1", "bomb_100000x100000.png: refused as a possible decompression "
         "bomb", image_check("bomb_100000x100000.png")),
    Case("image_decompression_bomb_below_pil_error", "check", "exit1", "bomb_20000x20000.png: 20000x20000 pixels",
         image_check("bomb_20000x20000.png")),
    Case("image_decompression_bomb", "train", "exit2", "bomb_20000x20000.png: 20000x20000 pixels",
         image_train("bomb_20000x20000.png")),
    Case("image_non_utf8_file_name", "check", "ok", "0 error(s)", lambda tmp: cb.check(cb.yolo_non_utf8(tmp), "yolo")),
    Case("image_non_utf8_file_name_truncated", "check", "exit1", "caf\\udce9.png: cannot be decoded",
         lambda tmp: cb.check(cb.yolo_non_utf8(tmp, "truncated.jpg"), "yolo")),
    Case("image_non_utf8_file_name", "train", "ok", "", non_utf8_imagefolder, verify=trained_on(3)),
    Case("image_non_utf8_file_name", "convert", "exit2", "image 1: file name 'caf\\udce9.png' is not valid UTF-8",
         lambda tmp: cb.convert(cb.yolo_non_utf8(tmp), "yolo", "cvat", tmp / "out")),
    # --- COCO -------------------------------------------------------------------------------------------
    Case("coco_truncated_json", "check", "exit1", "annotations.json: not valid JSON", coco_check("truncated")),
    Case("coco_truncated_json", "convert", "exit2", "annotations.json: not valid JSON", coco_convert("truncated")),
    Case("coco_not_json", "convert", "exit2", "annotations.json: not valid JSON", coco_convert("not_json")),
    Case("coco_deeply_nested_json", "convert", "exit2", "annotations.json: not valid JSON (nested too deeply",
         lambda tmp: cb.convert(cb.deeply_nested_json(tmp), "coco", "coco", tmp / "out")),
    Case("coco_5000_digit_integer", "check", "exit1", "annotations.json: holds an integer of more than 4,300 digits",
         lambda tmp: cb.check(cb.huge_integer_json(tmp), "coco")),
    Case("coco_non_utf8_json", "convert", "exit2", "annotations.json: cannot read", coco_convert("latin1")),
    Case("coco_top_level_list", "convert", "exit2", "annotations.json: not a COCO file",
         coco_convert("top_level_list")),
    Case("coco_images_not_a_list", "convert", "exit2", "not a COCO file (no 'images' list)",
         coco_convert("images_object")),
    Case("coco_annotation_not_an_object", "check", "exit1", "annotations.json: annotation #1: not an object",
         coco_check("annotation_list")),
    Case("coco_bbox_strings", "check", "exit1", "annotation 1 (good.png): bbox ['4', '4', '10', '8'] is not 4 finite",
         coco_check("bbox_strings")),
    Case("coco_width_string", "convert", "exit2", "annotations.json: image 1: 'width' '32' is not an integer",
         coco_convert("width_string")),
    Case("coco_nan_box", "check", "exit1", "annotation 1 (good.png): bbox [4, 4, nan, 8] is not 4 finite numbers",
         coco_check("nan_box")),
    Case("coco_nan_box", "train", "exit2", "annotation 1 (good.png): bbox [4, 4, nan, 8]", coco_train("nan_box")),
    Case("coco_infinite_box", "check", "exit1", "annotation 1 (good.png): bbox [4, 4, inf, 8]", coco_check("inf_box")),
    Case("coco_negative_box", "check", "exit1", "annotation 1 (good.png): box [14.0, 4.0, -10.0, 8.0] has zero or "
         "negative size", coco_check("negative_box")),
    Case("coco_negative_box", "train", "ok", "", coco_train("negative_box"), verify=dropped("has zero area")),
    Case("coco_box_outside_image", "check", "exit1", "annotation 1 (good.png): box [40.0, 30.0, 5.0, 5.0] lies outside",
         coco_check("box_outside")),
    Case("coco_box_outside_image", "train", "ok", "", coco_train("box_outside"), verify=dropped("has zero area")),
    Case("coco_unknown_category", "check", "exit1", "annotation 1 (good.png): category_id 7 is not in 'categories'",
         coco_check("unknown_category")),
    Case("coco_unknown_category", "train", "exit2", "category_id 7 is not in 'categories'",
         coco_train("unknown_category")),
    Case("coco_unknown_image_id", "check", "exit1", "annotation 1: image_id 9 is not in 'images'",
         coco_check("unknown_image")),
    Case("coco_duplicate_image_id", "check", "exit1", "annotations.json: image id 1 is used twice",
         coco_check("duplicate_image_id")),
    Case("coco_duplicate_image_id", "convert", "exit2", "annotations.json: image id 1 is used twice",
         coco_convert("duplicate_image_id")),
    Case("coco_duplicate_annotation_id", "check", "exit1", "annotations.json: annotation id 1 is used twice",
         coco_check("duplicate_annotation_id")),
    Case("coco_size_mismatch", "check", "exit1", "good.png: the annotation says 64x48, the image is 32x24",
         coco_check("size_mismatch")),
    Case("coco_size_mismatch", "train", "exit2", "good.png: image is 32x24 but", coco_train("size_mismatch")),
    Case("coco_polygon_two_points", "check", "exit1", "annotation 1 (good.png): polygon 0 has 2 point(s)",
         coco_check("polygon_two_points")),
    Case("coco_polygon_two_points", "train", "ok", "", coco_train("polygon_two_points", "instance_segmentation"),
         verify=lambda r: r.model_built and r.data.train.instances[0].bbox == (4, 4, 10, 8)),
    Case("coco_rle_wrong_length", "check", "exit1", "annotation 1 (good.png): RLE counts add up to 105 pixels, not "
         "24x32 = 768", coco_check("rle_wrong_length")),
    Case("coco_rle_wrong_length", "convert", "exit2", "RLE counts add up to 105 pixels",
         coco_convert("rle_wrong_length", "voc")),
    Case("coco_rle_wrong_length", "train", "exit2", "RLE counts add up to 105 pixels",
         coco_train("rle_wrong_length", "instance_segmentation")),
    Case("coco_rle_string_wrong_length", "check", "exit1", "annotation 1 (good.png): RLE counts add up to 5 pixels",
         coco_check("rle_string_wrong_length")),
    Case("coco_rle_size_mismatch", "check", "exit1", "annotation 1 (good.png): mask size [48, 64] differs from the "
         "image's [24, 32]", coco_check("rle_size_mismatch")),
    Case("coco_empty_dataset", "check", "exit1", "annotations.json: no images", coco_check("empty_images")),
    Case("coco_empty_dataset", "train", "exit2", "annotations.json: no images", coco_train("empty_images")),
    Case("coco_class_without_instances", "check", "ok", "warning: ", coco_check("class_without_instances"),
         verify=lambda r: "category 2 'unused' has no instances" in r.out),
    Case("coco_file_name_climbs_out", "check", "exit1", "image 1: file name '../good.png' is not a path inside the "
         "image folder", coco_check("file_name_parent")),
    Case("coco_file_name_climbs_out", "train", "exit2", "file name '../good.png' is not a path inside",
         coco_train("file_name_parent")),
    Case("coco_file_name_absolute", "convert", "exit2", "image 1: file name '/etc/passwd' is not a path inside",
         coco_convert("file_name_absolute")),
    Case("coco_file_name_windows_drive", "convert", "exit2",
         "image 1: file name 'C:\\\\Users\\\\me\\\\good.png' is not a path inside",
         coco_convert("file_name_windows_drive")),
    # --- Pascal VOC --------------------------------------------------------------------------------------
    Case("voc_truncated_xml", "check", "exit1", "a.xml: not valid XML", voc_check("truncated")),
    Case("voc_billion_laughs", "convert", "exit2", "a.xml: refused", voc_convert("billion_laughs")),
    Case("voc_external_entity", "convert", "exit2", "a.xml: refused", voc_convert("external_entity")),
    Case("voc_external_entity", "train", "exit2", "a.xml: refused", voc_train("external_entity")),
    Case("voc_coordinate_text", "convert", "exit2", "a.xml: object 1: xmin 'four' is not a number",
         voc_convert("coordinate_text")),
    Case("voc_nan_coordinate", "check", "exit1", "a.xml: object 1: xmin 'nan' is not a number",
         voc_check("nan_coordinate")),
    Case("voc_no_bndbox", "convert", "exit2", "a.xml: object 1: no <bndbox>", voc_convert("no_bndbox")),
    Case("voc_file_name_climbs_out", "check", "exit1", "a.xml: <filename> '../../outside.png' is not a path inside",
         voc_check("filename_parent")),
    Case("voc_file_name_absolute", "convert", "exit2", "a.xml: <filename> '/etc/passwd' is not a path inside",
         voc_convert("filename_absolute")),
    Case("voc_size_mismatch", "check", "exit1", "good.png: the annotation says 64x48, the image is 32x24",
         voc_check("size_mismatch")),
    Case("voc_size_mismatch", "train", "exit2", "good.png: image is 32x24 but", voc_train("size_mismatch")),
    # --- YOLO -------------------------------------------------------------------------------------------
    Case("yolo_nan_coordinate", "check", "exit1", "good.txt: line 1: '0 nan 0.333333 0.3125 0.333333' has a value that "
         "is not a finite number", yolo_check("nan")),
    Case("yolo_unknown_class", "check", "exit1", "good.txt: line 1: class 7 is not in names",
         yolo_check("unknown_class")),
    Case("yolo_unknown_class", "train", "exit2", "good.txt: line 1: class 7 is not in names",
         yolo_train("unknown_class")),
    Case("yolo_wrong_field_count", "convert", "exit2", "good.txt: line 1: 4 fields", yolo_convert("wrong_field_count")),
    Case("yolo_pixel_coordinates", "check", "exit1", "good.txt: line 1: coordinates must be normalised",
         yolo_check("pixel_coordinates")),
    Case("yolo_negative_size", "check", "exit1", "good.txt: line 1: box size -0.3125 x 0.333333 is negative",
         yolo_check("negative_size")),
    Case("yolo_non_utf8_label_file", "check", "exit1", "good.txt: cannot read", yolo_check("latin1")),
    Case("yolo_truncated_data_yaml", "check", "exit1", "data.yaml: not valid YAML", yolo_check(data_yaml="truncated")),
    Case("yolo_python_tag_in_data_yaml", "convert", "exit2", "data.yaml: not valid YAML",
         yolo_convert(data_yaml="python_tag"), verify=no_pwned),
    Case("yolo_yaml_alias_bomb", "convert", "exit2", "data.yaml: refused: its aliases (*name) expand to more than",
         yolo_convert(data_yaml="alias_bomb")),
    Case("yolo_yaml_alias_bomb", "train", "exit2", "data.yaml: refused: its aliases",
         yolo_train(data_yaml="alias_bomb")),
    Case("yolo_names_not_a_list", "convert", "exit2", "data.yaml: 'names' is missing or not a list",
         yolo_convert(data_yaml="names_number")),
    Case("yolo_list_file_climbs_out", "check", "exit1", "train.txt: line 2: '../outside/outside.png' is not a path "
         "inside", yolo_check(data_yaml="list_escapes_root", list_file="list_escapes_root")),
    Case("yolo_empty_split", "check", "exit1", "images/val: no images for split 'val'", yolo_empty_split),
    # --- CVAT -------------------------------------------------------------------------------------------
    Case("cvat_truncated_xml", "check", "exit1", "annotations.xml: not valid XML", cvat_check("truncated")),
    Case("cvat_billion_laughs", "convert", "exit2", "annotations.xml: refused", cvat_convert("billion_laughs")),
    Case("cvat_external_entity", "convert", "exit2", "annotations.xml: refused", cvat_convert("external_entity")),
    Case("cvat_external_entity", "train", "exit2", "annotations.xml: refused", cvat_train("external_entity")),
    Case("cvat_unknown_label", "convert", "exit2",
         "image 0 (good.png): shape 1 <box>: label 'dog' is not in the file's <labels>", cvat_convert("unknown_label")),
    Case("cvat_polygon_two_points", "check", "exit1", "shape 1 <polygon>: a polygon needs at least 3 points",
         cvat_check("polygon_two_points")),
    Case("cvat_rle_wrong_length", "convert", "exit2", "shape 1 <mask>: rle of a 10x8 mask: run lengths sum to 12",
         cvat_convert("rle_wrong_length")),
    Case("cvat_nan_coordinate", "check", "exit1", "shape 1 <box>: xtl 'nan' is not a number",
         cvat_check("nan_coordinate")),
    Case("cvat_duplicate_image_id", "check", "exit1", "image 0 (gray.png): image id 0 is used twice (also good.png)",
         cvat_check("duplicate_image_id")),
    Case("cvat_size_mismatch", "check", "exit1", "good.png: the annotation says 64x48, the image is 32x24",
         cvat_check("size_mismatch")),
    Case("cvat_size_mismatch", "train", "exit2", "good.png: image is 32x24 but", cvat_train("size_mismatch")),
    Case("cvat_file_name_climbs_out", "check", "exit1", "image 0: name '../outside.png' is not a path inside",
         cvat_check("name_parent")),
    Case("cvat_file_name_absolute", "convert", "exit2", "image 0: name '/etc/passwd' is not a path inside",
         cvat_convert("name_absolute")),
    # --- Label Studio -----------------------------------------------------------------------------------
    Case("labelstudio_truncated_json", "check", "exit1", "tasks.json: not valid JSON", ls_check("truncated")),
    Case("labelstudio_top_level_string", "convert", "exit2", "tasks.json: not a Label Studio export",
         ls_convert("top_level_string")),
    Case("labelstudio_empty_export", "check", "exit1", "tasks.json: no tasks", ls_check("empty")),
    Case("labelstudio_value_string", "convert", "exit2", "task 1, result 'r1': 'x' '12.5' is not a finite number",
         ls_convert("value_string")),
    Case("labelstudio_nan_percent", "check", "exit1", "task 1, result 'r1': 'width' nan is not a finite number",
         ls_check("nan_percent")),
    Case("labelstudio_unknown_result_type", "convert", "exit2", "task 1, result 'r1': unknown result type "
         "'rectanglelables'", ls_convert("unknown_type")),
    Case("labelstudio_brush_wrong_length", "convert", "exit2", "task 1, result 'b1': cannot decode the brush RLE",
         ls_convert("brush_wrong_length")),
    Case("labelstudio_size_mismatch", "check", "exit1", "good.png: the annotation says 64x48, the image is 32x24",
         ls_check("size_mismatch")),
    Case("labelstudio_url_climbs_out", "check", "exit1", "task 1: the image URL '/data/local-files/?d=../outside.png' "
         "climbs out", ls_check("url_parent")),
    Case("labelstudio_url_climbs_out", "train", "exit2", "task 1: the image URL", ls_train("url_parent")),
    # --- labelme ----------------------------------------------------------------------------------------
    Case("labelme_truncated_json", "check", "exit1", "good.json: not valid JSON", labelme_check("truncated")),
    Case("labelme_shapes_not_a_list", "convert", "exit2", "good.json: not a labelme file (no 'shapes' list)",
         labelme_convert("shapes_object")),
    Case("labelme_points_string", "convert", "exit2", "good.json: shape 1 ('cell'), rectangle: 'points' is missing "
         "or not a list", labelme_convert("points_string")),
    Case("labelme_nan_point", "check", "exit1", "good.json: shape 1 ('cell'), rectangle: point 2 [nan, 12] is not",
         labelme_check("nan_point")),
    Case("labelme_polygon_two_points", "check", "exit1", "good.json: shape 1 ('cell'): a polygon needs at least 3",
         labelme_check("polygon_two_points")),
    Case("labelme_rectangle_one_point", "convert", "exit2", "shape 1 ('cell'): a rectangle needs 2 points, got 1",
         labelme_convert("rectangle_one_point")),
    Case("labelme_size_mismatch", "check", "exit1", "good.json: imageWidth x imageHeight 64x48 differs",
         labelme_check("size_mismatch")),
    Case("labelme_size_mismatch", "train", "exit2", "good.json: imageWidth x imageHeight 64x48 differs",
         labelme_train("size_mismatch")),
    Case("labelme_mask_decompression_bomb", "check", "exit1", "shape 1 ('cell'): 'mask': 20000x20000 pixels, more "
         "than visiontl reads", lambda tmp: cb.check(cb.labelme_mask_bomb(tmp), "labelme")),
    Case("labelme_foreign_absolute_image_path", "check", "ok", "0 error(s)",
         labelme_check("image_path_foreign_absolute")),
    Case("labelme_absolute_image_path_outside", "train", "ok", "", labelme_absolute_outside, verify=beside_the_json),
    # --- semantic segmentation masks --------------------------------------------------------------------
    Case("mask_class_id_out_of_range", "train", "exit2", "a.png: values 7 are not class ids 0..2",
         masks_train("out_of_range")),
    Case("mask_size_mismatch", "train", "exit2", "a.png is 32x24 but its mask", masks_train("small")),
    Case("mask_not_an_image", "train", "exit2", "a.png: cannot decode mask", masks_train("not_an_image.jpg")),
    Case("mask_truncated_image", "train", "exit2", "a.png: cannot decode image", masks_train("ids", "truncated.jpg")),
    Case("mask_palette_png", "train", "ok", "", masks_train("palette_ids"), verify=lambda r: r.model_built),
    Case("semantic_coco_size_mismatch", "train", "exit2", "good.png: image is 32x24 but", coco_train(
        "size_mismatch", "segmentation")),
    # --- classification: image folders and CSV lists ----------------------------------------------------
    Case("imagefolder_class_without_images", "train", "exit2", "train: class 'b' has no images",
         imagefolder_train({"a": ["good.png"], "b": []})),
    Case("imagefolder_empty_dataset", "train", "exit2", "train: found 0 class(es)", imagefolder_train({})),
    Case("csv_unknown_label", "train", "exit2", "val.csv:3: unknown label 'c'",
         csv_train([("good.png", "a"), ("gray.png", "b")], val=[("good.png", "a"), ("gray.png", "c")])),
    Case("csv_non_utf8", "train", "exit2", "train.csv: cannot read",
         csv_train([("good.png", "café"), ("gray.png", "b")], encoding="latin-1")),
    Case("csv_truncated_image", "train", "exit2", "truncated.jpg: cannot decode image",
         csv_train([("truncated.jpg", "a"), ("gray.png", "b")])),
    Case("csv_missing_image", "train", "exit2", "missing.png: image file not found",
         csv_train([("missing.png", "a"), ("gray.png", "b")])),
    # --- training configs -------------------------------------------------------------------------------
    Case("config_truncated_yaml", "train", "exit2", "config.yaml: not valid YAML", config_train("truncated")),
    Case("config_python_object_tag", "train", "exit2", "config.yaml: not valid YAML (could not determine a "
         "constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'", config_train("python_object"),
         verify=no_pwned),
    Case("config_wrong_type", "train", "exit2", "train.epochs: Input should be a valid integer",
         config_train("wrong_type")),
    Case("config_list_for_a_section", "train", "exit2", "data: Input should be a valid dictionary",
         config_train("list_section")),
    Case("config_top_level_list", "train", "exit2", "config.yaml: the top level must be a mapping",
         config_train("top_level_list")),
    Case("config_non_utf8", "train", "exit2", "config.yaml: not valid YAML", config_train("latin1")),
    Case("config_yaml_alias_bomb", "train", "exit2", "config.yaml: refused: its aliases", config_train("alias_bomb")),
    Case("config_duplicate_section", "train", "exit2", "config.yaml: refused: key 'train' appears twice in one mapping "
         "(lines 2 and 6)", config_train("duplicate_section")),
    Case("config_infinite_float", "train", "exit2", "config.yaml: train.lr: Input should be a finite number",
         config_train("nonfinite_lr")),
    Case("config_nan_float", "train", "exit2", "config.yaml: finetune.lr_mult: Input should be a finite number",
         config_train("nan_lr_mult")),
    Case("config_huge_image_size", "train", "exit2", "config.yaml: data.image_size: Input should be less than or "
         "equal to 16384", config_train("huge_image_size")),
    Case("config_seed_beyond_int64", "train", "exit2", "config.yaml: train.seed: Input should be less than or equal "
         "to 9223372036854775807", config_train("huge_seed")),
    Case("config_deeply_nested", "train", "exit2", "config.yaml: refused: nested more than 100 levels deep (line 3)",
         config_train("deeply_nested")),
    Case("config_5000_digit_integer", "train", "exit2", "config.yaml: refused: line 3: an integer of 5,000 characters",
         config_train("huge_integer")),
    # --- names that would drive a terminal, sizes that are claims, files a report reads ------------------
    Case("hostile_names", "check", "exit1", "images/evil\\x1b[2J.png: the annotation says 64x48",
         lambda tmp: cb.check(cb.coco_hostile_names(tmp, 64, 48), "coco"), verify=nothing_raw),
    Case("hostile_names", "convert", "ok", "evil\\x1b[2J.png: annotation 1 (dog\\nAP 1.0000 (forged)): box",
         lambda tmp: cb.convert(cb.coco_hostile_names(tmp, bbox=[30, 20, 10, 8]), "coco", "yolo", tmp / "out"),
         verify=nothing_raw),
    Case("hostile_names", "stats", "ok", "     1 dog\\nAP 1.0000 (forged)",
         lambda tmp: cb.stats(cb.coco_hostile_names(tmp), "coco", tmp / "out"), verify=nothing_raw),
    Case("hostile_names", "train", "ok", "classes (dog\\nAP 1.0000 (forged) 1)", hostile_train(), verify=nothing_raw),
    Case("hostile_names", "train", "exit2", "images/evil\\x1b[2J.png: image is 32x24 but",
         hostile_train(width=64, height=48), verify=nothing_raw),
    Case("coco_boxes_all_one_size", "stats", "ok", "box size sqrt(w*h) px    min 8.94  median 8.94",
         lambda tmp: cb.stats(cb.coco(tmp, "good"), "coco", tmp / "out")),
    Case("coco_100000_categories", "stats", "ok", "(the 50 classes with the most instances, of 100000;",
         lambda tmp: cb.stats(cb.coco_many_categories(tmp, 100_000), "coco", tmp / "out"), verify=top_classes),
    Case("coco_100000_categories", "train", "exit2", "annotations.json: 100000 categories, 99999 of them without "
         "a single annotation: a model head is not built for more than 10000", many_categories_train(100_000)),
    Case("labelme_embedded_image_only", "check", "ok", "0 error(s), 0 warning(s)",
         lambda tmp: cb.check(cb.labelme_embedded_only(tmp), "labelme")),
    Case("labelme_embedded_image_only", "train", "ok", "", labelme_embedded_train, verify=embedded_pixels),
    Case("report_gallery_name_nul", "report", "ok", "report written to", report_of(gallery_png="a\x00b.png"),
         verify=gallery_picture_missing),
    Case("report_gallery_name_300_chars", "report", "ok", "report written to",
         report_of(gallery_png="a" * 300 + ".png"), verify=gallery_picture_missing),
    Case("report_metrics_nested_100000_deep", "report", "exit2", "metrics.json: not readable JSON (nested too deeply)",
         report_of(metrics='{"a": ' * 100_000 + "1" + "}" * 100_000)),
]


def test_the_corpus_has_every_kind_once_and_the_docs_list_it() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len({c.name for c in CASES}) >= 30
    table = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2] for line in table.splitlines()
            if line.startswith("| `")}
    words = {"ok": "handled", "exit1": "exit 1", "exit2": "exit 2"}
    for c in CASES:
        assert f"{c.entry}: {words[c.outcome]}" in rows.get(c.name, ""), f"docs/reliability.md: no row for {c.id}"
    assert set(rows) == {c.name for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    r = run(case, tmp_path, monkeypatch, capsys)
    shown = f"exit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    if case.outcome == "ok":
        assert r.code == 0, shown
        assert case.message in r.out, shown
        if case.entry == "train":
            assert r.model_built, shown
    elif case.outcome == "exit1":
        assert case.entry == "check"
        assert r.code == 1, shown
        hits = [line for line in r.error_lines() if case.message in line]
        assert len(hits) == 1, shown  # the problem, on one line of its own
        assert "Traceback" not in r.err, shown  # stderr holds the progress bar only
    else:
        assert r.code == 2, shown
        lines = r.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("visiontl: error: "), shown
        assert case.message in lines[0], shown
        if case.entry == "train":
            assert not r.model_built and not (r.tmp / "run" / "checkpoints").exists(), shown
    if case.verify is not None:
        case.verify(r)


# The file every broken one of its folder was made from: it reads cleanly, so each case is wrong in one way.
REFERENCES = [
    Case("coco_good", "check", "ok", "0 error(s), 0 warning(s)", coco_check("good")),
    Case("voc_good", "check", "ok", "0 error(s), 0 warning(s)", voc_check("good")),
    Case("yolo_good", "check", "ok", "0 error(s), 0 warning(s)", yolo_check()),
    Case("cvat_good", "check", "ok", "0 error(s), 0 warning(s)", cvat_check("good")),
    Case("labelstudio_good", "check", "ok", "0 error(s), 0 warning(s)", ls_check("good")),
    Case("labelme_good", "check", "ok", "0 error(s), 0 warning(s)", labelme_check("good")),
]


@pytest.mark.parametrize("case", REFERENCES, ids=[c.name for c in REFERENCES])
def test_reference_files_read_cleanly(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    r = run(case, tmp_path, monkeypatch, capsys)
    assert r.code == 0 and case.message in r.out, r.out


@pytest.mark.parametrize("name", ["image_non_utf8_file_name_truncated-check-exit1", "coco_width_string-convert-exit2"])
def test_a_real_process_prints_the_line_and_no_traceback(name: str, tmp_path: Path) -> None:
    """The same cases as a user runs them: a real process whose stdout is strict UTF-8 (a C.UTF-8 locale),
    where printing a non-UTF-8 file name used to end in a UnicodeEncodeError traceback."""
    import subprocess
    import sys

    case = next(c for c in CASES if c.id == name)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-m", "visiontl", *case.build(tmp_path)], capture_output=True, cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, timeout=300)
    out, err = done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
    assert done.returncode == int(case.outcome[-1]) and "Traceback" not in err, (out, err)
    assert case.message in (out if case.outcome == "exit1" else err), (out, err)
