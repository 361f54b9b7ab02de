"""Files and requests visiontl did not make: nothing in them runs code, reads or writes outside the folders
they belong to, or takes the process down; each is refused in one line naming the file.

- checkpoints and weights: pickles loaded with weights_only=True (a `__reduce__` payload never runs),
  through `evaluate`, `predict`, `serve`, `data rank`, `train --resume`, `model.weights` and `weights import`;
- TorchScript archives (code that torch.jit runs): refused by every command, run by `predict` only with
  --allow-torchscript-code;
- XML (VOC, CVAT, Label Studio label configs, serve's /setup, the demo): one parser (formats/common.py), whose
  defusedxml refuses entity declarations;
- image references in annotations that are absolute or climb out of the image folder;
- YAML (configs, overrides, data.yaml, run directories): no Python tags, no alias bombs, no key written twice,
  no nesting deeper than 100 levels, no integer longer than Python converts;
- `visiontl serve`: 127.0.0.1 by default, bounded requests, nothing read outside --root.

The HTML report escapes every string from a run directory: tests/test_report.py
(test_untrusted_strings_are_escaped, and the Content-Security-Policy checks beside it).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Tuple

import pytest
import torch
import yaml

import corpus_build as cb
from conftest import run_main as _cli
from conftest import resnet18_config, tiny_config
from visiontl.errors import CheckpointError, ConfigError, DataError, WeightsError

CORPUS = cb.CORPUS


class Payload:
    """Unpickling this creates the file `marker`: what a malicious checkpoint would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _evil(path: Path, marker: Path, **entries: Any) -> Path:
    """A checkpoint-shaped file carrying the payload, proven live: an unsafe torch.load runs it."""
    torch.save({"model": {}, "config": {}, "classes": ["a", "b"], **entries, "x": Payload(marker)}, path)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists(), "the payload is live"
    marker.unlink()
    return path


# --- checkpoints and weights -------------------------------------------------------------------------------


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    images = tmp_path / "images"
    images.mkdir()
    shutil.copyfile(CORPUS / "images" / "good.png", images / "good.png")
    return SimpleNamespace(pt=_evil(tmp_path / "evil.pt", marker), marker=marker, images=images, tmp=tmp_path)


@pytest.mark.parametrize("command", [
    ["evaluate", "{pt}", "--out", "{tmp}/eval"],
    ["predict", "{pt}", "{images}", "--out", "{tmp}/pred.json"],
    ["predict", "{pt}", "{images}", "--out", "{tmp}/tasks.json", "--format", "labelstudio"],
    ["serve", "{pt}", "--root", "{images}", "--port", "0"],
    ["data", "rank", "{pt}", "{images}", "--top", "1", "--out", "{tmp}/next.txt"],
], ids=["evaluate", "predict", "predict-preannotate", "serve", "data-rank"])
def test_a_pickled_payload_in_a_checkpoint_never_runs(command: list[str], evil: SimpleNamespace,
                                                      capsys: pytest.CaptureFixture) -> None:
    argv = [part.format(pt=evil.pt, tmp=evil.tmp, images=evil.images) for part in command]
    code, out, err = _cli(argv, capsys)
    assert code == 2 and not evil.marker.exists()
    assert err.splitlines() == [f"visiontl: error: {evil.pt}: refused: the visiontl checkpoint holds more than "
                                "tensors and plain values (pickled getattr, which could run code when loaded); "
                                "visiontl loads only tensors (torch.load weights_only=True)"]


def test_resume_from_a_poisoned_last_checkpoint(evil: SimpleNamespace, synthetic_root: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    run = evil.tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(evil.pt, run / "checkpoints" / "last.pt")
    config = evil.tmp / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(synthetic_root, run)))
    code, out, err = _cli(["train", str(config), "--resume"], capsys)
    assert code == 2 and not evil.marker.exists()
    assert err.startswith(f"visiontl: error: {run / 'checkpoints' / 'last.pt'}: refused: the visiontl checkpoint")
    assert len(err.splitlines()) == 1 and not (run / "config.yaml").exists()  # stopped before anything was written
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.pt"]


