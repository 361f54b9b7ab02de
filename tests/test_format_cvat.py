"""CVAT for images 1.1 XML <-> `AnnotationSet`: task, project and track exports read value by value, the mask
RLE convention against numpy-drawn masks, write -> read round trips, what the writer reports lost, and
one-line errors for broken or hostile files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from visiontl.data.annotations import AnnotationSet, Category, ImageRecord, Instance
from visiontl.data.formats.cvat import cvat_rle_to_mask, mask_to_cvat_rle, read_cvat, write_cvat
from visiontl.data.formats.rotation import envelope
from visiontl.errors import DataError

HEAD = '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n'


def _xml(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body + "\n</annotations>\n", encoding="utf-8")
    return path


def _coco(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _decode(seg: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")}).astype(bool)


# A 3x4 mask at left=2, top=3 in a 40x30 image. Row-major: 0110 1111 0010 -> runs bg1 fg2 bg1 fg4 bg2 fg1 bg1.
PATTERN = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=bool)


def _pattern_mask() -> np.ndarray:
    full = np.zeros((30, 40), dtype=bool)
    full[3:6, 2:6] = PATTERN
    return full


TASK = """<meta><task><id>7</id><name>streets</name><size>2</size><mode>annotation</mode>
  <start_frame>0</start_frame><stop_frame>1</stop_frame><frame_filter></frame_filter>
  <labels>
    <label><name>car</name><type>any</type><attributes>
      <attribute><name>color</name><mutable>False</mutable><input_type>select</input_type>
        <default_value>red</default_value><values>red
blue</values></attribute>
      <attribute><name>parked</name><mutable>False</mutable><input_type>checkbox</input_type>
        <default_value>false</default_value><values>false</values></attribute>
      <attribute><name>doors</name><mutable>False</mutable><input_type>number</input_type>
        <default_value>2</default_value><values>2
5
1</values></attribute>
      <attribute><name>speed</name><mutable>True</mutable><input_type>number</input_type>
        <default_value>0</default_value><values>0
100
0.5</values></attribute>
    </attributes></label>
    <label><name>person</name><attributes /></label>
    <label><name>tree</name><attributes /></label>
  </labels></task><dumped>2024-05-01</dumped></meta>
<image id="0" name="sub/img1.jpg" width="40" height="30">
  <box label="car" source="manual" occluded="1" xtl="1.50" ytl="2.00" xbr="11.25" ybr="12.00" z_order="1">
    <attribute name="color">blue</attribute>
    <attribute name="parked">true</attribute>
    <attribute name="doors">4</attribute>
    <attribute name="speed">12.5</attribute>
  </box>
  <box label="person" source="auto" occluded="0" xtl="20.00" ytl="5.00" xbr="30.00" ybr="25.00" rotation="30.00" z_order="0" group_id="2" />
  <polygon label="person" source="manual" occluded="0" points="5.00,5.00;15.50,5.00;15.50,20.25;5.00,18.00" z_order="0" />
  <mask label="car" source="semi-auto" occluded="0" rle="1, 2, 1, 4, 2, 1, 1" left="2" top="3" width="4" height="3" z_order="0" />
  <polyline label="car" source="manual" occluded="0" points="1.00,1.00;2.00,2.00" z_order="0" />
  <polyline label="person" source="manual" occluded="0" points="1.00,1.00;3.00,2.00" z_order="0" />
  <points label="person" source="manual" occluded="0" points="4.00,4.00" z_order="0" />
  <tag label="car" source="manual" />
