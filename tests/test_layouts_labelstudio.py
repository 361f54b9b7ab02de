"""Label Studio layouts as users get them (docs/data.md, "CVAT, Label Studio, labelme"): the JSON export of a
project whose images were uploaded (`/data/upload/<project>/<8 hex>-<name>`) or served from local storage
(`/data/local-files/?d=<path>`), and the JSON-MIN export, each beside the folder of the user's images. Each is
checked, converted to COCO and trained for 2 steps with data.format, data.root, data.train and data.val only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from layout_kit import check_convert_train, write_jpeg

from visiontl.data.formats.labelstudio.urls import image_file_name
from visiontl.errors import DataError

EXPORT = "project-3-at-2024-05-06-10-11-4f2a9c1b.json"  # the name Label Studio gives an export
# (image, [(label, x, y, w, h) in pixels]) of 64x48 images
IMAGES = [("photo_0.jpg", [("cell", 4, 6, 20, 16), ("blob", 30, 20, 24, 18)]),
          ("photo_1.jpg", [("cell", 10, 10, 30, 20)]),
          ("photo_2.jpg", [("blob", 2, 2, 40, 30), ("cell", 44, 30, 12, 12)]),
          ("photo_3.jpg", [("cell", 20, 8, 16, 24)])]
BOXES = sum(len(boxes) for _, boxes in IMAGES)


def _value(label: str, x: float, y: float, w: float, h: float) -> dict:
    return {"x": x / 64 * 100, "y": y / 48 * 100, "width": w / 64 * 100, "height": h / 48 * 100, "rotation": 0,
            "rectanglelabels": [label]}


def _full_export(urls: list[str]) -> list[dict]:
    """Tasks as Label Studio's "JSON" export writes them (the fields a 1.x export has)."""
    tasks = []
    for k, ((_, boxes), url) in enumerate(zip(IMAGES, urls), start=1):
        result = [{"original_width": 64, "original_height": 48, "image_rotation": 0, "value": _value(*box),
                   "id": f"r{k}x{j}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                   "origin": "manual"} for j, box in enumerate(boxes)]
        annotation = {"id": 10 + k, "completed_by": 1, "result": result, "was_cancelled": False,
                      "ground_truth": False, "created_at": "2024-05-06T10:00:00.000000Z",
                      "updated_at": "2024-05-06T10:00:00.000000Z", "draft_created_at": None, "lead_time": 12.5,
                      "prediction": {}, "result_count": 0, "unique_id": f"u-{k}", "import_id": None,
                      "last_action": None, "task": k, "project": 3, "updated_by": 1, "parent_prediction": None,
                      "parent_annotation": None, "last_created_by": None}
        task = {"id": k, "annotations": [annotation], "drafts": [], "predictions": [], "data": {"image": url},
                "meta": {}, "created_at": "2024-05-06T09:00:00.000000Z", "updated_at": "2024-05-06T10:00:00.000000Z",
                "inner_id": k, "total_annotations": 1, "cancelled_annotations": 0, "total_predictions": 0,
                "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 3,
                "updated_by": 1, "comment_authors": []}
        if url.startswith("/data/upload/"):
            task["file_upload"] = url.rsplit("/", 1)[1]
        tasks.append(task)
    return tasks


def _write(path: Path, data: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def _images(folder: Path, names: list[str]) -> None:
    for seed, name in enumerate(names):
        write_jpeg(folder / name, seed=seed)


def _data(root: Path) -> dict:
    return {"root": root, "train": EXPORT, "val": EXPORT}


def test_json_export_of_uploaded_images(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """mydata/<export>.json naming /data/upload/3/<8 hex>-photo_k.jpg; mydata/images/ holds the user's own
    photos (without the prefix Label Studio added), or copies from Label Studio's media folder (with it)."""
    root = tmp_path / "mydata"
    prefixes = ["4f2a9c1b", "0d9e8f7a", "a1b2c3d4", "99887766"]
    urls = [f"/data/upload/3/{p}-{name}" for p, (name, _) in zip(prefixes, IMAGES)]
    source = _write(root / EXPORT, _full_export(urls))
    _images(root / "images", ["photo_0.jpg", "photo_1.jpg", "photo_2.jpg", "99887766-photo_3.jpg"])
    check_convert_train(capsys, tmp_path, "labelstudio", source, _data(root), images=4, boxes=BOXES)
    coco = json.loads(next((tmp_path / "as_coco").glob("*.json")).read_text())
    assert [i["file_name"] for i in coco["images"]] == ["images/photo_0.jpg", "images/photo_1.jpg",
                                                        "images/photo_2.jpg", "images/99887766-photo_3.jpg"]


def test_json_export_of_local_files(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Local storage: LOCAL_FILES_DOCUMENT_ROOT is the folder above the dataset, so the URLs are
    /data/local-files/?d=dataset/images/photo_k.jpg; the export is saved in dataset/."""
    root = tmp_path / "dataset"
    urls = [f"/data/local-files/?d=dataset/images/{name}" for name, _ in IMAGES]
    source = _write(root / EXPORT, _full_export(urls))
    _images(root / "images", [name for name, _ in IMAGES])
    check_convert_train(capsys, tmp_path, "labelstudio", source, _data(root), images=4, boxes=BOXES)


def test_json_min_export_with_its_label_config(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """JSON-MIN (one flat record per annotation), the images in images/, and the project's labelling config
    copied beside as label_config.xml: its label order is the category order, its unused label kept."""
    root = tmp_path / "mydata"
    records = []
    for k, (name, boxes) in enumerate(IMAGES, start=1):
        labels = [{**_value(*box), "original_width": 64, "original_height": 48} for box in boxes]
        records.append({"image": f"/data/upload/3/4f2a9c1{k}-{name}", "id": k, "label": labels, "annotator": 1,
                        "annotation_id": 10 + k, "created_at": "2024-05-06T10:00:00.000000Z",
                        "updated_at": "2024-05-06T10:00:00.000000Z", "lead_time": 8.25})
    source = _write(root / EXPORT, records)
    (root / "label_config.xml").write_text(
        '<View>\n  <Image name="image" value="$image"/>\n  <RectangleLabels name="label" toName="image">\n'
        '    <Label value="blob" background="green"/>\n    <Label value="debris" background="red"/>\n'
        '    <Label value="cell" background="blue"/>\n  </RectangleLabels>\n</View>\n')
    _images(root / "images", [name for name, _ in IMAGES])
    check_convert_train(capsys, tmp_path, "labelstudio", source, _data(root), images=4, boxes=BOXES)
    coco = json.loads(next((tmp_path / "as_coco").glob("*.json")).read_text())
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "blob"), (2, "debris"), (3, "cell")]


@pytest.mark.parametrize("url, files, expected", [
    ("/data/upload/3/4f2a9c1b-x.jpg", ["x.jpg"], "x.jpg"),
    ("/data/upload/3/4f2a9c1b-x.jpg", ["4f2a9c1b-x.jpg", "x.jpg"], "4f2a9c1b-x.jpg"),  # as uploaded, first
    ("/data/upload/3/4f2a9c1b-x.jpg", ["images/x.jpg"], "images/x.jpg"),
    ("/data/upload/3/4f2a9c1b-x.jpg", ["upload/3/4f2a9c1b-x.jpg"], "upload/3/4f2a9c1b-x.jpg"),  # the media folder
    ("/data/upload/3/4f2a9c1b-x.jpg", [], "4f2a9c1b-x.jpg"),  # not found: the base name, for the message
    ("/data/local-files/?d=data/set/a/x.jpg", ["set/a/x.jpg", "x.jpg"], "set/a/x.jpg"),
    ("/data/local-files/?d=images%2Fa%20b.jpg", ["images/a b.jpg"], "images/a b.jpg"),
    ("/data/local-files/?d=C:\\data\\a\\x.jpg", ["a/x.jpg"], "a/x.jpg"),
    ("/data/local-files/?d=set/a/x.jpg", [], "set/a/x.jpg"),  # not found: the d= path (the writer's form)
    ("s3://bucket/train/x.jpg", ["train/x.jpg"], "train/x.jpg"),
    ("s3://bucket/train/x.jpg", ["images/x.jpg"], "images/x.jpg"),
    ("gs://bucket/x.jpg", [], "x.jpg"),
    ("https://host/static/x%20y.jpg?token=abc", ["x y.jpg"], "x y.jpg"),
    ("/home/user/pics/x.jpg", ["pics/x.jpg"], "pics/x.jpg"),
    ("http://host/a%5Cx.jpg", ["a/x.jpg"], "a/x.jpg"),  # an escaped backslash is a separator, never a name
])
def test_image_urls_map_to_files_under_the_image_folder(tmp_path: Path, url: str, files: list[str],
                                                        expected: str) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert image_file_name(url, tmp_path, "t.json: task 1") == expected


@pytest.mark.parametrize("url", ["/data/local-files/?d=../x.jpg", "/data/local-files/?d=a%2F..%2F..%2Fx.jpg",
                                 "/data/upload/3/..%2F..%2Fx.jpg", "https://host/a/..\\..\\x.jpg"])
def test_image_urls_never_leave_the_image_folder(tmp_path: Path, url: str) -> None:
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"^t.json: task 1: the image URL .* climbs out of the image folder"):
        image_file_name(url, tmp_path / "images", "t.json: task 1")
