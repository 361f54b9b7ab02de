"""What an output may replace: atomic writes never rename over what is not a regular file (a FIFO, a device, a
symlink, a folder), and `data convert` never replaces one of its inputs and reports what it cannot carry."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from visiontl.atomic import atomic_write_json, atomic_write_text, remove_output, written_together
from visiontl.errors import WriteError

GT = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
      "categories": [{"id": 1, "name": "cat"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0}]}
RESULTS = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "score": 0.9}]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visiontl", *args], capture_output=True, text=True, timeout=120,
                          **kwargs)


def read_fifo(path: Path) -> tuple[threading.Thread, list[bytes]]:
    got: list[bytes] = []

    def reader() -> None:
        with open(path, "rb") as f:
            got.append(f.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread, got


# ---- atomic writes and what the target is (issue 15, item 2) -----------------------------------------------


def test_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "metrics.json"
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    atomic_write_json(fifo, {"AP": 0.5})
    thread.join(10)
    assert json.loads(got[0]) == {"AP": 0.5}
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not list(tmp_path.glob(".*.tmp"))


def test_score_out_a_fifo_from_the_command_line(tmp_path: Path) -> None:
    gt, res, fifo = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "out"
    gt.write_text(json.dumps(GT))
    res.write_text(json.dumps(RESULTS))
    os.mkfifo(fifo)
    thread, got = read_fifo(fifo)
    done = run("score", str(gt), str(res), "--out", str(fifo))
    thread.join(10)
    assert done.returncode == 0, done.stderr
    assert json.loads(got[0])["bbox/AP"] == pytest.approx(1.0)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_character_devices_are_written_through(tmp_path: Path) -> None:
    atomic_write_text(Path("/dev/null"), "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    if Path("/dev/full").exists():  # writing there fails with ENOSPC: one line, and the device stays a device
        with pytest.raises(WriteError, match=r"^/dev/full: cannot write \(No space left on device\)$"):
            atomic_write_text(Path("/dev/full"), "x")
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_dev_stdout_writes_where_stdout_goes_without_truncating(tmp_path: Path) -> None:
    """Redirected to a file, /dev/stdout continues after what was printed (as bash's /dev/stdout does): reopening
    /proc/self/fd/1 would truncate the file and write over the earlier lines, a rename would replace it."""
    script = ("from pathlib import Path\nfrom visiontl.atomic import atomic_write_text\n"
              "print('before', flush=False)\natomic_write_text(Path('/dev/stdout'), 'metrics\\n')\nprint('after')\n")
    out = tmp_path / "log.txt"
    with open(out, "w") as f:
        done = subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "before\nmetrics\nafter\n"
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:  # a pipe
        assert proc.stdout.read() == "before\nmetrics\nafter\n"


def test_a_symlink_stays_and_the_file_it_names_is_replaced_atomically(tmp_path: Path) -> None:
    real = tmp_path / "data" / "metrics.json"
    real.parent.mkdir()
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(Path("data") / "metrics.json")
    atomic_write_json(link, {"AP": 1})
    assert link.is_symlink() and os.readlink(link) == str(Path("data") / "metrics.json")
    assert json.loads(real.read_text()) == {"AP": 1}
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # the replaced file keeps its permission bits
    assert not list(tmp_path.glob(".*.tmp")) and not list(real.parent.glob(".*.tmp"))


def test_a_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "missing" / "x.json")
    with pytest.raises(WriteError, match=r"out.json: a symbolic link to .*x.json, which does not exist; not writing "
                                         "through a dangling link"):
        atomic_write_json(link, {})
    assert link.is_symlink() and not (tmp_path / "missing").exists()


def test_a_folder_target_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "metrics.json"
    (folder / "inner").mkdir(parents=True)
    with pytest.raises(WriteError, match=r"metrics.json: is a folder, not a file; nothing was written$"):
        atomic_write_json(folder, {})
    assert (folder / "inner").is_dir()
    gt, res = tmp_path / "gt.json", tmp_path / "res.json"
    gt.write_text(json.dumps(GT))
    res.write_text(json.dumps(RESULTS))
    done = run("score", str(gt), str(res), "--out", str(folder))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"visiontl: error: {folder}: is a folder, not a file; nothing was written"]


def test_a_unix_socket_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(WriteError, match=r"s: is a socket, not a file"):
            atomic_write_text(path, "x")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_png_writer_keeps_a_symlink(tmp_path: Path) -> None:
    from PIL import Image

    from visiontl.visualize import save_png

    real = tmp_path / "real.png"
    real.write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(real)
    save_png(Image.new("RGB", (3, 2)), link)
    assert link.is_symlink()
    with Image.open(real) as im:
        assert im.size == (3, 2)


# ---- batches: all or nothing, never over an input ----------------------------------------------------------


def test_a_batch_installs_nothing_until_it_ends_and_nothing_when_it_fails(tmp_path: Path) -> None:
    with written_together():
        atomic_write_text(tmp_path / "a.txt", "a")
        assert not (tmp_path / "a.txt").exists()
    assert (tmp_path / "a.txt").read_text() == "a"
    with pytest.raises(RuntimeError):
        with written_together():
            atomic_write_text(tmp_path / "a.txt", "new")
            atomic_write_text(tmp_path / "new" / "deep" / "b.txt", "b")
            raise RuntimeError("the writer failed")
    assert (tmp_path / "a.txt").read_text() == "a"
    assert not (tmp_path / "new").exists()  # the folders the batch made are gone too
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_batch_refuses_to_replace_or_remove_an_input(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text("input")
    alias = tmp_path / "alias.json"
    os.link(source, alias)  # another name of the same file counts as the input too
    for target in (source, alias):
        with pytest.raises(WriteError, match=r"refusing to replace an input file.*nothing was written"):
            with written_together([source]):
                atomic_write_text(tmp_path / "other.json", "x")
                atomic_write_text(target, "clobbered")
        assert source.read_text() == "input" and not (tmp_path / "other.json").exists()
    with pytest.raises(WriteError, match=r"in.json: refusing to replace an input file"):
        with written_together([source]):
            remove_output(source)
    assert source.read_text() == "input"


# ---- data convert: never over an input, and what the target cannot hold (issue 15, item 7) ------------------


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden temporaries included) with its bytes; links as their target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = os.readlink(p).encode()
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
        else:
            out[str(p.relative_to(folder)) + "/"] = b""
    return out


def _coco_with_extras(root: Path) -> Path:
    from visiontl.data.synthetic import make_detection_coco

    src = make_detection_coco(root, images=3, split="train", seed=0)
    data = json.loads(src.read_text())
    data["info"] = {"description": "my set", "year": 2024}
    data["licenses"] = [{"id": 1, "name": "CC-BY"}]
    data["images"][0]["license"] = 1
    data["images"][1]["coco_url"] = "http://example.org/1.png"
    for ann in data["annotations"]:
        ann["keypoints"], ann["num_keypoints"] = [1, 2, 2], 1
    data["annotations"][0]["reviewed_by"] = "ann\x1b[2J"  # a tool's own field; a name with an escape below
    data["categories"][0].update(keypoints=["nose"], skeleton=[])
    src.write_text(json.dumps(data))
    return src


def test_convert_coco_to_coco_over_its_source_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    src = _coco_with_extras(tmp_path)
    before = _tree(tmp_path)
    done = run("data", "convert", str(src), "--from", "coco", "--to", "coco", "--out", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"visiontl: error: {src}: refusing to replace an input file; write to "
                                                "another folder; nothing was written"]
    assert _tree(tmp_path) == before


def test_convert_refuses_an_output_that_links_to_the_source(tmp_path: Path) -> None:
    src = _coco_with_extras(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.json").symlink_to(src)  # the rename would go to the file the link names: the source
    before = _tree(tmp_path)
    done = run("data", "convert", str(src), "--from", "coco", "--to", "coco", "--out", str(out))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"visiontl: error: {out / 'train.json'}: refusing to replace an input "
                                                f"file (it is {src}); write to another folder; nothing was written"]
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("fmt", ["voc", "yolo", "cvat", "labelstudio", "labelme"])
def test_convert_a_format_into_its_own_folder_is_refused_and_changes_nothing(tmp_path: Path, fmt: str) -> None:
    from visiontl.data.formats.registry import read_dataset, write_dataset

    src = _coco_with_extras(tmp_path)
    folder = tmp_path / fmt
    write_dataset(read_dataset("coco", src), fmt, folder, copy_images=fmt in ("voc", "yolo"))
    source = {"cvat": folder / "annotations.xml", "labelstudio": folder / "tasks.json"}.get(fmt, folder)
    before = _tree(tmp_path)
    done = run("data", "convert", str(source), "--from", fmt, "--to", fmt, "--out", str(folder), "--images",
               str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"visiontl: error: {folder}/") and line.endswith(
        ": refusing to replace an input file; write to another folder; nothing was written")
    assert _tree(tmp_path) == before  # no file replaced, no temporary, no new folder


def test_copied_images_never_replace_a_source_image(tmp_path: Path) -> None:
    src = _coco_with_extras(tmp_path)
    out = tmp_path / "voc"
    (out / "JPEGImages" / "train").mkdir(parents=True)
    # the copy of img_001 would be renamed onto what this link names: the source's img_000
    (out / "JPEGImages" / "train" / "img_001.png").symlink_to(tmp_path / "train" / "img_000.png")
    before = _tree(tmp_path)
    done = run("data", "convert", str(src), "--from", "coco", "--to", "voc", "--out", str(out))  # images are copied by default
    assert done.returncode == 1
    assert "img_001.png: refusing to replace an input file (it is " in done.stderr
    assert _tree(tmp_path) == before


def test_coco_to_coco_carries_every_field(tmp_path: Path) -> None:
    src = _coco_with_extras(tmp_path)
    done = run("data", "convert", str(src), "--from", "coco", "--to", "coco", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "cannot hold" not in done.stdout
    assert json.loads((tmp_path / "out" / "train.json").read_text()) == json.loads(src.read_text())
    assert list(json.loads((tmp_path / "out" / "train.json").read_text()))[:2] == ["info", "licenses"]


@pytest.mark.parametrize("fmt", ["voc", "yolo", "cvat", "labelstudio", "labelme"])
def test_fields_a_format_cannot_hold_are_reported_with_their_counts(tmp_path: Path, fmt: str) -> None:
    from visiontl.data.formats.registry import read_dataset, write_dataset

    aset = read_dataset("coco", _coco_with_extras(tmp_path))
    lost = write_dataset(aset, fmt, tmp_path / fmt).lost
    title = {"voc": "VOC", "yolo": "YOLO", "cvat": "CVAT", "labelstudio": "Label Studio"}.get(fmt, fmt)
    n = len(aset.instances)
    assert lost[:4] == [
        f"top-level fields info, licenses not written ({title} has no place for them)",
        f"2 image(s) with fields {title} has no place for, not written: license (1), coco_url (1)",
        f"{n} annotation(s) with fields {title} has no place for, not written: keypoints ({n}), num_keypoints ({n}), "
        "reviewed_by (1)",
        f"1 category(s) with fields {title} has no place for, not written: keypoints (1), skeleton (1)",
    ]


def test_convert_prints_what_was_dropped(tmp_path: Path) -> None:
    src = _coco_with_extras(tmp_path)
    done = run("data", "convert", str(src), "--from", "coco", "--to", "yolo", "--out", str(tmp_path / "yolo"))
    assert done.returncode == 0, done.stderr
    assert "thing(s) the format cannot hold: top-level fields info, licenses not written (YOLO has no place" in done.stdout
    assert "keypoints (" in done.stdout and "\x1b" not in done.stdout


def test_split_into_the_source_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    src = _coco_with_extras(tmp_path)
    before = _tree(tmp_path)
    done = run("data", "split", str(src), "--format", "coco", "--val", "0.34", "--out", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (f"visiontl: error: {src}: refusing to replace an input file; write "
                                                    "to another folder; nothing was written")
    assert _tree(tmp_path) == before  # no split.json, no val.json
    done = run("data", "split", str(src), "--format", "coco", "--val", "0.34", "--out", str(tmp_path / "split"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "split" / "val.json").read_text())["info"] == {"description": "my set", "year": 2024}