</image>
<image id="3" name="img2.jpg" width="40" height="30">
</image>"""


def test_task_export_reads_every_value(tmp_path: Path) -> None:
    path = _xml(tmp_path / "annotations.xml", TASK)
    aset = read_cvat(path)
    assert aset.image_root == tmp_path  # no images/ folder beside the file
    assert aset.report.source == str(path)
    # Label order of <meta>; "tree" has no shapes and is still a category.
    assert aset.categories == [Category(1, "car"), Category(2, "person"), Category(3, "tree")]
    assert aset.images == [ImageRecord(0, "sub/img1.jpg", 40, 30, {}), ImageRecord(3, "img2.jpg", 40, 30, {})]
    polygon = [5.0, 5.0, 15.5, 5.0, 15.5, 20.25, 5.0, 18.0]
    assert aset.instances == [
        Instance(1, 0, 1, (1.5, 2.0, 9.75, 10.0), attributes={
            "occluded": True, "z_order": 1, "source": "manual",
            "color": "blue", "parked": True, "doors": 4, "speed": 12.5}),
        # Rotated 30 degrees about its centre (25, 15): the box is the rotated rectangle's envelope.
        Instance(2, 0, 2, envelope((25.0, 15.0, 10.0, 20.0, 30.0)), attributes={
            "occluded": False, "z_order": 0, "group_id": 2, "source": "auto",
            "rotated_box": [25.0, 15.0, 10.0, 20.0, 30.0]}),
        Instance(3, 0, 2, (5.0, 5.0, 10.5, 15.25), segmentation=[polygon],
                 attributes={"occluded": False, "z_order": 0, "source": "manual"}),
        Instance(4, 0, 1, (2.0, 3.0, 4.0, 3.0), segmentation=_coco(_pattern_mask()),
                 attributes={"occluded": False, "z_order": 0, "source": "semi-auto"}),
    ]
    assert np.array_equal(_decode(aset.instances[3].segmentation), _pattern_mask())
    assert all(inst.area is None and inst.score is None and not inst.iscrowd for inst in aset.instances)
    assert aset.by_image()[3] == []
    assert aset.report.clipped == 0
    assert aset.report.dropped == [
        f"{path}: 2 polyline shape(s) dropped, the model holds boxes, polygons and masks only (first on sub/img1.jpg)",
        f"{path}: 1 points shape(s) dropped, the model holds boxes, polygons and masks only (first on sub/img1.jpg)",
        f"{path}: 1 tag shape(s) dropped, the model holds boxes, polygons and masks only (first on sub/img1.jpg)",
    ]


def test_images_folder_header_sizes_and_labels_without_meta(tmp_path: Path) -> None:
    """No <meta>: categories in order of first appearance (dropped shapes included); a missing size is read
    from the image, found in images/ beside the file (CVAT's zip layout)."""
    Image.new("RGB", (32, 24)).save(_dir(tmp_path / "images") / "a.png")
    path = _xml(tmp_path / "annotations.xml", """
<image id="5" name="a.png">
  <polyline label="lane" points="0,0;1,1" occluded="0" />
  <box label="car" xtl="1" ytl="1" xbr="4" ybr="3" occluded="0" />
</image>""")
    aset = read_cvat(path)
    assert aset.image_root == tmp_path / "images"
    assert aset.categories == [Category(1, "lane"), Category(2, "car")]
    assert aset.images == [ImageRecord(5, "a.png", 32, 24, {})]
    assert aset.instances == [Instance(1, 5, 2, (1.0, 1.0, 3.0, 2.0), attributes={"occluded": False})]


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_mask_rle_convention_against_numpy_masks() -> None:
    # The documented convention, by hand: row-major over the box, background first.
    full, cut = cvat_rle_to_mask([1, 2, 1, 4, 2, 1, 1], 2, 3, 4, 3, 30, 40)
    assert not cut and np.array_equal(full, _pattern_mask())
    assert mask_to_cvat_rle(_pattern_mask()) == ([1, 2, 1, 4, 2, 1, 1], 2, 3, 4, 3)
    # Foreground in the first pixel: a leading 0 run. A full box: [0, w*h].
    corner = np.zeros((5, 6), dtype=bool)
    corner[1:3, 2:5] = True
    corner[2, 2] = False
    assert mask_to_cvat_rle(corner) == ([0, 3, 1, 2], 2, 1, 3, 2)  # 111 011
    single = np.zeros((4, 4), dtype=bool)
    single[3, 0] = True
    assert mask_to_cvat_rle(single) == ([0, 1], 0, 3, 1, 1)
    assert mask_to_cvat_rle(np.zeros((3, 3), dtype=bool)) is None
    # Random masks: numpy-drawn -> CVAT RLE -> full mask -> COCO RLE -> pycocotools decode, pixel-exact.
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(1, 40, size=2))
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        rle = mask_to_cvat_rle(mask)
        if rle is None:
            continue
        counts, left, top, width, height = rle
        assert sum(counts) == width * height and all(c > 0 for c in counts[1:])
        back, cut = cvat_rle_to_mask(counts, left, top, width, height, h, w)
        assert not cut and np.array_equal(back, mask)
        assert np.array_equal(_decode(_coco(back)), mask)
    # A box reaching past the image is cut to it, and says so.
    full, cut = cvat_rle_to_mask([0, 4], 39, 29, 2, 2, 30, 40)
    assert cut and full.sum() == 1 and full[29, 39]
    with pytest.raises(ValueError, match="sum to 5"):
        cvat_rle_to_mask([1, 4], 0, 0, 2, 3, 10, 10)


PROJECT = """<meta><project><id>1</id><name>p</name>
  <labels><label><name>car</name><attributes /></label><label><name>dog</name><attributes /></label></labels>
  <tasks>
    <task><id>11</id><name>a</name><subset>train</subset></task>
    <task><id>12</id><name>b</name><subset>val</subset></task>
  </tasks></project></meta>
<image id="0" name="img1.jpg" subset="train" task_id="11" width="40" height="30">
  <box label="car" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5" />
</image>
<image id="1" name="img2.jpg" subset="train" task_id="11" width="40" height="30" />
<image id="0" name="img1.jpg" subset="val" task_id="12" width="50" height="20">
  <box label="dog" occluded="1" xtl="2" ytl="2" xbr="6" ybr="8" />
</image>"""


