"""The command line: listing backbones and weights, importing through the CLI, exit statuses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import cli_run


def cli(*args: str, torch_home: Path) -> subprocess.CompletedProcess:
    """`visiontl ARGS` in this process (test_corpus and test_trainer run `python -m visiontl` as a process)."""
    assert os.environ["TORCH_HOME"] == str(torch_home)  # conftest's private cache
    return cli_run(*args)


def test_backbones_lists_every_name_with_channels_and_strides(torch_home: Path) -> None:
    done = cli("backbones", torch_home=torch_home)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.strip()}
    assert "64,256,512,1024,2048" in lines["resnet50"] and "2,4,8,16,32" in lines["resnet50"]
    assert lines["xception"].split()[1] == "timm"
    assert lines["vgg16"].split()[2] == "6"
    assert "timm:<model>" in done.stdout


def test_weights_list_and_import(mobilenet_file: Path, torch_home: Path, tmp_path: Path) -> None:
    done = cli("weights", "list", torch_home=torch_home)
    assert done.returncode == 0
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[1:]}
    assert rows["mobilenet_v2"] == "cached" and rows["resnet50"] == "missing"

    bad = tmp_path / "tampered.pth"
    data = bytearray(mobilenet_file.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    done = cli("weights", "import", str(bad), torch_home=torch_home)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "does not match any known ImageNet weights file" in done.stderr
    done = cli("weights", "import", str(mobilenet_file), torch_home=torch_home)
    assert done.returncode == 0 and "as torchvision MobileNet_V2_Weights.IMAGENET1K_V1" in done.stdout
    done = cli("weights", "import", str(bad), "--force", torch_home=torch_home)
    assert done.returncode == 2 and "--force needs --backbone NAME" in done.stderr


@pytest.mark.parametrize("args", [("--version",), ("train", "--help")])
def test_entry_points(args: tuple[str, ...], torch_home: Path) -> None:
    done = cli(*args, torch_home=torch_home)
    assert done.returncode == 0 and ("visiontl" in done.stdout)
