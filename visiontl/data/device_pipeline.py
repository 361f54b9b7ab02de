"""data.augment_on: device. The DataLoader workers read images and do the geometry (resize, random scale, pad,
crops, flips) on uint8 arrays; the colour jitter, the uint8 -> float conversion and the normalisation run
batched in the training process, on the training device, after the batch is moved there (docs/performance.md).

The geometric part is the very albumentations pipeline of the CPU path cut before its photometric ops, seeded
with the same per-sample seed: albumentations draws its random numbers in op order and the colour jitter
comes after the geometry, so crops and flips are exactly the CPU path's. Without colour jitter (presets none
and light, and every eval pipeline) the model sees the CPU path's tensor up to float rounding (max abs
difference 1e-5, tests/test_device_pipeline.py), padding included.

Colour jitter keeps the CPU path's ranges and probability but is not pixel-identical to albumentations'
ColorJitter: its factors are drawn in the worker from the sample's own seed (so they do not depend on the
worker count) and applied on the device to float pixels in [0, 1], batched, always in the order brightness,
contrast, saturation, hue (albumentations shuffles the order and works on uint8).

JPEG decoding on the device (nvjpeg) happens only where it is exact and needs no geometry before the
normalisation: the validation images of segmentation (kept at their own size), on a CUDA device, for RGB
JPEGs that need no EXIF turn (torchvision's CUDA decoder ignores EXIF orientation) and are not in data.cache.
The workers send those files' bytes; every other image is decoded by the workers as on the CPU path.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset

from visiontl.data import images
from visiontl.data.sampling import split_item
from visiontl.data.segmentation import PadCollate, SegmentationDataset
from visiontl.errors import ConfigError

IDENTITY = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation factors and hue shift that change nothing


@dataclass(frozen=True)
class JitterRanges:
    """albumentations ColorJitter's ranges (factors; hue as a shift in [-0.5, 0.5]) and probability."""

    brightness: tuple[float, float]
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    hue: tuple[float, float]
    p: float

    def draw(self, seed: int) -> tuple[float, float, float, float]:
        # a stream of its own: the geometry's generator is seeded with `seed` itself
        rng = np.random.default_rng((seed, 1))
        if rng.random() >= self.p:
            return IDENTITY
        return tuple(float(rng.uniform(*r)) for r in (self.brightness, self.contrast, self.saturation, self.hue))


@dataclass(frozen=True)
class Split:
    """An albumentations pipeline of the CPU path, cut in two: the geometry (run by the workers) and what the
    device does after it."""

    geometry: A.Compose
    jitter: JitterRanges | None
    mean: tuple[float, ...]
    std: tuple[float, ...]


def split_transform(transform: A.Compose) -> Split:
    """The geometric ops of `transform` (before its ColorJitter / Normalize), its jitter ranges and its
    normalisation. An op the device has no version of (GaussianBlur) is a ConfigError."""
    geometric: list[A.BasicTransform] = []
    jitter, norm = None, None
    for op in transform.transforms:
        if isinstance(op, A.ColorJitter):
            jitter = JitterRanges(tuple(op.brightness), tuple(op.contrast), tuple(op.saturation), tuple(op.hue), op.p)
        elif isinstance(op, A.Normalize):
            if op.normalization != "standard" or op.max_pixel_value != 255.0:
                raise ConfigError(f"data.augment_on: device: normalisation {op.normalization!r} has no device version")
            norm = op
        elif isinstance(op, ToTensorV2):
            continue
        elif isinstance(op, A.DualTransform) and jitter is None and norm is None:
            geometric.append(op)
        else:
            raise ConfigError(f"data.augment_on: device: {type(op).__name__} has no device version; use "
                              "data.augment_on: cpu, or another data.augment preset")
    if norm is None:
        raise ConfigError("data.augment_on: device: the pipeline has no Normalize op")
    return Split(A.Compose(geometric), jitter, tuple(float(m) for m in np.ravel(norm.mean)),
                 tuple(float(s) for s in np.ravel(norm.std)))