def test_project_export_keeps_images_that_share_ids_and_names_apart(tmp_path: Path) -> None:
    aset = read_cvat(_xml(tmp_path / "annotations.xml", PROJECT))
    assert aset.categories == [Category(1, "car"), Category(2, "dog")]
    # Ids repeat across tasks: renumbered 0..N-1, CVAT's id kept; names repeat: every image under its subset.
    assert aset.images == [
        ImageRecord(0, "train/img1.jpg", 40, 30, {"subset": "train", "task_id": 11, "cvat_id": 0}),
        ImageRecord(1, "train/img2.jpg", 40, 30, {"subset": "train", "task_id": 11, "cvat_id": 1}),
        ImageRecord(2, "val/img1.jpg", 50, 20, {"subset": "val", "task_id": 12, "cvat_id": 0}),
    ]
    assert aset.instances == [
        Instance(1, 0, 1, (1.0, 1.0, 4.0, 4.0), attributes={"occluded": False}),
        Instance(2, 2, 2, (2.0, 2.0, 4.0, 6.0), attributes={"occluded": True}),
    ]


def test_project_export_names_and_ids_kept_when_distinct_task_folder_when_subset_repeats(tmp_path: Path) -> None:
    distinct = PROJECT.replace('id="0" name="img1.jpg" subset="val"', 'id="2" name="img3.jpg" subset="val"')
    aset = read_cvat(_xml(tmp_path / "a.xml", distinct))
    assert [(i.id, i.file_name, i.attributes) for i in aset.images] == [
        (0, "img1.jpg", {"subset": "train", "task_id": 11}),
        (1, "img2.jpg", {"subset": "train", "task_id": 11}),
        (2, "img3.jpg", {"subset": "val", "task_id": 12}),
    ]
    same_subset = PROJECT.replace('subset="val"', 'subset="train"')
    aset = read_cvat(_xml(tmp_path / "b.xml", same_subset))
    assert [i.file_name for i in aset.images] == ["task_11/img1.jpg", "task_11/img2.jpg", "task_12/img1.jpg"]
    same_task = PROJECT.replace('id="0" name="img1.jpg" subset="val" task_id="12"',
                                'id="4" name="img1.jpg" subset="train" task_id="11"')
    path = _xml(tmp_path / "c.xml", same_task)
    with pytest.raises(DataError) as err:
        read_cvat(path)
    assert str(err.value) == (f"{path}: image 4 of task 11 (img1.jpg): image 0 of task 11 (img1.jpg) has the same "
                              "name in the same task; images cannot be told apart")


TRACKS = """<meta><task><id>3</id><name>clip</name><size>4</size><mode>interpolation</mode>
  <start_frame>0</start_frame><stop_frame>6</stop_frame><frame_filter>step=2</frame_filter>
  <labels><label><name>car</name><attributes>
    <attribute><name>moving</name><mutable>True</mutable><input_type>checkbox</input_type>
      <default_value>false</default_value><values>false</values></attribute></attributes></label>
  <label><name>person</name><attributes /></label>
  <label><name>body</name><type>skeleton</type><attributes /><svg>&lt;circle r="1.5"&gt;&lt;/circle&gt;</svg></label>
  <label><name>nose</name><type>points</type><attributes /><parent>body</parent></label></labels>
  <original_size><width>64</width><height>48</height></original_size></task></meta>
<track id="0" label="car" source="manual">
  <box frame="0" keyframe="1" outside="0" occluded="0" xtl="1.00" ytl="2.00" xbr="11.00" ybr="12.00" z_order="0">
    <attribute name="moving">true</attribute></box>
  <box frame="2" keyframe="0" outside="0" occluded="1" xtl="3.00" ytl="2.00" xbr="13.00" ybr="12.00" z_order="0">
    <attribute name="moving">false</attribute></box>
  <box frame="4" keyframe="1" outside="1" occluded="0" xtl="3.00" ytl="2.00" xbr="13.00" ybr="12.00" z_order="0">
    <attribute name="moving">false</attribute></box>
</track>
<track id="1" label="person" source="auto" group_id="3">
  <polygon frame="2" keyframe="1" outside="0" occluded="0" points="10.00,10.00;20.00,10.00;15.00,30.00" z_order="2" />
  <points frame="4" keyframe="1" outside="0" occluded="0" points="5.00,5.00" z_order="0" />
  <points frame="6" keyframe="1" outside="1" occluded="0" points="5.00,5.00" z_order="0" />
</track>
<track id="2" label="body" source="manual">
  <skeleton frame="0" keyframe="1" outside="0" occluded="0" points="" z_order="0" />
  <track id="0" label="nose" source="manual">
    <points frame="0" keyframe="1" outside="0" occluded="0" points="8.00,9.00" z_order="0" />
  </track>
</track>"""


