"""Box CSV (`data.format: csv` for detection) <-> `AnnotationSet`. (The package is not named `csv`: it would
shadow the standard library's module for tools that put this folder on the path.)

The CSVs detection datasets ship, one row per box:

- the TensorFlow Object Detection API's `filename,width,height,class,xmin,ymin,xmax,ymax` (its tutorials'
  `xml_to_csv.py`, labelImg-to-CSV scripts, Roboflow's "Tensorflow CSV" export: `train/_annotations.csv`
  beside the images of each split);
- with a header, any column order and extra columns: names are read case-insensitively with the usual
  aliases (`ALIASES`: filename / file_name / image / image_path / path, class / label / class_name /
  category, xmin / x_min / x1 / left, ...); width and height are optional (read from the image header when
  absent or empty); the other columns' non-empty values become instance attributes (text);
- keras-retinanet's headerless `path,x1,y1,x2,y2,class_name`, where `path,,,,,` is an image without boxes,
  with its class file `class_name,id` (no header) beside the CSV as `classes.csv` or `class_mapping.csv`.

Mapping rules: a row's corners become the box `(xmin, ymin, xmax - xmin, ymax - ymin)` in pixels, as
written (a row whose max is below its min is an error). A row with the class and box fields all empty is an
image without objects (in either layout). Images get ids 1..N in order of first appearance, instances 1..N
in row order; every row of one image must give it the same size. Class ids come from the class file when
there is one (a class it does not list is an error), else 1..N in order of first appearance in the file; for
training, the val split's classes are matched to the train split's by name, so the two files need not list
them in the same order. File names are paths inside the image folder (an absolute one or one with `..` is
refused, naming the line): that folder is `--images` / `data.images` when given, else the CSV's folder, or
`images/` beside the CSV when the first image is there and not in the CSV's folder. A malformed row stops
with one line naming the file and line.

Which CSV: a file is itself; a folder holds `_annotations.csv` or exactly one other CSV (class files aside);
a split `S` under a root is `S` itself (a file, or a folder as above), else `S.csv`, `S_labels.csv` or
`S_annotations.csv` in the root (`locate_split`).

`write_box_csv` writes Roboflow's split folder (see its docstring for what the layout cannot hold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, WriteReport
from visiontl.data.formats.boxcsv.reader import ALIASES, find_csv, locate_split, read_box_csv
from visiontl.data.formats.boxcsv.writer import HEADER, write_box_csv

__all__ = ["ALIASES", "HEADER", "find_csv", "locate_split", "read", "read_box_csv", "read_split", "write",
           "write_box_csv"]


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_box_csv(find_csv(src, split), images, sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_box_csv(aset, out, split, copy_images=copy_images)


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    return read_box_csv(locate_split(root, split), images)
