"""data.val as a fraction: the val split of a dataset that has none, taken from its train split.

The split is seeded (train.seed) and stratified by class presence (`visiontl.data.split.stratify`), so the
same data and seed always give the same val images. It is chosen once, when a run starts: the run directory
(`data.json`) and every checkpoint (`val_files`) keep the list of val images, and `--resume`, `evaluate`
and `export`'s parity check take that list instead of choosing again (files added to the dataset since then
train, they never move into val). Under torchrun every rank computes the same split from the same files and
seed; a resumed run reads it back from the checkpoint.

Images are named by their path relative to data.root, which reads the same on another machine.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from visiontl.errors import DataError
from visiontl.text import printable

DATA_FILE = "data.json"  # in the run directory: the val list and the images left out before training


@dataclass
class Holdout:
    """Which of the train split's images are val: `is_val` per image, in the train split's order."""

    fraction: float
    seed: int
    files: list[str]  # the val images, relative to data.root, in the train split's order
    is_val: list[bool]
    recorded: bool  # True: the list came from a checkpoint (resume, evaluate)

    def describe(self) -> str:
        kept = sum(not v for v in self.is_val)
        how = "as recorded in the checkpoint" if self.recorded else f"seed {self.seed}, stratified by class"
        return (f"val is {self.fraction:g} of the train split: {len(self.files)} of {len(self.is_val)} images "
                f"({how}), {kept} left to train")


def choose(names: Sequence[str], classes_of: Sequence[set[Hashable]], fraction: float, seed: int,
           recorded: list[str] | None, source: str) -> Holdout:
    """Split the train images `names` (paths relative to data.root; `classes_of[i]` the classes image i
    holds) into train and val. With `recorded` (a run's own list), that list is the val split, and every
    file in it must still be in the train split."""
    if recorded is not None:
        present = set(names)
        missing = [f for f in recorded if f not in present]
        if missing:
            raise DataError(f"{source}: the run's val split (data.val={fraction:g}) holds {printable(missing[0])}, "
                            f"which the train split no longer has ({len(missing)} such file(s)); evaluate on a named "
                            "split instead (data.val=<split>)")
        chosen = set(recorded)
        return Holdout(fraction, seed, list(recorded), [n in chosen for n in names], recorded=True)
    n = len(names)
    if n < 2:
        raise DataError(f"{source}: data.val={fraction:g} needs at least 2 train images to take val from, found {n}")
    # at least one image on each side, whatever the fraction
    share = min(max(fraction, 1.0 / n), (n - 1.0) / n)
    parts = _stratify(names, classes_of, share, seed)
    val = set(parts["val"])
    if not val or len(val) == n:
        count = min(max(1, math.floor(share * n + 0.5)), n - 1)  # the stratifier's tie-breaking left a side empty
        val = set(list(names)[-count:])
    is_val = [name in val for name in names]
    return Holdout(fraction, seed, [name for name in names if name in val], is_val, recorded=False)


def _stratify(names: Sequence[str], classes_of: Sequence[set[Hashable]], share: float,
              seed: int) -> dict[str, list[str]]:
    from visiontl.data.split import stratify

    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"the train split lists {printable(name)} twice; data.val as a fraction names images by file")
        seen.add(name)
    return stratify(list(names), dict(zip(names, classes_of)), {"train": 1.0 - share, "val": share}, seed)


def relative_name(path: str | Path, root: Path) -> str:
    """How the val list names an image: its path relative to data.root (as given when outside it)."""
    from visiontl.data import relative_file

    return relative_file(path, root)