def test_weights_that_would_run_code(evil: SimpleNamespace, synthetic_root: Path, torch_home: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    weights = _evil(evil.tmp / "resnet18.pth", evil.marker)
    run = evil.tmp / "run"
    config = evil.tmp / "config.yaml"
    config.write_text(yaml.safe_dump(resnet18_config(synthetic_root, run)))  # resnet18: its ImageNet file is named below
    # model.weights: a path -> read with weights_only, refused before any training
    code, out, err = _cli(["train", str(config), f"model.weights={weights}"], capsys)
    assert code == 2 and not evil.marker.exists() and not (run / "checkpoints").exists()
    assert err.splitlines() == [f"visiontl: error: {weights}: refused: the weights file holds more than tensors and "
                                "plain values (pickled getattr, which could run code when loaded); visiontl loads "
                                "only tensors (torch.load weights_only=True)"]
    # weights import: hashed, never unpickled; unknown bytes are refused
    code, out, err = _cli(["weights", "import", str(weights)], capsys)
    assert code == 2 and not evil.marker.exists() and "does not match any known ImageNet weights" in err
    # forced in anyway, the cached file fails its checksum before it is read
    code, out, err = _cli(["weights", "import", str(weights), "--force", "--backbone", "resnet18"], capsys)
    assert code == 0 and not evil.marker.exists()
    try:
        code, out, err = _cli(["train", str(config), "model.weights=imagenet"], capsys)
        assert code == 2 and not evil.marker.exists() and len(err.splitlines()) == 1
        assert "does not match torchvision ResNet18_Weights.IMAGENET1K_V1" in err
    finally:
        for cached in (torch_home / "hub" / "checkpoints").glob("resnet18-*.pth"):
            cached.unlink()  # the session's shared cache: leave no poisoned file behind
    assert not evil.marker.exists()


def test_state_dict_and_checkpoint_loaders_refuse_in_one_line(tmp_path: Path) -> None:
    from visiontl.backbones.weights import read_state_dict
    from visiontl.engine.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    pt = _evil(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match=r"refused: the visiontl checkpoint holds more than tensors"):
        load_checkpoint(pt)
    with pytest.raises(WeightsError, match=r"refused: the weights file holds more than tensors"):
        read_state_dict(pt)
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk" * 8)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(err.value) and "weights_only` set to `False`" not in str(err.value)  # no unsafe advice
    assert not marker.exists()


class CodeInArchive(torch.nn.Module):
    """A TorchScript classifier whose forward overwrites the first 6 bytes of `target` (torch.from_file with
    shared=True maps the file): what a hostile archive's code can do to any file the user can write."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        victim = torch.from_file(self.target, shared=True, size=6, dtype=torch.uint8)
        victim.fill_(88)  # "XXXXXX"
        logits = self.fc(image.mean(dim=(2, 3))) + victim.sum() * 0  # used, so the JIT keeps the write
        return logits, logits.softmax(1)


def _torchscript_with_code(path: Path, canary: Path) -> Path:
    """A TorchScript archive with complete, valid visiontl metadata (so nothing but the code decides), saved
    under a checkpoint's name."""
    from visiontl.config import build_config

    meta = {"task": "classification", "classes": ["a", "b"], "input": {"name": "image", "shape": [1, 3, 32, 32]},
            "input_size": [32, 32], "outputs": {"logits": "", "probabilities": ""}, "label_map": None,
            "checkpoint": {"epoch": 1},
            "config": build_config({"task": "classification", "model": {"backbone": "resnet18", "weights": "none"},
                                    "data": {"image_size": 32}}).to_dict()}
    with pytest.warns(FutureWarning):  # torch.jit's deprecation notices
        module = torch.jit.script(CodeInArchive(str(canary)))
        torch.jit.save(module, str(path), _extra_files={"visiontl.json": json.dumps(meta)})
    return path


@pytest.mark.parametrize("command", [
    ["predict", "{pt}", "{images}", "--out", "{tmp}/pred.json"],
    ["predict", "{pt}", "{images}", "--out", "{tmp}/tasks.json", "--format", "labelstudio"],
    ["evaluate", "{pt}", "--out", "{tmp}/eval"],
    ["serve", "{pt}", "--root", "{images}", "--port", "0"],
    ["data", "rank", "{pt}", "{images}", "--top", "1", "--out", "{tmp}/next.txt"],
], ids=["predict", "predict-preannotate", "evaluate", "serve", "data-rank"])
def test_torchscript_code_runs_only_when_the_user_allows_it(command: list[str], evil: SimpleNamespace,
                                                            capsys: pytest.CaptureFixture) -> None:
    canary = evil.tmp / "canary.txt"
    canary.write_bytes(b"intact\n")
    pt = _torchscript_with_code(evil.tmp / "model.pt", canary)
    argv = [part.format(pt=pt, tmp=evil.tmp, images=evil.images) for part in command]
    code, out, err = _cli(argv, capsys)
    assert code == 2 and canary.read_bytes() == b"intact\n"
    if command[0] == "predict":
        assert err.splitlines() == [
            f"visiontl: error: {pt}: refused: a TorchScript archive holds code that runs when the model is used "
            "(it can read and overwrite any of your files); visiontl runs it only with --allow-torchscript-code, "
            "for a file you trust as you would a program (an ONNX export or the checkpoint needs no such trust)"]
    else:  # commands that need the checkpoint itself never run an archive, flag or not
        assert err.splitlines() == [
            f"visiontl: error: {pt}: refused: a TorchScript archive (an exported model, holding code that torch would "
            "run), not a visiontl checkpoint; visiontl loads only tensors here (torch.load weights_only=True)"]
    if command[:2] == ["predict", "{pt}"] and "--format" not in command:
        # the code is live: with the flag, predict runs it (and the prediction comes out as from any model)
        code, out, err = _cli(argv + ["--allow-torchscript-code"], capsys)
        assert code == 0, err
        assert canary.read_bytes() == b"XXXXXX\n"
        rows = json.loads((evil.tmp / "pred.json").read_text())
        assert [row["file"] for row in rows] == [str(evil.images / "good.png")]


def test_python_loaders_refuse_torchscript_unless_allowed(tmp_path: Path) -> None:
    from visiontl.engine.checkpoint import load_checkpoint
    from visiontl.loading import load_predictor
    from visiontl.export.runtime import open_exported

    canary = tmp_path / "canary.txt"
    canary.write_bytes(b"intact\n")
    pt = _torchscript_with_code(tmp_path / "model.torchscript", canary)
    for load in (load_predictor, open_exported, load_checkpoint):
        with pytest.raises(CheckpointError, match=r"refused: a TorchScript archive") as err:
            load(pt)
        assert str(err.value).startswith(f"{pt}: ") and "\n" not in str(err.value)
    loaded = load_predictor(pt, allow_torchscript_code=True)
    assert canary.read_bytes() == b"intact\n"  # loading ran nothing yet; calling the model does
    loaded.model.runtime(torch.rand(1, 3, 32, 32).numpy())
    assert canary.read_bytes() == b"XXXXXX\n"

    # allowed or not, metadata is read as bytes and bounded: a 17 MiB side-car (sparse) is refused unread
    bare = tmp_path / "bare.torchscript"
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(CodeInArchive(str(canary))), str(bare))  # no metadata inside
    with open(f"{bare}.json", "wb") as f:
        f.truncate(17 * 2**20)
    with pytest.raises(CheckpointError, match=r"bare.torchscript.json: 17825792 bytes, more than visiontl reads as "
                                              r"metadata \(16777216\)"):
        load_predictor(bare, allow_torchscript_code=True)


# --- XML ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["billion_laughs", "external_entity"])
@pytest.mark.parametrize("fmt", ["voc", "cvat"])
def test_xml_entities_are_refused_quickly(fmt: str, attack: str, tmp_path: Path) -> None:
    from visiontl.data.formats.registry import read_dataset

    src = cb.voc(tmp_path, attack) if fmt == "voc" else cb.cvat(tmp_path, attack)
    started = time.perf_counter()
    with pytest.raises(DataError) as err:
        read_dataset(fmt, src)
    assert time.perf_counter() - started < 2.0
    assert "refused" in str(err.value) and "\n" not in str(err.value) and "root:" not in str(err.value)


@pytest.mark.parametrize("attack", ["billion_laughs", "external_entity"])
def test_label_configs_with_entities_are_refused(attack: str, tmp_path: Path) -> None:
    """Label Studio label configs: read_labelstudio(label_config=), predict --label-config, serve's /setup."""
    from visiontl.data.formats.labelstudio import read_labelstudio
    from visiontl.serve import parse_label_config, read_label_config

    head = (CORPUS / "voc" / f"{attack}.xml").read_text().split("<annotation>")[0]  # the DOCTYPE
    entity = "&lol9;" if attack == "billion_laughs" else "&xxe;"
    config = tmp_path / "config.xml"
    config.write_text(f'{head}<View><Image name="image" value="$image"/><RectangleLabels name="label" '
                      f'toName="image"><Label value="{entity}"/></RectangleLabels></View>')
    tasks = cb.labelstudio(tmp_path, "good")
    for call in (lambda: read_labelstudio(tasks, tmp_path / "images", label_config=config),
                 lambda: read_label_config(config), lambda: parse_label_config(config.read_text())):
        with pytest.raises(DataError, match="refused") as err:
            call()
        assert "\n" not in str(err.value)


REFUSAL = ("refused: the file declares XML entities or external references ({name!r}), which {what} never need "
           "(billion-laughs / external-entity attacks)")


@pytest.mark.parametrize("attack, name", [("billion_laughs", "lol"), ("external_entity", "xxe")])
def test_every_xml_reader_refuses_entities_in_the_same_words(attack: str, name: str, tmp_path: Path) -> None:
    """VOC, CVAT, Label Studio label configs (file and /setup text) all parse through formats/common.py."""
    from visiontl.data.formats.common import parse_xml, read_xml
    from visiontl.data.formats.cvat import read_cvat
    from visiontl.data.formats.labelstudio.label_config import read_label_config
    from visiontl.data.formats.voc import read_voc
    from visiontl.serve import parse_label_config

    voc = cb.voc(tmp_path / "voc", attack)
    cvat = cb.cvat(tmp_path / "cvat", attack)  # the annotations.xml
    head = (CORPUS / "voc" / f"{attack}.xml").read_text().split("<annotation>")[0]
    config = tmp_path / "config.xml"
    config.write_text(f'{head}<View><Label value="&{"lol9" if name == "lol" else name};"/></View>')
    annotation_files = REFUSAL.format(name=name, what="annotation files")
    label_configs = REFUSAL.format(name=name, what="label configs")
    for call, message in [
        (lambda: read_voc(voc), f"{voc / 'Annotations' / 'a.xml'}: {annotation_files}"),
        (lambda: read_cvat(cvat), f"{cvat}: {annotation_files}"),
        (lambda: read_xml(CORPUS / "voc" / f"{attack}.xml"), f"{CORPUS / 'voc' / f'{attack}.xml'}: {annotation_files}"),
        (lambda: read_label_config(config), f"{config}: {label_configs}"),
        (lambda: parse_label_config(config.read_text(), "project 7: label config"),
         f"project 7: label config: {label_configs}"),
        (lambda: parse_xml(config.read_bytes(), "setup", "label config"), f"setup: {label_configs}"),
    ]:
        with pytest.raises(DataError) as err:
            call()
        assert str(err.value) == message
        assert err.value.__cause__ is None and err.value.__suppress_context__


def test_xml_parser_failures_are_one_line_naming_the_file(tmp_path: Path) -> None:
    from visiontl.data.formats.common import parse_xml, read_xml, recording_inputs

    good = tmp_path / "good.xml"
    good.write_text('<?xml version="1.0" encoding="utf-8"?><annotation><size><width>4</width></size></annotation>')
    with recording_inputs() as inputs:
        assert read_xml(good).findtext("size/width") == "4"
    assert inputs == [good]  # a conversion never writes over a file it read
    assert parse_xml("<View><Image name='image'/></View>", "x").find("Image").get("name") == "image"
    broken = tmp_path / "broken.xml"
    broken.write_text("<annotation><size></annotation>")
    cases = [(lambda: read_xml(broken), f"{broken}: not valid XML (mismatched tag: line 1, column 20)"),
             (lambda: read_xml(tmp_path / "nope.xml"), f"{tmp_path / 'nope.xml'}: annotation file not found"),
             (lambda: read_xml(tmp_path / "nope.xml", "label config"), f"{tmp_path / 'nope.xml'}: label config not found"),
             (lambda: read_xml(tmp_path), f"{tmp_path}: cannot read (Is a directory)"),
             (lambda: parse_xml("", "setup"), "setup: not valid XML (no element found: line 1, column 0)"),
             (lambda: parse_xml(b"<a>\xff</a>", "setup"), "setup: not valid XML (not well-formed (invalid token): line 1, "
                                                          "column 3)")]
    for call, message in cases:
        with pytest.raises(DataError) as err:
            call()
        assert str(err.value) == message


def test_xml_is_parsed_in_one_place() -> None:
    """Only visiontl/data/formats/common.py parses XML (the writers build documents with ElementTree)."""
    root = Path(__file__).resolve().parents[1] / "visiontl"
    parsing = re.compile(r"defusedxml|\bET\.(parse|fromstring|XML|iterparse|XMLParser)\b|\bminidom\b|expat|sax\.parse")
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if parsing.search(p.read_text(encoding="utf-8")))
    assert users == ["data/formats/common.py"]


# --- image references that leave their folder --------------------------------------------------------------

ESCAPES = ["../x.png", "a/../../x.png", "/etc/passwd", "C:\\Windows\\x.png", "C:x.png", "\\\\server\\share\\x.png",
           "..\\x.png", "//server/share/x.png", ""]


@pytest.mark.parametrize("name", ESCAPES)
def test_file_names_outside_the_image_folder_are_refused(name: str) -> None:
    from visiontl.data.formats.common import relative_name

    with pytest.raises(DataError, match=r"^ann\.json: image 3: file name .* is not a path inside the image folder$"):
        relative_name(name, "ann.json: image 3")


@pytest.mark.parametrize("name", ["a.png", "sub/a.png", "sub\\a.png", "a..b.png", "..a.png", "./a.png"])
def test_file_names_inside_the_image_folder_are_kept(name: str) -> None:
    from visiontl.data.formats.common import relative_name

    assert str(relative_name(name, "x")) == name.replace("\\", "/").removeprefix("./")


@pytest.mark.parametrize("name", ["../outside.png", "/etc/passwd", "C:\\x.png"])
def test_each_reader_refuses_escaping_references_at_read_time(name: str, tmp_path: Path) -> None:
    from visiontl.data.formats.coco import read_coco
    from visiontl.data.formats.cvat import read_cvat
    from visiontl.data.formats.voc import read_voc

    coco = json.loads((CORPUS / "coco" / "good.json").read_text())
    coco["images"][0]["file_name"] = name
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"coco\.json: image 1: file name .* is not a path inside"):
        read_coco(tmp_path / "coco.json", tmp_path)
    (tmp_path / "cvat.xml").write_text((CORPUS / "cvat" / "good.xml").read_text().replace('name="good.png"',
                                                                                          f'name="{name}"'))
    with pytest.raises(DataError, match=r"cvat\.xml: image 0: name .* is not a path inside"):
        read_cvat(tmp_path / "cvat.xml", tmp_path)
    root = cb.voc(tmp_path / "v", "good")
    xml = root / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<filename>good.png", f"<filename>{name}"))
    with pytest.raises(DataError, match=r"a\.xml: <filename> .* is not a path inside"):
        read_voc(root, "train")


def test_cvat_subsets_that_climb_out_are_refused(tmp_path: Path) -> None:
    from visiontl.data.formats.cvat import read_cvat

    text = (CORPUS / "cvat" / "good.xml").read_text()
    text = text.replace('<image id="0" name="good.png"', '<image id="0" name="good.png" subset="../.."')
    text = text.replace("</annotations>", '<image id="1" name="good.png" width="32" height="24"></image>\n'
                                          "</annotations>")  # same name twice: CVAT's <subset>/<name> layout
    (tmp_path / "cvat.xml").write_text(text)
    with pytest.raises(DataError, match=r"image 0 \(good\.png\): file name '\.\./\.\./good\.png' is not a path"):
        read_cvat(tmp_path / "cvat.xml", tmp_path)


def test_label_studio_references_keep_to_the_image_folder(tmp_path: Path) -> None:
    """`..` is refused; absolute paths and URLs are by design mapped onto the image folder by their tail,
    so they never name a file elsewhere."""
    from visiontl.data.formats.labelstudio import read_labelstudio

    cb.labelstudio(tmp_path, "good")
    for url in ("../outside.png", "/data/local-files/?d=sub/../../outside.png", "/data/upload/1/../../outside.png"):
        doc = json.loads((CORPUS / "labelstudio" / "good.json").read_text())
        doc[0]["data"]["image"] = url
        (tmp_path / "tasks.json").write_text(json.dumps(doc))
        with pytest.raises(DataError, match=r"task 1: the image URL .* climbs out of the image folder"):
            read_labelstudio(tmp_path / "tasks.json", tmp_path / "images")
    for url in (str(tmp_path / "outside.png"), "C:\\Users\\me\\outside.png", "s3://bucket/outside.png"):
        doc[0]["data"]["image"] = url
        (tmp_path / "tasks.json").write_text(json.dumps(doc))
        aset = read_labelstudio(tmp_path / "tasks.json", tmp_path / "images")
        assert aset.image_path(aset.images[0]) == tmp_path / "images" / "outside.png"  # not the file beside


def test_yolo_lists_keep_to_the_dataset(tmp_path: Path) -> None:
    from visiontl.data.formats.yolo import read_yolo

    root = cb.yolo(tmp_path, "good", "list_escapes_root", list_file="list_escapes_root")
    with pytest.raises(DataError, match=r"train\.txt: line 2: '\.\./outside/outside\.png' is not a path inside"):
        read_yolo(root, "train")
    (root / "train.txt").write_text(f"{tmp_path / 'outside' / 'outside.png'}\n")
    with pytest.raises(DataError, match=r"train\.txt: line 1: '/.*outside\.png' is not a path inside"):
        read_yolo(root, "train")
    (root / "train.txt").write_text(f"{root / 'images' / 'train' / 'good.png'}\n")  # absolute, inside: darknet's
    assert [i.file_name for i in read_yolo(root, "train").images] == ["good.png"]


def test_labelme_never_opens_an_absolute_image_path(tmp_path: Path) -> None:
    """labelme writes imagePath relative to the JSON (`../images/x.jpg` included); an absolute one names a
    file of the machine that wrote it, so only its name is looked for, beside the JSON."""
    from visiontl.data.formats.labelme import read_labelme

    folder = cb.labelme(tmp_path, "good")
    secret = cb._copy(CORPUS / "images" / "gray.png", tmp_path / "secret" / "secret.png")
    doc = json.loads((folder / "good.json").read_text())
    doc["imagePath"] = str(secret)
    (folder / "good.json").write_text(json.dumps(doc))
    aset = read_labelme(folder)  # the size comes from the JSON, the file is looked for beside it
    assert aset.image_path(aset.images[0]).resolve() == (folder / "secret.png").resolve()
    doc["imageWidth"] = doc["imageHeight"] = None
    (folder / "good.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"good\.json: image '.*secret\.png' not found \(.*labelme/secret\.png\)"):
        read_labelme(folder)


# --- YAML --------------------------------------------------------------------------------------------------


def test_yaml_python_tags_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    from visiontl.config import load_config

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("task: classification\ntrain: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: not valid YAML \(could not determine a constructor"):
        load_config(config)
    config.write_text("task: classification\n")
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be a valid integer"):
        load_config(config, ["train.epochs=!!python/object/apply:os.system ['touch pwned']"])
    code, out, err = _cli(["train", str(config), "train.epochs=!!python/object/new:os.system [touch pwned]"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


def test_yaml_alias_bombs_are_refused_quickly(tmp_path: Path) -> None:
    from visiontl import safe_yaml
    from visiontl.config import load_config
    from visiontl.report.runs import _read_yaml_mapping

    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"config\.yaml: refused: its aliases \(\*name\) expand to more than"):
        load_config(shutil.copyfile(CORPUS / "config" / "alias_bomb.yaml", tmp_path / "config.yaml"))
    with pytest.raises(DataError, match=r"refused: its aliases"):
        _read_yaml_mapping(shutil.copyfile(CORPUS / "config" / "alias_bomb.yaml", tmp_path / "run.yaml"))
    with pytest.raises(safe_yaml.YamlRefused, match="refers to the collection that holds it"):
        safe_yaml.load("a: &a [1, *a]\n")
    assert time.perf_counter() - started < 5.0
    # what configs do with anchors stays fine
    assert safe_yaml.load("base: &b {lr: 0.1}\nother: {<<: *b, epochs: 3}\n") == {
        "base": {"lr": 0.1}, "other": {"lr": 0.1, "epochs": 3}}


def test_yaml_bounds_what_aliases_add_not_what_the_text_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """500,000 plain keys were refused as an "alias bomb": the bound counted every value, written or aliased.
    Scaled down here (the bound at 1,000 values) so the test parses small documents."""
    from visiontl import safe_yaml

    monkeypatch.setattr(safe_yaml, "MAX_ALIASED_VALUES", 1_000)
    plain = "".join(f"k{i}: [{i}, {i}]\n" for i in range(2_000))  # 10,000 values, all written out
    assert len(safe_yaml.load(plain)) == 2_000
    row = "a: &a [" + ", ".join(["1"] * 99) + "]\n"  # an aliased list of 100 values
    assert len(safe_yaml.load(row + "b: [" + ", ".join(["*a"] * 9) + "]\n")["b"]) == 9  # 900 values added
    with pytest.raises(safe_yaml.YamlRefused, match=r"its aliases \(\*name\) expand to more than 1,000 values"):
        safe_yaml.load(row + "b: [" + ", ".join(["*a"] * 11) + "]\n")  # 1,100 added
    scalars = "a: &a x\nb: [" + ", ".join(["*a"] * 5_000) + "]\n"  # an aliased scalar adds what the text writes
    assert len(safe_yaml.load(scalars)["b"]) == 5_000


def test_yaml_larger_than_any_file_visiontl_reads_is_refused_unparsed(tmp_path: Path) -> None:
    """What the text writes out is bounded by its length: every reader (data.yaml, a run's config.yaml) refuses
    more than safe_yaml.MAX_CHARS before parsing (500,000 plain keys took a minute to be refused, wrongly)."""
    from visiontl import safe_yaml
    from visiontl.report.runs import _read_yaml_mapping

    path = tmp_path / "config.yaml"
    path.write_text("".join(f"k{i}: {i}\n" for i in range(500_000)))
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"config\.yaml: not readable YAML \(refused: 7,777,780 characters of YAML, "
                                        r"more than any file visiontl reads needs \(4,194,304\)\)"):
        _read_yaml_mapping(path)
    assert time.perf_counter() - started < 2.0
    assert safe_yaml.load("a: " + "x" * (safe_yaml.MAX_CHARS - 3)) == {"a": "x" * (safe_yaml.MAX_CHARS - 3)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("names: [a, b]\nnc: 2\nnames: [c]\n", "refused: key 'names' appears twice in one mapping (lines 1 and 3)"),
        ("a: {1: x, 0x1: y}\n", "refused: key '1' appears twice in one mapping (lines 1 and 1)"),
        ("a: " + "[" * 101 + "]" * 101 + "\n", "refused: nested more than 100 levels deep (line 1)"),
        ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "refused: nested more than 100 levels deep (line 1)"),
        ("a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 60 + "*a" + "]" * 60 + "\n",  # deep through an alias
         "refused: nested more than 100 levels deep (line 2)"),
        ("n: " + "9" * 5_000 + "\n", "refused: line 1: an integer of 5,000 characters (at most 4,300)"),
        ("day: 2001-13-01\n", "refused: a value YAML cannot build (month must be in 1..12)"),
    ],
    ids=["duplicate_key", "duplicate_int_key", "nested_101", "nested_100000", "nested_via_alias", "int_5000_digits",
         "bad_date"],
)
def test_yaml_refusals_are_one_line_for_every_reader(tmp_path: Path, text: str, message: str) -> None:
    """configs, data.yaml and run directories all read YAML through safe_yaml: the same refusals, no traceback."""
    from visiontl import safe_yaml
    from visiontl.report.runs import _read_yaml_mapping

    with pytest.raises(safe_yaml.YamlRefused) as info:
        safe_yaml.load(text)
    assert str(info.value) == message or str(info.value).startswith(message)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(message)):
        _read_yaml_mapping(path)


def test_yaml_refusals_without_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pure-Python loader (PyYAML built without libyaml) recurses once per level: a RecursionError there is
    the same one line."""
    import yaml

    from visiontl import safe_yaml

    class PurePython(yaml.SafeLoader):
        get_single_data = safe_yaml._Loader.get_single_data

    monkeypatch.setattr(safe_yaml, "_Loader", PurePython)
    with pytest.raises(safe_yaml.YamlRefused, match=r"^refused: nested more than 100 levels deep$"):
        safe_yaml.load("a: " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(safe_yaml.YamlRefused, match=r"key 'a' appears twice in one mapping \(lines 1 and 2\)"):
        safe_yaml.load("a: 1\na: 2\n")
    assert safe_yaml.load("base: &b {lr: 0.1}\nother: {<<: *b, lr: 3}\n") == {"base": {"lr": 0.1}, "other": {"lr": 3}}


# --- visiontl serve ----------------------------------------------------------------------------------------


def test_serve_defaults_to_this_machine_and_bounded_requests() -> None:
    import inspect

    from visiontl.cli import build_parser
    from visiontl.serve import Backend, make_server

    args = build_parser().parse_args(["serve", "model.pt"])
    assert args.host == "127.0.0.1" and args.max_request_mb == 10.0
    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(Backend.__init__).parameters["host"].default == "127.0.0.1"


@pytest.fixture
def backend(tmp_path: Path) -> Any:
    """A Backend without a model (path rules and request parsing only), root tmp/root."""
    from visiontl.serve import Backend

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    shutil.copyfile(CORPUS / "images" / "good.png", root / "sub" / "good.png")
    shutil.copyfile(CORPUS / "images" / "good.png", tmp_path / "secret.png")
    (tmp_path / "outside").mkdir()
    shutil.copyfile(CORPUS / "images" / "good.png", tmp_path / "outside" / "x.png")
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)  # a folder link out of the root
    loaded = SimpleNamespace(config=SimpleNamespace(task="detection", model=SimpleNamespace(arch="faster_rcnn",
                                                                                           backbone="resnet18",
                                                                                           display_threshold=0.5),
                                                    data=SimpleNamespace(max_pixels=120_000_000)),
                             epoch=1, classes=["cell"])
    return Backend(loaded, [root], max_request_mb=0.01)


@pytest.mark.parametrize("ref", [
    "../secret.png", "sub/../../secret.png", "..\\secret.png", "/data/upload/../../secret.png",
    "/data/local-files/?d=sub/../../secret.png", "file://{tmp}/secret.png", "{tmp}/secret.png",
    "linked/x.png", "/data/local-files/?d=linked/x.png", "http://localhost:8080/data/local-files/?d=../secret.png",
])
def test_serve_reads_nothing_outside_its_roots(ref: str, backend: Any, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="refused: it resolves outside the --root folders") as err:
        backend.resolve(ref.format(tmp=tmp_path))
    assert "\n" not in str(err.value)


def test_serve_reads_inside_its_roots(backend: Any, tmp_path: Path) -> None:
    root = (tmp_path / "root").resolve()
    for ref in ("sub/good.png", f"{root}/sub/good.png", "/data/local-files/?d=sub/good.png",
                f"file://{root}/sub/good.png"):
        assert backend.resolve(ref) == root / "sub" / "good.png"
    with pytest.raises(DataError, match="not a usable path|not found"):
        backend.resolve("sub/go\x00od.png")


def test_serve_answers_hostile_requests_with_400_or_413(backend: Any) -> None:
    import threading
    import urllib.error
    import urllib.request

    from visiontl.serve import make_server

    server = make_server(backend, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(path: str, data: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        status, answer = post("/predict", b"[" * 5000 + b"]" * 5000)  # nested past Python's stack
        assert status == 400 and "nested too deeply" in answer["error"]
        laughs = (CORPUS / "cvat" / "billion_laughs.xml").read_text().split("<annotations>")[0] + "<View>&lol9;</View>"
        started = time.perf_counter()
        status, answer = post("/setup", json.dumps({"project": "1", "schema": laughs}).encode())
        assert status == 400 and "refused" in answer["error"] and time.perf_counter() - started < 5
        status, answer = post("/predict", b'{"tasks": [], "x": "' + b"y" * 20_000 + b'"}')  # over 0.01 MB
        assert status == 413 and "limit" in answer["error"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