def test_track_export_frames_are_images_and_tracks_their_instances(tmp_path: Path) -> None:
    images = _dir(tmp_path / "images")
    (images / "frame_000000.jpg").write_bytes(b"")  # only the extension is looked at
    path = _xml(tmp_path / "annotations.xml", TRACKS)
    aset = read_cvat(path)
    # Every frame of the task (0..6, step 2), named as in CVAT's zips, sized by <original_size>.
    assert aset.images == [ImageRecord(f, f"frame_{f:06d}.jpg", 64, 48, {}) for f in (0, 2, 4, 6)]
    # A skeleton is a category; its points (labels with a <parent>) are not.
    assert aset.categories == [Category(1, "car"), Category(2, "person"), Category(3, "body")]
    assert aset.instances == [
        Instance(1, 0, 1, (1.0, 2.0, 10.0, 10.0),
                 attributes={"track_id": 0, "source": "manual", "occluded": False, "z_order": 0, "moving": True}),
        Instance(2, 2, 1, (3.0, 2.0, 10.0, 10.0),
                 attributes={"track_id": 0, "source": "manual", "occluded": True, "z_order": 0, "moving": False}),
        Instance(3, 2, 2, (10.0, 10.0, 10.0, 20.0), segmentation=[[10.0, 10.0, 20.0, 10.0, 15.0, 30.0]],
                 attributes={"track_id": 1, "group_id": 3, "source": "auto", "occluded": False, "z_order": 2}),
    ]
    # Outside frames are the object's absence, not a dropped shape.
    held = "the model holds boxes, polygons and masks only"
    assert aset.report.dropped == [f"{path}: 1 points shape(s) dropped, {held} (first on frame_000004.jpg)",
                                   f"{path}: 1 skeleton shape(s) dropped, {held} (first on frame_000000.jpg)"]


def test_track_export_without_frame_range_uses_the_visited_frames(tmp_path: Path) -> None:
    body = TRACKS.replace("<start_frame>0</start_frame><stop_frame>6</stop_frame>", "")
    aset = read_cvat(_xml(tmp_path / "annotations.xml", body))
    assert [(i.id, i.file_name) for i in aset.images] == [(f, f"frame_{f:06d}.png") for f in (0, 2, 4, 6)]


# --- writing ----------------------------------------------------------------------------------------------


def _generated() -> AnnotationSet:
    """Values CVAT holds exactly: 2-decimal binary-exact coordinates, typed attributes, every shape kind."""
    h, w = 40, 50
    blob = np.zeros((h, w), dtype=bool)
    blob[5:20, 30:45] = True
    blob[8:12, 33:38] = False  # a hole
    blob[0, 49] = True  # a far pixel: the mask box spans rows 0..19, columns 30..49
    crowd = np.zeros((h, w), dtype=bool)
    crowd[30:40, 0:25] = True
    blob_seg, crowd_seg = _coco(blob), _coco(crowd)
    m = dict(occluded=False, source="manual")
    rotated = (25.0, 15.0, 10.0, 20.0, 45.5)  # the box (20, 5)-(30, 25) rotated about its centre
    return AnnotationSet(
        categories=[Category(1, "car"), Category(2, "person"), Category(3, "empty")],
        images=[ImageRecord(0, "a.jpg", w, h, {"subset": "train"}), ImageRecord(7, "dir/b.jpg", w, h, {}),
                ImageRecord(9, "c.jpg", w, h, {})],
        instances=[
            Instance(1, 0, 1, (1.25, 2.5, 10.0, 7.75),
                     attributes={**m, "occluded": True, "color": "red", "doors": 4, "parked": False, "speed": 12.5}),
            Instance(2, 0, 2, envelope(rotated),
                     attributes={**m, "rotated_box": list(rotated), "z_order": 3, "group_id": 1}),
            Instance(3, 0, 2, (2.0, 20.0, 13.5, 10.25), segmentation=[[2.0, 20.0, 15.5, 20.0, 10.0, 30.25]],
                     attributes={**m, "color": "green"}),
            Instance(4, 7, 1, tuple(float(v) for v in mask_utils.toBbox({**blob_seg, "counts": blob_seg["counts"].encode()})),
                     segmentation=blob_seg, attributes={**m, "doors": 2, "color": "blue", "parked": True, "speed": 3}),
            Instance(5, 7, 2, (0.0, 30.0, 25.0, 10.0), iscrowd=True, segmentation=crowd_seg, attributes=dict(m)),
        ],
        image_root=Path("."),
    )


def test_write_read_round_trip_is_exact(tmp_path: Path) -> None:
    aset = _generated()
    report = write_cvat(aset, tmp_path / "out" / "annotations.xml")
    assert (report.images, report.boxes, report.polygons, report.masks, report.lost) == (3, 2, 1, 2, [])
    assert report.lines() == [f"{tmp_path / 'out' / 'annotations.xml'}: 3 image(s); 2 box(es), 1 polygon(s), 2 mask(s)"]
    back = read_cvat(tmp_path / "out" / "annotations.xml", image_root=tmp_path)
    assert back.categories == aset.categories  # the empty category included
    assert back.images == aset.images
    assert back.instances == aset.instances
    for orig, got in zip(aset.instances[3:], back.instances[3:]):
        assert np.array_equal(_decode(got.segmentation), _decode(orig.segmentation))
    assert back.report.dropped == [] and back.report.clipped == 0


