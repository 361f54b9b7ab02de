"""Label Studio JSON <-> `AnnotationSet`.

Reads both export styles of Label Studio:

- the full export ("JSON"): a list of tasks, each with `data` (the image URL or path under a data key),
  `annotations[].result[]` and optionally `predictions[].result[]`;
- JSON-MIN: a list of flat records, one per annotation, holding the data fields (the image URL), the task
  `id` and one list per control name (`"label": [{x, y, width, height, rectanglelabels, original_width, ...}]`).

Results held by the model (everything else is counted in `ReadReport.dropped`, never silently):

- `rectanglelabels`: x, y, width, height in percent of original_width / original_height. `rotation` is in
  degrees, clockwise on screen, about the rectangle's top-left corner (x, y). A rotated rectangle follows the
  model's convention (`rotation.py`): the box is the axis-aligned envelope of its four corners and
  `attributes["rotated_box"] = [cx, cy, w, h, angle]` (pixels, angle in (-180, 180]) holds the rectangle, so
  the writer gives it back (and CVAT's writer writes it as CVAT's rotated box).
- `polygonlabels`: points in percent -> one COCO polygon in pixels, box = the polygon's bounding box.
- `brushlabels`: Label Studio's own bit-packed RLE (`rle`, `format: "rle"`; thi.ng rle-pack, decoded the way
  label-studio-converter decodes it: H*W*4 RGBA values, foreground = alpha > 0) -> a compressed COCO RLE.
- `labels` results that carry a rectangle, polygon or brush geometry are read like the typed ones.

Which annotation of a task: cancelled ones (`was_cancelled`, `skipped`) are skipped; of the others the most
recently created one (`created_at`; when equal or absent, the last one in the list) is read, earlier ones are
counted as not read. A task with no usable annotation is read from its latest prediction instead (scores kept);
a task with neither is not an image of the set (counted). Category ids are 1..N in the order of the labelling
config's `<Label value=...>`s, those no result names included: the config is `label_config` when given
(labels found only in the JSON follow, in order of first appearance), else `label_config.xml` beside the JSON
(as the writer writes it) when it names every label the tasks use. Without a config they are 1..N in order of
first appearance (an export does not carry its project's config: the project's ids and empty categories are
lost). Images get ids 1..N in task order.

The image: `attributes["url"]` keeps the URL as written (`/data/upload/3/abc12345-x.jpg`,
`/data/local-files/?d=dir/x.jpg`, `s3://bucket/dir/x.jpg`, `https://host/dir/x.jpg`, a plain path);
`file_name` is the file under the image folder it names (`urls.py`: the longest tail of its path, in the
folder or its `images/` sub-folder, with or without an upload's prefix). The image folder is `image_root`
when given, else the JSON's folder (`read`: data check, convert) or data.root (`read_split`: training, as
data.images documents); the two are the same folder when the export is saved in data.root.
Width and height come from original_width / original_height; when no result carries them the image file is
read; when it cannot be found either, that is an error naming the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontl.data.annotations import AnnotationSet, WriteReport
from visiontl.data.formats.labelstudio.codec import brush_decode, brush_encode, brush_to_mask, mask_to_brush
from visiontl.data.formats.labelstudio.label_config import (CONFIG_NAME, CONTROL_NAMES, HELD, TAGS, LabelConfig,
                                                             controls_of, labelstudio_config, parse_label_config,
                                                             read_label_config)
from visiontl.data.formats.labelstudio.reader import read_labelstudio
from visiontl.data.formats.labelstudio.results import instance_results, prediction_results
from visiontl.data.formats.labelstudio.writer import write_labelstudio

# The public Label Studio API: the reader and the writer; the labelling config (`LabelConfig`, one parser for
# the reader, `visiontl serve` and `predict --label-config`); the results of instances and of predictions (one
# conversion for the writer and serve, so a served prediction and a written one are the same JSON).
__all__ = ["read_labelstudio", "write_labelstudio", "labelstudio_config", "brush_decode", "brush_encode",
           "brush_to_mask", "mask_to_brush", "LabelConfig", "parse_label_config", "read_label_config",
           "controls_of", "instance_results", "prediction_results", "HELD", "TAGS", "CONTROL_NAMES", "CONFIG_NAME"]


# The registry's interface (visiontl.data.formats.registry).
def read(src: Path, images: Path | None, split: str | None, *, sanitize: bool, problems: list[str] | None,
         classes: list[str] | None) -> AnnotationSet:
    return read_labelstudio(src, images, sanitize=sanitize)


def write(aset: AnnotationSet, out: Path, split: str, copy_images: bool, options: dict[str, Any]) -> WriteReport:
    return write_labelstudio(aset, out / "tasks.json")


def read_split(root: Path, split: str, *, images: Path | None, annotations: Path | None,
               classes: list[str] | None) -> AnnotationSet:
    # The image folder: data.images, else data.root (the export's folder when it is saved there, as `read`).
    return read_labelstudio(root / split, images if images is not None else root)
