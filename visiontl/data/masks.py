"""Semantic segmentation data: image + label-mask pairs, and masks decoded to class-id maps.

A split is named in one of two ways (`find_pairs`):

1. A list file (`.txt`/`.csv`, relative to the data root or absolute). Each non-empty line holds an image path
   and a mask path, separated by a comma or by whitespace; lines starting with `#` are skipped, and so is a
   first line whose two fields are not image file names (a CSV header such as `image,mask`). A path is used
   as written when it exists (absolute, or relative to the root). Otherwise it was written on another machine:
   its leading folders are dropped one at a time until the rest exists under the root, so CamVid's
   `/SegNet/CamVid/train/x.png` is tried as `SegNet/CamVid/train/x.png`, `CamVid/train/x.png`, then
   `train/x.png`. Windows paths (`C:\\data\\train\\x.png`) are split the same way.
2. An image folder and a mask folder (both relative to the root, or absolute), searched recursively. An image
   `sub/x.jpg` pairs with the mask `sub/x.*` in the mask folder (any image extension), or failing that with
   `sub/x_mask.*`, `sub/x_L.*`, `sub/x_label.*` (see MASK_SUFFIXES). Masks without an image are ignored; an
   image without a mask is an error. The two folders may be the same folder (`x.jpg` beside `x_mask.png`).

A mask decodes (`read_mask`) to an HxW int64 array of class ids:
- single-channel masks (modes 1, L, I, I;16) are read as ids, with or without a palette; so are P masks
  without a palette: their palette *indices* are the ids, not their colours;
- colour masks (RGB, RGBA, and P when a palette is set) need `palette`, a list of RGB triplets whose
  index is the class id; each colour is matched exactly and colours not in the palette become
  `ignore_index`. Without a palette a colour mask is accepted only when its three channels are equal
  (a grey mask saved as RGB), and read from one channel.
Masks get the same EXIF rotation as their images.

`check_pairs` runs before training: every image and every mask decodes, sizes agree, and mask values are class ids
or `ignore_index`. `coco_semantic_mask` rasterises one image's COCO polygons/RLE into the same kind of map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from visiontl.data import SKIP_HINT, rle
from visiontl.data.annotations import AnnotationSet, Instance
from visiontl.data.images import DECODE_ERRORS, is_image_file, open_image, orientation, upright, verify_image
from visiontl.errors import DataError

MASK_SUFFIXES = ("_mask", "_L", "_label", "_labels", "_gt", "_seg")


@dataclass(frozen=True)
class MaskSample:
    image: Path
    mask: Path


def find_pairs(root: Path, images: str, masks: str | None) -> list[MaskSample]:
    """The (image, mask) pairs of one split, from a list file or from two folders (see the module docstring)."""
    root = Path(root)
    where = _under(root, images)
    if where.is_file():
        samples = _read_list(root, where)
    elif where.is_dir():
        if masks is None:
            raise DataError(f"{where}: an image folder needs a mask folder (data.masks), or name a list file instead")
        samples = _pair_folders(where, _under(root, masks))
    else:
        raise DataError(f"{where}: no such list file or image folder")
    if not samples:
        raise DataError(f"{where}: no image/mask pairs found")
    return samples


def _under(root: Path, name: str | Path) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else root / p


def _read_list(root: Path, list_file: Path) -> list[MaskSample]:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{list_file}: cannot read list file ({exc})") from None
    samples: list[MaskSample] = []
    first = True
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip().strip('"') for f in (line.split(",") if "," in line else line.split())]
        if len(fields) != 2 or not all(fields):
            raise DataError(f"{list_file}:{number}: expected an image path and a mask path, got {line!r}")
        first, header = False, first and not any(is_image_file(Path(f)) for f in fields)
        if header:
            continue  # a CSV header such as "image,mask"
        image, mask = (_resolve(root, f, list_file, number) for f in fields)
        samples.append(MaskSample(image, mask))
    return samples


def _resolve(root: Path, text: str, list_file: Path, number: int) -> Path:
    p = Path(text).expanduser()
    if p.is_absolute() and p.is_file():
        return p
    parts = (PureWindowsPath(text) if "\\" in text else PurePosixPath(text)).parts
    if parts and (parts[0].endswith(("/", "\\")) or parts[0].endswith(":")):
        parts = parts[1:]  # drop the anchor: "/", "C:\\", "\\\\server\\share\\"
    for i in range(len(parts)):
        candidate = root.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    raise DataError(f"{list_file}:{number}: {text} not found, as written or under {root} with leading folders dropped")


def _pair_folders(image_dir: Path, mask_dir: Path) -> list[MaskSample]:
    if not mask_dir.is_dir():
        raise DataError(f"{mask_dir}: mask folder not found")
    by_key: dict[tuple[PurePosixPath, str], list[Path]] = {}
    for m in sorted(mask_dir.rglob("*")):
        if m.is_file() and is_image_file(m):
            rel = m.relative_to(mask_dir)
            by_key.setdefault((PurePosixPath(rel.parent.as_posix()), m.stem), []).append(m)
    image_files = [p for p in sorted(image_dir.rglob("*")) if p.is_file() and is_image_file(p)]
    if image_dir.resolve() == mask_dir.resolve():
        # One folder holds both: a file named like another file's mask (x_mask.png beside x.jpg) is not an image.
        stems = {(p.parent, p.stem) for p in image_files}
        image_files = [p for p in image_files
                       if not any(p.stem.endswith(s) and (p.parent, p.stem[: -len(s)]) in stems for s in MASK_SUFFIXES)]
    samples = []
    for img in image_files:
        rel_dir = PurePosixPath(img.relative_to(image_dir).parent.as_posix())
        for stem in (img.stem, *(img.stem + s for s in MASK_SUFFIXES)):
            found = [m for m in by_key.get((rel_dir, stem), []) if m != img]
            if len(found) > 1:
                raise DataError(f"{img}: several masks match ({', '.join(str(m) for m in found)})")
            if found:
                samples.append(MaskSample(img, found[0]))
                break
        else:
            raise DataError(f"{img}: no mask named {img.stem}.* or {img.stem}{{{','.join(MASK_SUFFIXES)}}}.* "
                            f"in {mask_dir / rel_dir}")
    return samples


def read_mask(path: Path, palette: list[tuple[int, int, int]] | None = None, ignore_index: int = 255) -> np.ndarray:
    """HxW int64 class ids (see the module docstring). Raises DataError naming the file."""
    path = Path(path)
    try:
        with open_image(path) as im:
            turn = orientation(im)
            im.load()
            im = upright(im, turn)
            mode = im.mode
            ids = mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;")
            ids = ids or (mode in ("P", "PA") and palette is None)  # a palette set: P masks are matched by colour
            arr = np.asarray(im) if ids else np.asarray(im.convert("RGB"), dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except DECODE_ERRORS as exc:
        text = str(exc).strip().splitlines()
        raise DataError(f"{path}: cannot decode mask ({text[0] if text else type(exc).__name__})") from None
    if not ids:
        if palette is not None:
            return _match_palette(arr, palette, ignore_index)
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            return arr[..., 0].copy()
        raise DataError(f"{path}: is a colour image: set data.palette to map colours to class ids")
    if arr.ndim == 3:  # LA, PA: the first channel holds the ids, the second is alpha
        arr = arr[..., 0]
    if arr.dtype.kind == "f" and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
        raise DataError(f"{path}: mask of mode {mode} holds non-integer values")
    return arr.astype(np.int64)


def _match_palette(rgb: np.ndarray, palette: list[tuple[int, int, int]], ignore_index: int) -> np.ndarray:
    try:
        colours = np.array(palette, dtype=np.int64)
    except (TypeError, ValueError):
        colours = np.zeros(0, dtype=np.int64)
    if colours.ndim != 2 or colours.shape[1] != 3 or ((colours < 0) | (colours > 255)).any():
        raise DataError(f"data.palette: expected a list of [r, g, b] triplets of 0..255, got {palette!r}")
    keys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    listed = keys.tolist()
    for class_id, key in enumerate(listed):
        if listed.index(key) != class_id:
            raise DataError(f"data.palette: colour {colours[class_id].tolist()} is listed twice "
                            f"(class ids {listed.index(key)} and {class_id})")
    order = np.argsort(keys)
    sorted_keys = keys[order]
    pix = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(sorted_keys, pix), 0, len(keys) - 1)
    return np.where(sorted_keys[pos] == pix, order[pos], ignore_index).astype(np.int64)


def check_pairs(samples: list[MaskSample], num_classes: int, ignore_index: int,
                palette: list[tuple[int, int, int]] | None = None,
                on_bad_image: str = "error") -> tuple[list[MaskSample], list[str]]:
    """Every image decodes in full, every mask decodes to the image's size with values in [0, num_classes)
    or == ignore_index. on_bad_image "error" raises DataError on the first problem, in one line, naming the
    key that skips; "skip" returns the pairs that pass and one line per pair left out."""
    kept, left_out = [], []
    for s in samples:
        problem = _pair_problem(s, num_classes, ignore_index, palette)
        if problem is None:
            kept.append(s)
        elif on_bad_image == "skip":
            left_out.append(problem)
        else:
            raise DataError(f"{problem}; {SKIP_HINT}")
    return kept, left_out


def _pair_problem(s: MaskSample, num_classes: int, ignore_index: int,
                  palette: list[tuple[int, int, int]] | None) -> str | None:
    try:
        w, h = verify_image(s.image)
        mask = read_mask(s.mask, palette, ignore_index)
    except DataError as exc:
        return str(exc)
    mh, mw = mask.shape
    if (mw, mh) != (w, h):
        return f"{s.image} is {w}x{h} but its mask {s.mask} is {mw}x{mh}"
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if len(bad):
        shown = ", ".join(str(v) for v in bad[:5].tolist()) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return f"{s.mask}: values {shown} are not class ids 0..{num_classes - 1} nor ignore_index {ignore_index}"
    return None


def instance_mask(inst: Instance, height: int, width: int, where: str) -> np.ndarray:
    """HxW bool mask of one instance from its COCO polygons or RLE (its box when it has no usable shape)."""
    seg = inst.segmentation
    if isinstance(seg, dict):
        if list(seg.get("size", [])) != [height, width]:
            raise DataError(f"{where}: RLE size {seg.get('size')} differs from the image size [{height}, {width}]")
    else:
        seg = [[float(v) for v in p] for p in (seg or []) if len(p) >= 6 and len(p) % 2 == 0]
        if not seg:
            x, y, bw, bh = (float(v) for v in inst.bbox)
            seg = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    try:
        return rle.decode(seg, height, width)
    except rle.RLEError as exc:
        raise DataError(f"{where}: {exc}") from None
    except Exception as exc:  # pycocotools raises bare exceptions for malformed RLE
        raise DataError(f"{where}: cannot decode segmentation ({exc})") from None


def coco_semantic_mask(aset: AnnotationSet, image_id: int, label_of: dict[int, int],
                       ignore_index: int = 255) -> np.ndarray:
    """HxW int64 map of one image's instances: background 0, category c -> label_of[c], crowd regions ->
    ignore_index. Crowd regions are painted first, then instances from the largest to the smallest, so small
    objects stay visible where instances overlap and annotated instances win over crowd regions. An instance
    without a (usable) segmentation is painted as its box."""
    record = next((r for r in aset.images if r.id == image_id), None)
    if record is None:
        raise DataError(f"{aset.report.source}: no image with id {image_id}")
    h, w = record.height, record.width
    painted = []
    for inst in (i for i in aset.instances if i.image_id == image_id):
        where = f"{aset.report.source}: annotation {inst.id} ({record.file_name})"
        if not inst.iscrowd and inst.category_id not in label_of:
            raise DataError(f"{where}: category id {inst.category_id} has no label")
        binary = instance_mask(inst, h, w, where)
        label = ignore_index if inst.iscrowd else label_of[inst.category_id]
        painted.append((not inst.iscrowd, -int(binary.sum()), binary, label))
    out = np.zeros((h, w), dtype=np.int64)
    for _, _, binary, label in sorted(painted, key=lambda t: (t[0], t[1])):
        out[binary] = label
    return out