def test_written_xml_is_cvat_shaped(tmp_path: Path) -> None:
    path = tmp_path / "annotations.xml"
    write_cvat(_generated(), path)
    text = path.read_text()
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>')
    assert '<image id="0" name="a.jpg" subset="train" width="50" height="40">' in text
    assert ('<box label="car" source="manual" occluded="1" xtl="1.25" ytl="2.50" xbr="11.25" ybr="10.25">'
            in text)
    assert ('xtl="20.00" ytl="5.00" xbr="30.00" ybr="25.00" rotation="45.50" z_order="3" group_id="1"' in text)
    assert 'name="rotated_box"' not in text
    assert 'points="2.00,20.00;15.50,20.00;10.00,30.25"' in text
    assert '<attribute name="is_crowd">true</attribute>' in text
    # Label attribute specs, typed from the values.
    assert "<name>doors</name>\n              <mutable>False</mutable>\n              <input_type>number</input_type>" in text
    assert "<name>parked</name>\n              <mutable>False</mutable>\n              <input_type>checkbox</input_type>" in text
    assert "<name>color</name>\n              <mutable>False</mutable>\n              <input_type>text</input_type>" in text


def test_round_trip_coordinates_within_half_a_hundredth(tmp_path: Path) -> None:
    aset = AnnotationSet([Category(1, "a")], [ImageRecord(1, "x.jpg", 100, 100)], [
        Instance(1, 1, 1, (1.1, 2.2, 3.3, 4.4), attributes={"occluded": False, "source": "manual"}),
        Instance(2, 1, 1, (0.1234, 0.5678, 9.8765, 9.0001), segmentation=[[0.1234, 0.5678, 10.0, 0.5678, 5.0, 9.5679]],
                 attributes={"occluded": False, "source": "manual"}),
    ], Path("."))
    assert write_cvat(aset, tmp_path / "a.xml").lost == []
    back = read_cvat(tmp_path / "a.xml")
    for orig, got in zip(aset.instances, back.instances):
        assert max(abs(a - b) for a, b in zip(orig.xyxy, got.xyxy)) <= 0.005 + 1e-9
    assert max(abs(a - b) for a, b in zip(aset.instances[1].segmentation[0], back.instances[1].segmentation[0])) <= 0.005


def test_predictions_as_pre_annotations(tmp_path: Path) -> None:
    aset = AnnotationSet([Category(1, "a")], [ImageRecord(1, "x.jpg", 100, 100)],
                         [Instance(1, 1, 1, (10.0, 10.0, 20.0, 20.0), score=0.875)], Path("."))
    report = write_cvat(aset, tmp_path / "pre.xml", source="auto")
    assert report.lost == []
    text = (tmp_path / "pre.xml").read_text()
    assert 'source="auto"' in text and '<attribute name="score">0.875</attribute>' in text
    back = read_cvat(tmp_path / "pre.xml")  # the score attribute reads back as the instance's score
    assert back.instances == [Instance(1, 1, 1, (10.0, 10.0, 20.0, 20.0), score=0.875,
                                       attributes={"source": "auto", "occluded": False})]


def test_writer_lists_what_cvat_cannot_hold(tmp_path: Path) -> None:
    aset = AnnotationSet(
        [Category(4, "a", "vehicle"), Category(9, "b")],
        [ImageRecord(1, "x.jpg", 20, 20, {"task_id": 3})],
        [
            Instance(5, 1, 4, (0.0, 0.0, 8.0, 8.0), segmentation=[[0, 0, 4, 0, 4, 4], [6, 6, 8, 6, 8, 8]]),
            Instance(6, 1, 9, (0.0, 0.0, 5.0, 5.0), area=99.0,
                     attributes={"tags": ["x"], "source": "auto", "rotation": 10.0, "score": 0.5}),
            Instance(7, 1, 9, (1.0, 1.0, 9.0, 9.0), segmentation=[[2, 2, 6, 2, 6, 6]],
                     attributes={"rotated_box": [4, 4, 4, 4, 10]}),
        ],
        Path("."),
    )
    report = write_cvat(aset, tmp_path / "a.xml")
    assert (report.boxes, report.polygons, report.masks) == (1, 1, 1)
    where = "image 1 (x.jpg): annotation"
    assert report.lost == [
        "category 4 (a): supercategory 'vehicle' (CVAT has no supercategories)",
        "category ids [4, 9]: CVAT labels have names only, they read back as 1..N in this order",
        "image 1 (x.jpg): attribute(s) task_id (a task export's images have none)",
        f"{where} 5: polygon of 2 parts written as a mask (a CVAT polygon has one part)",
        f"{where} 5: box [0.0, 0.0, 8.0, 8.0] is not its mask's bounding box [1.0, 0.0, 7.0, 7.0]; only the mask is written",
        f"{where} 6: attribute 'rotation' 10.0 not written (a CVAT shape field; a rotated box is "
        "attributes['rotated_box'])",
        f"{where} 6: area 99.0 (CVAT has no area; it reads back as 25)",
        f"{where} 6: attribute 'score' 0.5 reads back as the instance's score",
        f"{where} 7: rotated_box [4, 4, 4, 4, 10] (CVAT rotates boxes only; the polygon is written)",
        f"{where} 7: box [1.0, 1.0, 9.0, 9.0] is not its polygon's bounding box [2.0, 2.0, 4.0, 4.0]; only the polygon is written",
        "annotation ids [5, 6, 7]: CVAT shapes have no ids, they read back as 1..N in image order",
        f"{where} 6: attribute 'tags' ['x'] written as text (reads back as \"['x']\")",
    ]
    # The two-part polygon reads back as the mask pycocotools rasterises it to.
    back = read_cvat(tmp_path / "a.xml")
    parts = mask_utils.merge(mask_utils.frPyObjects([[0, 0, 4, 0, 4, 4], [6, 6, 8, 6, 8, 8]], 20, 20))
    assert np.array_equal(_decode(back.instances[0].segmentation), _decode({**parts, "counts": parts["counts"].decode()}))


