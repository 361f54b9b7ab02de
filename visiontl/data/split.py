"""Reproducible train / val / test splits of an annotated set, stratified by class presence.

An image carries several classes, so plain stratification does not apply; this is iterative
stratification (Sechidis, Tsoumakas and Vlahavas, 2011) by image: images holding the rarest classes are
placed first, each into the split that still lacks most of its rarest class (then the split furthest from
its size), ties broken by a seeded random order; a split that has its share of images takes no more. A class
reaches a split when its share there comes to about one image or more (at 0.2, three images of a class put one
in val, two put none); images without instances are spread by size alone. The same set, fractions and
seed always give the same split.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any, TypeVar

from visiontl.data.annotations import AnnotationSet
from visiontl.errors import DataError

K = TypeVar("K")


def split_images(aset: AnnotationSet, fractions: dict[str, float], seed: int = 0) -> dict[str, list[int]]:
    """Image ids per split name (in the set's image order). `fractions` must add up to 1."""
    classes_of: dict[int, set[int]] = defaultdict(set)
    for inst in aset.instances:
        classes_of[inst.image_id].add(inst.category_id)
    return stratify([img.id for img in aset.images], classes_of, fractions, seed)


def stratify(keys: list[K], classes_of: Mapping[K, set[Any]], fractions: dict[str, float],
             seed: int = 0) -> dict[str, list[K]]:
    """`keys` (images) per split name, in the order of `keys`; `classes_of` says which classes each key holds
    (keys it lacks hold none). `fractions` must add up to 1."""
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise DataError(f"split fractions must be >= 0 and add up to 1, got {fractions}")
    empty: set[Any] = set()
    images_with = Counter(c for k in keys for c in classes_of.get(k, empty))
    names = list(fractions)
    n = len(keys)
    want_images = {s: fractions[s] * n for s in names}
    want_class = {s: {c: fractions[s] * k for c, k in images_with.items()} for s in names}

    rng = random.Random(seed)
    order = list(keys)
    rng.shuffle(order)
    # rarest class first; images without instances last
    order.sort(key=lambda i: min((images_with[c] for c in classes_of.get(i, empty)), default=n + 1))

    chosen: dict[str, list[K]] = {s: [] for s in names}
    for key in order:
        cats = classes_of.get(key, empty)
        rarest = min(cats, key=lambda c: (images_with[c], c)) if cats else None
        tie = {s: rng.random() for s in names}
        # a split that has its share of images takes no more, so the sizes come out as asked
        open_splits = [s for s in names if want_images[s] > 0.5] or names
        best = max(open_splits, key=lambda s: (want_class[s][rarest] if rarest is not None else 0.0, want_images[s], tie[s]))
        chosen[best].append(key)
        want_images[best] -= 1
        for c in cats:
            want_class[best][c] -= 1
    position = {k: i for i, k in enumerate(keys)}
    return {s: sorted(ids, key=position.__getitem__) for s, ids in chosen.items()}


def subset(aset: AnnotationSet, image_ids: list[int]) -> AnnotationSet:
    """The set restricted to `image_ids` (every category kept, so ids stay comparable across splits)."""
    from visiontl.data.annotations import ReadReport

    keep = set(image_ids)
    return AnnotationSet(list(aset.categories), [im for im in aset.images if im.id in keep],
                         [a for a in aset.instances if a.image_id in keep], aset.image_root,
                         ReadReport(aset.report.source, inputs=list(aset.report.inputs)), extra=dict(aset.extra))


def class_presence(aset: AnnotationSet, image_ids: list[int]) -> dict[int, int]:
    """Images per category among `image_ids` (what the stratification balances)."""
    keep = set(image_ids)
    seen = {(a.image_id, a.category_id) for a in aset.instances if a.image_id in keep}
    counts = Counter(c for _, c in seen)
    return {c.id: counts.get(c.id, 0) for c in aset.categories}
