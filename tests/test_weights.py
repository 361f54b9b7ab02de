"""The offline weights cache: import by sha256, tampering refused, reading every supported file kind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from visiontl.backbones import create_backbone, get_spec
from visiontl.backbones.weights import cache_path, import_weights, read_state_dict, sha256_file
from visiontl.errors import WeightsError

MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def test_mobilenet_file_is_torchvisions(mobilenet_file: Path) -> None:
    assert sha256_file(mobilenet_file) == MOBILENET_SHA256
    assert mobilenet_file == cache_path(get_spec("mobilenet_v2").weights)


def test_import_verifies_and_places_the_file(mobilenet_file: Path, tmp_path: Path) -> None:
    copy = tmp_path / "downloaded.pth"
    shutil.copyfile(mobilenet_file, copy)
    mobilenet_file.unlink()
    try:
        dest = import_weights(copy, log=lambda m: None)
        assert dest.name == "mobilenet_v2-b0353104.pth" and sha256_file(dest) == MOBILENET_SHA256
    finally:
        if not mobilenet_file.exists():
            shutil.copyfile(copy, mobilenet_file)


def test_tampered_file_is_refused(mobilenet_file: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "mobilenet_v2-b0353104.pth"
    data = bytearray(mobilenet_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    tampered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match any known ImageNet weights file"):
        import_weights(tampered, log=lambda m: None)
    with pytest.raises(WeightsError, match="does not match mobilenet_v2's torchvision MobileNet_V2_Weights.IMAGENET1K_V1"):
        import_weights(tampered, backbone="mobilenet_v2", log=lambda m: None)


def test_unknown_file_needs_force_and_a_backbone(tmp_path: Path, torch_home: Path) -> None:
    state = create_backbone("resnet18", "none").body.state_dict()
    own = tmp_path / "my_resnet18.pth"
    torch.save(state, own)
    with pytest.raises(WeightsError, match="use --force --backbone NAME"):
        import_weights(own, log=lambda m: None)
    messages: list[str] = []
    dest = import_weights(own, backbone="resnet18", force=True, log=messages.append)
    try:
        assert dest.name == "resnet18-f37072fd.pth"
        assert "importing anyway" in messages[0]
    finally:
        dest.unlink()


def test_read_state_dict_kinds(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "b.bias": torch.ones(2)}
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    save_file(state, str(tmp_path / "w.safetensors"))
    ckpt = {"model": {"backbone.body.a.weight": state["a.weight"], "head.0.weight": torch.zeros(1)},
            "config": {}, "backbone_prefix": "backbone.body."}
    torch.save(ckpt, tmp_path / "visiontl.pt")
    for name in ("plain.pth", "wrapped.pth", "w.safetensors"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    assert set(read_state_dict(tmp_path / "visiontl.pt")) == {"a.weight"}


def test_code_in_a_pickle_is_never_run(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(WeightsError, match="holds more than tensors"):
        read_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_weights_from_a_visiontl_checkpoint_roundtrip(tmp_path: Path) -> None:
    from visiontl.models import Classifier

    model = Classifier(create_backbone("resnet18", "none"), 3)
    torch.save({"model": model.state_dict(), "config": {}, "backbone_prefix": "backbone.body."}, tmp_path / "c.pt")
    again = create_backbone("resnet18", str(tmp_path / "c.pt"))
    for (k, v), (k2, v2) in zip(model.backbone.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_imagenet_without_cache_or_network_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import visiontl.backbones.weights as weights

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(weights, "_download", offline)
    with pytest.raises(WeightsError, match=r"could not fetch ImageNet weights for 'resnet34'.*visiontl weights import FILE"):
        create_backbone("resnet34", "imagenet", log=lambda m: None)