def test_rotated_boxes_read_as_envelope_and_rotated_box(tmp_path: Path) -> None:
    """CVAT rotates a box clockwise on screen about its centre; 0 and 360 are no rotation; a rotation on a polygon
    is not read (counted)."""
    path = _xml(tmp_path / "a.xml", LABELS + IMG.replace(
        'width="10" height="10"', 'width="100" height="100"').format(
        '<box label="car" occluded="0" xtl="40" ytl="45" xbr="60" ybr="55" rotation="90.00" />'
        '<box label="car" occluded="0" xtl="40" ytl="45" xbr="60" ybr="55" rotation="285.00" />'
        '<box label="car" occluded="0" xtl="40" ytl="45" xbr="60" ybr="55" rotation="0.00" />'
        '<box label="car" occluded="0" xtl="40" ytl="45" xbr="60" ybr="55" rotation="360.00" />'
        '<polygon label="car" occluded="0" points="1,1;5,1;5,5" rotation="15.00" />'))
    aset = read_cvat(path)
    quarter, back = aset.instances[:2]
    assert quarter.attributes["rotated_box"] == [50.0, 50.0, 20.0, 10.0, 90.0]
    assert quarter.bbox == (45.0, 40.0, 10.0, 20.0)  # a quarter turn: the envelope is the box turned upright
    assert back.attributes["rotated_box"] == [50.0, 50.0, 20.0, 10.0, -75.0]  # 285 is -75, in (-180, 180]
    assert back.bbox == envelope((50.0, 50.0, 20.0, 10.0, -75.0))
    for inst in aset.instances[2:]:
        assert "rotated_box" not in inst.attributes and "rotation" not in inst.attributes
    assert aset.instances[2].bbox == aset.instances[3].bbox == (40.0, 45.0, 20.0, 10.0)
    assert aset.report.dropped == [f"{path}: the rotation of 1 polygon or mask shape(s) not read, CVAT rotates "
                                   "boxes only (first on a.jpg)"]
    # A rotated box inside the image, then one reaching past it: its envelope is clipped (counted), the
    # rotated box kept whole.
    path = _xml(tmp_path / "b.xml", LABELS + IMG.format(
        '<box label="car" occluded="0" xtl="0" ytl="4" xbr="10" ybr="6" rotation="45" />'))
    aset = read_cvat(path)
    (inst,) = aset.instances
    assert inst.attributes["rotated_box"] == [5.0, 5.0, 10.0, 2.0, 45.0]
    assert inst.bbox == pytest.approx((5 - 3 * 2 ** 0.5, 5 - 3 * 2 ** 0.5, 6 * 2 ** 0.5, 6 * 2 ** 0.5))
    assert aset.report.clipped == 0  # the envelope (0.76..9.24) stays inside the 10x10 image
    wide = _xml(tmp_path / "c.xml", LABELS + IMG.format(
        '<box label="car" occluded="0" xtl="-2" ytl="4" xbr="12" ybr="6" rotation="45" />'))
    aset = read_cvat(wide)
    assert aset.report.clipped == 1 and aset.instances[0].bbox == (0.0, 0.0, 10.0, 10.0)
    assert aset.instances[0].attributes["rotated_box"] == [5.0, 5.0, 14.0, 2.0, 45.0]
    # Written back, the clipped envelope still belongs to the rotated box: the same XML box comes out; so does
    # the unclipped one of sanitize=False (conversions).
    raw = read_cvat(wide, sanitize=False)
    assert raw.report.clipped == 0 and raw.instances[0].bbox == envelope((5.0, 5.0, 14.0, 2.0, 45.0))
    for n, read in enumerate((aset, raw)):
        assert write_cvat(read, tmp_path / f"d{n}.xml").lost == []
        assert 'xtl="-2.00" ytl="4.00" xbr="12.00" ybr="6.00" rotation="45.00"' in (tmp_path / f"d{n}.xml").read_text()


