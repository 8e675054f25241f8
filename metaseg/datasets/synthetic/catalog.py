"""The class catalogue of the synthetic benchmark and its train/test split.

A class is a ``(shape family, appearance family, variant)`` triple named
``<shape>__<appearance>__c<variant>`` (e.g. ``star5__stripes__c02``). Its identity (shape
parameters such as star depth or petal count, texture parameters such as stripe frequency
and angle, and a two-colour palette) is drawn from a random stream keyed by the seed and the
triple alone, so any class can be regenerated on its own.

Which combinations exist: the families are ranked in a seeded order and combinations are
taken as a growing rectangle of that ranking (``max(shape_rank / S, appearance_rank / A)``),
so even a small benchmark reuses each family in several combinations. With the defaults
(25 shape x 10 appearance families = 250 combinations) 1000 classes use every combination
with 4 variants (palettes and parameters) each.

The split: whole combinations are held out, about ``TEST_FRACTION`` of the classes, chosen
greedily (balanced over families, ties broken by the seed) under the constraint that every
shape family and every appearance family of a test class still occurs in some training
class. A test class is therefore a new combination of familiar parts, and all variants of a
combination fall on the same side of the split.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Tuple

import numpy as np

from metaseg.datasets.synthetic import appearance, shapes
from metaseg.errors import ConfigError

TEST_FRACTION = 0.24  # FSS-1000 holds out 240 of 1000 classes
MIN_CLASSES = 5  # the smallest catalogue with a test combination whose parts are trained
_CATALOGUE_STREAM, _IDENTITY_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """One class: indices into SHAPE_FAMILIES / APPEARANCE_FAMILIES and a variant number."""

    shape: int
    appearance: int
    variant: int
    name: str


@dataclasses.dataclass(frozen=True)
class Identity:
    """What makes a class an object kind; fixed for all its images.

    shape_params, texture_params: float64 [8] in [0, 1). palette: HSV float64 [2, 3] in
    [0, 1]. aspect: base width/height ratio in [0.6, 1.0]. area: shape area in object units.
    """

    spec: ClassSpec
    shape_params: np.ndarray
    texture_params: np.ndarray
    palette: np.ndarray
    aspect: float
    area: float
    reach: float

    @property
    def inside(self):
        return shapes.SHAPES[shapes.SHAPE_FAMILIES[self.spec.shape]]

    @property
    def texture(self):
        return appearance.TEXTURES[appearance.APPEARANCE_FAMILIES[self.spec.appearance]]


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """All classes in name order, and the names held out for testing."""

    classes: Tuple[ClassSpec, ...]
    test_names: frozenset

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.classes]

    def is_test(self, spec: ClassSpec) -> bool:
        return spec.name in self.test_names


def _combinations(num_classes: int, rng: np.random.Generator) -> List[Tuple[int, int]]:
    """The first combinations of a growing rectangle over seeded family rankings."""
    num_s, num_a = len(shapes.SHAPE_FAMILIES), len(appearance.APPEARANCE_FAMILIES)
    shape_order, app_order = rng.permutation(num_s), rng.permutation(num_a)
    ranked = sorted(((p, q) for p in range(num_s) for q in range(num_a)),
                    key=lambda pq: (max(pq[0] / num_s, pq[1] / num_a), pq[0], pq[1]))
    chosen = ranked[:min(num_classes, len(ranked))]
    return [(int(shape_order[p]), int(app_order[q])) for p, q in chosen]


def _hold_out(combos: List[Tuple[int, int]], sizes: Dict[Tuple[int, int], int],
              target: int, rng: np.random.Generator) -> set:
    """Greedily pick test combinations whose shape and appearance stay in training."""
    train_shape = np.bincount([s for s, _ in combos], minlength=len(shapes.SHAPE_FAMILIES))
    train_app = np.bincount([a for _, a in combos],
                            minlength=len(appearance.APPEARANCE_FAMILIES))
    test_shape, test_app = np.zeros_like(train_shape), np.zeros_like(train_app)
    candidates = [combos[i] for i in rng.permutation(len(combos))]
    held, count = set(), 0
    while count < target:
        allowed = [c for c in candidates if train_shape[c[0]] > 1 and train_app[c[1]] > 1]
        if not allowed:
            break
        # Spread the test set evenly over families; the seeded order breaks ties.
        s, a = min(allowed, key=lambda c: test_shape[c[0]] + test_app[c[1]])
        candidates.remove((s, a))
        held.add((s, a))
        count += sizes[(s, a)]
        train_shape[s] -= 1
        train_app[a] -= 1
        test_shape[s] += 1
        test_app[a] += 1
    return held


def _too_few(num_classes: int) -> ConfigError:
    return ConfigError(f"--num_classes must be at least {MIN_CLASSES} so that test classes "
                       f"can be new combinations of trained families, got {num_classes}")


@functools.lru_cache(maxsize=8)
def catalogue(num_classes: int, seed: int) -> Catalogue:
    """The classes of a benchmark of ``num_classes`` classes, and its test split."""
    if num_classes < MIN_CLASSES:
        raise _too_few(num_classes)
    rng = np.random.default_rng([seed, _CATALOGUE_STREAM])
    combos = _combinations(num_classes, rng)
    variants = [(combos[i % len(combos)], i // len(combos)) for i in range(num_classes)]
    width = max(2, len(str(variants[-1][1])))
    specs = [ClassSpec(s, a, k, f"{shapes.SHAPE_FAMILIES[s]}__"
                                f"{appearance.APPEARANCE_FAMILIES[a]}__c{k:0{width}d}")
             for (s, a), k in variants]
    sizes: Dict[Tuple[int, int], int] = {}
    for (combo, _) in variants:
        sizes[combo] = sizes.get(combo, 0) + 1
    held = _hold_out(combos, sizes, max(1, round(TEST_FRACTION * num_classes)), rng)
    if not held:  # cannot happen from MIN_CLASSES on; kept so a change cannot go unnoticed
        raise _too_few(num_classes)
    test = frozenset(c.name for c in specs if (c.shape, c.appearance) in held)
    return Catalogue(tuple(sorted(specs, key=lambda c: c.name)), test)


@functools.lru_cache(maxsize=4096)
def identity(spec: ClassSpec, seed: int) -> Identity:
    """A class's fixed identity, from a stream keyed by (seed, shape, appearance, variant)."""
    rng = np.random.default_rng([seed, _IDENTITY_STREAM, spec.shape, spec.appearance,
                                 spec.variant])
    shape_params = rng.random(shapes.NUM_PARAMS)
    area, reach = shapes.footprint(shapes.SHAPE_FAMILIES[spec.shape], shape_params)
    return Identity(spec=spec, shape_params=shape_params,
                    texture_params=rng.random(8), palette=appearance.class_palette(rng),
                    aspect=float(rng.uniform(0.6, 1.0)), area=area, reach=reach)