@dataclass
class DeviceImages:
    """A batch as the workers leave it: uint8 pixels padded to one size, each image's real size, its jitter
    factors, and the JPEGs left for the device to decode. `finish` makes the model's input of it."""

    pixels: torch.Tensor  # B x 3 x H x W uint8, zero beyond each image's size (and where `encoded` goes)
    sizes: torch.Tensor  # B x 2 (height, width) of each image
    jitter: torch.Tensor  # B x 4: brightness, contrast, saturation factors, hue shift (IDENTITY: untouched)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    encoded: list[tuple[int, torch.Tensor, str]] = field(default_factory=list)  # (slot in the batch, JPEG bytes, file)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape

    def pin_memory(self) -> DeviceImages:
        """DataLoader(pin_memory=True) calls this: the pixels go to page-locked memory for an async copy."""
        return DeviceImages(self.pixels.pin_memory(), self.sizes, self.jitter, self.mean, self.std, self.encoded)

    def finish(self, device: torch.device) -> torch.Tensor:
        """B x 3 x H x W float32 on `device`: decoded, jittered, normalised, zero beyond each image's size
        (the CPU path pads normalised images with zeros)."""
        pixels = self.pixels.to(device, non_blocking=True)
        if self.encoded:
            if pixels.data_ptr() == self.pixels.data_ptr():  # on the CPU: the batch itself stays as the workers left it
                pixels = pixels.clone()
            for (slot, _, _), decoded in zip(self.encoded, self._decoded(device)):
                pixels[slot, :, : decoded.shape[-2], : decoded.shape[-1]] = decoded
        x = pixels.float().div_(255.0)
        height, width = x.shape[-2:]
        region = None
        if any(h != height or w != width for h, w in self.sizes.tolist()):
            size = self.sizes.to(device, non_blocking=True)
            rows = torch.arange(height, device=device).view(1, height, 1) < size[:, 0].view(-1, 1, 1)
            cols = torch.arange(width, device=device).view(1, 1, width) < size[:, 1].view(-1, 1, 1)
            region = (rows & cols).unsqueeze(1)
        jittered = [k for k, factors in enumerate(self.jitter.tolist()) if tuple(factors) != IDENTITY]
        if jittered:
            pick = torch.tensor(jittered, device=device)
            x[pick] = color_jitter(x[pick], self.jitter[jittered], region[pick] if region is not None else None)
        mean = torch.tensor(self.mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        x = x.sub_(mean).div_(std)
        if region is not None:  # the CPU path pads normalised images with zeros
            x = x.masked_fill_(~region, 0.0)
        return x

    def _decoded(self, device: torch.device) -> list[torch.Tensor]:
        """The JPEGs of `encoded`, decoded on `device` in one call; where that decoder fails, by the workers'
        decoder, one by one, so a bad file is named (they all passed the checks before training)."""
        try:
            return decode_jpegs([data for _, data, _ in self.encoded], device)
        except RuntimeError:
            return [torch.from_numpy(images.decode_image_file(name)).permute(2, 0, 1).to(device)
                    for _, _, name in self.encoded]


def color_jitter(images: torch.Tensor, factors: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Float images in [0, 1] (B x 3 x H x W), each with its own factors (B x 4: brightness, contrast,
    saturation, hue shift), batched, in the fixed order brightness, contrast, saturation, hue; the formulas are
    torchvision.transforms.v2.functional's adjust_* (tests compare). `region` (B x 1 x H x W, bool): each image's
    real pixels, over which contrast takes its mean (batch padding must not darken it). An op whose factors are
    all the identity is skipped, so IDENTITY leaves an image exactly as it is. `factors` stay on the CPU: which
    ops run is decided without waiting for the device."""
    on_device = factors.to(images.device, non_blocking=True)
    b, c, s, h = (on_device[:, i].view(-1, 1, 1, 1) for i in range(4))
    x = images
    if (factors[:, 0] != 1).any():
        x = (x * b).clamp_(0.0, 1.0)
    if (factors[:, 1] != 1).any():
        gray = _grayscale(x)
        if region is None:
            mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        else:
            mean = (gray * region).sum(dim=(-3, -2, -1), keepdim=True) / region.sum(dim=(-3, -2, -1), keepdim=True)
        x = (c * x + (1.0 - c) * mean).clamp_(0.0, 1.0)
    if (factors[:, 2] != 1).any():
        x = (s * x + (1.0 - s) * _grayscale(x)).clamp_(0.0, 1.0)
    if (factors[:, 3] != 0).any():
        # torchvision's public adjust_hue takes one shift for the whole batch; its HSV conversions take any
        from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

        hue, sat, val = _rgb_to_hsv(x).unbind(dim=-3)
        x = _hsv_to_rgb(torch.stack(((hue + h[:, 0]).remainder_(1.0), sat, val), dim=-3))
    return x


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(dim=-3)


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """3 x H x W uint8 RGB images decoded on `device` (nvjpeg on CUDA), in one call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # deprecated in 0.29 in favour of TorchCodec; images.py says the same
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class DeviceItems(Dataset):
    """What the workers produce for `dataset` (a ClassificationDataset or SegmentationDataset) under
    data.augment_on: device: its images after the geometry, as uint8, with their jitter factors. Everything else
    (file_of, ignore_index, samples, ...) is the wrapped dataset's. `decode_jpegs`: send the bytes of JPEGs the
    device can decode exactly (only where the dataset's pipeline has no geometry)."""

    def __init__(self, dataset: Dataset, decode_jpegs: bool = False):
        self.inner = dataset
        self.split = split_transform(dataset.transform)
        self.segmentation = isinstance(dataset, SegmentationDataset)
        self.decode_jpegs = decode_jpegs and self.segmentation and not self.split.geometry.transforms
        self.pad = PadCollate(dataset.ignore_index) if self.segmentation else None  # the CPU path's padding

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Any, Any, int, tuple[float, ...], tuple[int, int]]:
        index, seed = split_item(item)
        jitter = self.split.jitter.draw(seed) if self.split.jitter is not None else IDENTITY
        if self.segmentation:
            mask = self.inner.load_mask(index)
            encoded = self._encoded(index) if self.decode_jpegs else None
            if encoded is not None:  # no geometry here: the decoded image is the image
                return encoded, torch.as_tensor(mask, dtype=torch.int64), index, jitter, tuple(mask.shape[:2])
            self.split.geometry.set_random_seed(seed)
            out = self.split.geometry(image=self.inner.load_image(index), mask=mask)
            image, target = out["image"], torch.as_tensor(np.asarray(out["mask"]), dtype=torch.int64)
        else:
            image, target = self.inner.load(index)
            self.split.geometry.set_random_seed(seed)
            image = self.split.geometry(image=image)["image"]
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return pixels, target, index, jitter, tuple(image.shape[:2])

    def _encoded(self, index: int) -> tuple[torch.Tensor, str] | None:
        """The bytes of image `index` when the device can decode it as read_image would, else None."""
        path = self.inner.file_of(index)
        if Path(path).suffix.lower() not in (".jpg", ".jpeg") or str(path) in images.CACHE:
            return None
        try:  # an image embedded in an annotation file has no file to read: it is decoded by the workers
            data = Path(path).read_bytes()
            with images.open_image(io.BytesIO(data), name=path) as im:
                if im.format != "JPEG" or im.mode != "RGB" or images.orientation(im) != 1:
                    return None
        except Exception:  # noqa: BLE001 (the worker's own decoding then says what is wrong, naming the file)
            return None
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), str(path)

    def collate(self, batch: list[Any]) -> tuple[DeviceImages, torch.Tensor, torch.Tensor]:
        """(DeviceImages, labels or masks, indices); segmentation pads as PadCollate does, to the batch's
        largest image rounded up to its stride (masks with ignore_index)."""
        pictures, targets, index, jitter, sizes = zip(*batch)
        h, w = self.pad.padded_size(sizes) if self.pad is not None else sizes[0]
        pixels = torch.zeros((len(batch), 3, h, w), dtype=torch.uint8)
        encoded = []
        for k, (im, (ih, iw)) in enumerate(zip(pictures, sizes)):
            if isinstance(im, tuple):
                encoded.append((k, *im))
            else:
                pixels[k, :, :ih, :iw] = im
        out_targets = self.pad.pad_masks(targets, (h, w)) if self.pad is not None else torch.as_tensor(targets)
        batch_images = DeviceImages(pixels, torch.tensor(sizes, dtype=torch.int64),
                                    torch.tensor(jitter, dtype=torch.float32), self.split.mean, self.split.std, encoded)
        return batch_images, out_targets, torch.as_tensor(index)


def to_device(images: torch.Tensor | DeviceImages, device: torch.device) -> torch.Tensor:
    """A batch's images on `device`, as the model takes them, whichever pipeline made them."""
    if isinstance(images, DeviceImages):
        return images.finish(device)
    return images.to(device, non_blocking=True)


def describe(pipeline: str, task: str, device: torch.device, decode_jpegs: bool) -> str:
    """The log line of data.augment_on: what runs where."""
    if pipeline == "cpu":
        return ("data.augment_on cpu: the DataLoader workers decode, augment (geometry and colour) and normalise; "
                f"batches go to {device} as float")
    decode = ("; segmentation val JPEGs (RGB, upright, not cached) are decoded on " + str(device) + " by nvjpeg"
              if decode_jpegs and task == "segmentation" else "")
    return (f"data.augment_on device: the DataLoader workers decode and do the geometry (resize, scale, crops, flips) "
            f"on uint8; colour jitter, float conversion, normalisation and padding run batched on {device}{decode}")