def test_writer_writes_a_stale_rotated_box_unrotated(tmp_path: Path) -> None:
    """A box changed after reading (its rotated box's envelope is no longer the box): the box, unrotated."""
    aset = AnnotationSet([Category(1, "a")], [ImageRecord(1, "x.jpg", 100, 100)], [
        Instance(1, 1, 1, (10.0, 10.0, 20.0, 20.0), attributes={"rotated_box": [20, 20, 20, 10, 30]}),
        Instance(2, 1, 1, (10.0, 10.0, 20.0, 20.0), attributes={"rotated_box": [20, 20, 20]}),
    ], Path("."))
    report = write_cvat(aset, tmp_path / "a.xml")
    assert report.lost == [
        "image 1 (x.jpg): annotation 1: rotated_box [20, 20, 20, 10, 30]: its envelope [8.84, 10.67, 22.32, 18.66] "
        "is not the box [10.0, 10.0, 20.0, 20.0]; the box is written unrotated",
        "image 1 (x.jpg): annotation 2: rotated_box [20, 20, 20] is not [cx, cy, w, h, angle] (5 finite numbers); "
        "the box is written unrotated",
    ]
    back = read_cvat(tmp_path / "a.xml")
    assert [(i.bbox, i.attributes) for i in back.instances] == [
        ((10.0, 10.0, 20.0, 20.0), {"source": "manual", "occluded": False})] * 2


def test_score_attribute_is_the_instance_score(tmp_path: Path) -> None:
    spec = ("<meta><task><labels><label><name>car</name><attributes><attribute><name>score</name>"
            "<input_type>number</input_type></attribute></attributes></label><label><name>bus</name></label>"
            "</labels></task></meta>\n")
    path = _xml(tmp_path / "a.xml", spec + IMG.format(
        '<box label="car" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2"><attribute name="score">0.25</attribute></box>'
        '<box label="bus" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2"><attribute name="score"> 1 </attribute></box>'
        '<box label="bus" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2"><attribute name="score">high</attribute></box>'
        '<box label="bus" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2"><attribute name="score">nan</attribute></box>'))
    aset = read_cvat(path)
    assert [i.score for i in aset.instances] == [0.25, 1.0, None, None]
    assert [i.attributes.get("score") for i in aset.instances] == [None, None, "high", "nan"]
    twice = _xml(tmp_path / "b.xml", spec + IMG.format(
        '<box label="car" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2"><attribute name="score">0.25</attribute>'
        '<attribute name="score">0.5</attribute></box>'))
    with pytest.raises(DataError) as err:
        read_cvat(twice)
    assert str(err.value) == f"{twice}: image 2 (a.jpg): shape 1 <box>: attribute 'score' is given twice"


def test_source_is_each_instances_own_unless_forced(tmp_path: Path) -> None:
    aset = AnnotationSet([Category(1, "a")], [ImageRecord(1, "x.jpg", 100, 100)], [
        Instance(1, 1, 1, (1.0, 1.0, 5.0, 5.0), attributes={"source": "auto"}),
        Instance(2, 1, 1, (1.0, 1.0, 5.0, 5.0), attributes={"source": "semi-auto"}),
        Instance(3, 1, 1, (1.0, 1.0, 5.0, 5.0)),
        Instance(4, 1, 1, (1.0, 1.0, 5.0, 5.0), attributes={"source": 3}),
    ], Path("."))
    report = write_cvat(aset, tmp_path / "own.xml")  # source=None, the default
    assert report.lost == ["image 1 (x.jpg): annotation 4: source 3 is not a name; written as 'manual'"]
    assert [i.attributes["source"] for i in read_cvat(tmp_path / "own.xml").instances] == \
        ["auto", "semi-auto", "manual", "manual"]
    report = write_cvat(aset, tmp_path / "auto.xml", source="auto")  # pre-annotations: every shape "auto"
    assert report.lost == ["image 1 (x.jpg): annotation 2: source 'semi-auto' written as 'auto'",
                           "image 1 (x.jpg): annotation 4: source 3 written as 'auto'"]
    assert [i.attributes["source"] for i in read_cvat(tmp_path / "auto.xml").instances] == ["auto"] * 4


def test_writer_refuses_two_categories_with_one_name(tmp_path: Path) -> None:
    aset = AnnotationSet([Category(1, "a"), Category(2, "a")], [ImageRecord(1, "x.jpg", 5, 5)], [], Path("."))
    with pytest.raises(DataError) as err:
        write_cvat(aset, tmp_path / "a.xml")
    assert str(err.value) == f"{tmp_path / 'a.xml'}: categories 1 and 2 are both named 'a'; CVAT tells classes apart by name only"
    assert not (tmp_path / "a.xml").exists()


# --- errors -----------------------------------------------------------------------------------------------

LABELS = "<meta><task><labels><label><name>car</name></label></labels></task></meta>\n"
IMG = '<image id="2" name="a.jpg" width="10" height="10">{}</image>'
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<annotations><version>1.1</version><image id="0" name="&lol3;" width="1" height="1"/></annotations>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotations><image id="0" name="&xxe;" width="1" height="1"/></annotations>
"""
REFUSED = ", which annotation files never need (billion-laughs / external-entity attacks)"


@pytest.mark.parametrize("text, message", [
    (HEAD + LABELS + '<image id="2" name="a.jpg"><box label="car"></image></annotations>',
     "not valid XML (mismatched tag: line 5, column 46)"),
    (HEAD + LABELS + IMG.format('<box label="bus" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2"/>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <box>: label 'bus' is not in the file's <labels> (car)"),
    (HEAD + LABELS + IMG.format('<box label="car" occluded="0" xtl="1,5" ytl="1" xbr="2" ybr="2"/>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <box>: xtl '1,5' is not a number"),
    (HEAD + LABELS + IMG.format('<box label="car" occluded="0" xtl="1" ytl="1" xbr="2" />') + "</annotations>",
     "image 2 (a.jpg): shape 1 <box>: no 'ybr'"),
    (HEAD + LABELS + IMG.format('<box label="car" occluded="0" xtl="5" ytl="1" xbr="2" ybr="2"/>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <box>: box corners (5.0, 1.0) - (2.0, 2.0) are in the wrong order"),
    (HEAD + LABELS + IMG.format('<box label="car" occluded="0" xtl="nan" ytl="1" xbr="2" ybr="2"/>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <box>: xtl 'nan' is not a number"),
    (HEAD + LABELS + IMG.format('<polygon label="car" occluded="0" points="1,1;2;3"/>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <polygon>: points '1,1;2;3' are not 'x,y;x,y;...'"),
    (HEAD + LABELS + IMG.format('<polygon label="car" occluded="0" points="1,1;2,2"/>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <polygon>: a polygon needs at least 3 points, got 2"),
    (HEAD + LABELS + IMG.format('<mask label="car" occluded="0" rle="1, 2" left="0" top="0" width="2" height="2"/>')
     + "</annotations>", "image 2 (a.jpg): shape 1 <mask>: rle of a 2x2 mask: run lengths sum to 3, not width * height = 4"),
    (HEAD + LABELS + IMG.format('<mask label="car" occluded="0" rle="1, x" left="0" top="0" width="2" height="2"/>')
     + "</annotations>", "image 2 (a.jpg): shape 1 <mask>: rle '1, x' is not comma-separated integers"),
    (HEAD + LABELS + IMG.format('<box label="car" occluded="maybe" xtl="1" ytl="1" xbr="2" ybr="2"/>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <box>: occluded 'maybe' is not 0 or 1"),
    (HEAD + LABELS + IMG.format('<box label="car" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2" rotation="x"/>')
     + "</annotations>", "image 2 (a.jpg): shape 1 <box>: rotation 'x' is not a number"),
    (HEAD + LABELS + IMG.format('<box label="car" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2">'
                                '<attribute name="rotated_box">1</attribute></box>') + "</annotations>",
     "image 2 (a.jpg): shape 1 <box>: attribute 'rotated_box' clashes with the model's rotated box (a CVAT box says "
     "its rotation with its 'rotation')"),
    (HEAD + LABELS + '<image id="x" name="a.jpg" width="10" height="10"/></annotations>',
     "image #1: id 'x' is not a number"),
    (HEAD + LABELS + IMG.format("") + IMG.format("") + "</annotations>",
     "image 2 (a.jpg): image id 2 is used twice (also a.jpg)"),
    (HEAD + LABELS + '<track id="4" label="car"><box frame="1" outside="0" occluded="0" xtl="1" ytl="1" xbr="2" ybr="2"/>'
     "</track>" + IMG.format("") + "</annotations>", "track 4 <box> frame 1: there is no <image> with id 1"),
    (HEAD + "</annotations>", "no images (no <image> elements, no tracks and no frame range in <meta>)"),
    ('<?xml version="1.0"?><dataset><image/></dataset>', "not a CVAT XML file (the root is <dataset>, expected <annotations>)"),
    (BILLION_LAUGHS, "refused: the file declares XML entities or external references ('lol')" + REFUSED),
    (EXTERNAL, "refused: the file declares XML entities or external references ('xxe')" + REFUSED),
])
def test_broken_files_stop_with_one_line_naming_file_and_record(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "annotations.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_cvat(path)
    assert str(err.value) == f"{path}: {message}"
    assert "\n" not in str(err.value)
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="annotation file not found"):
        read_cvat(tmp_path / "nope.xml")


def test_mask_reaching_past_the_image_is_cut_and_counted(tmp_path: Path) -> None:
    path = _xml(tmp_path / "a.xml", LABELS + IMG.format(
        '<mask label="car" occluded="0" rle="0, 4" left="9" top="9" width="2" height="2" />'))
    aset = read_cvat(path)
    assert aset.report.clipped == 1
    (inst,) = aset.instances
    assert inst.bbox == (9.0, 9.0, 1.0, 1.0)
    expected = np.zeros((10, 10), dtype=bool)
    expected[9, 9] = True
    assert np.array_equal(_decode(inst.segmentation), expected)


def test_project_images_sharing_task_and_id_but_not_subset_stay_apart(tmp_path: Path) -> None:
    body = PROJECT.replace('subset="val" task_id="12"', 'subset="val" task_id="11"')
    aset = read_cvat(_xml(tmp_path / "a.xml", body))
    assert [(i.id, i.file_name, i.attributes["cvat_id"]) for i in aset.images] == [
        (0, "train/img1.jpg", 0), (1, "train/img2.jpg", 1), (2, "val/img1.jpg", 0)]
