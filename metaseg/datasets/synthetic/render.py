"""Rendering the examples of one class: distractor choice and per-image random streams."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from metaseg.datasets.synthetic import catalog as cat
from metaseg.datasets.synthetic.scene import Scene, render_scene

MAX_DISTRACTORS = 3
RELATED_PROBABILITY = 0.5  # share of distractors that share a family with the target
_IMAGE_STREAM = 2


def class_names(num_classes: int, seed: int = 0) -> List[str]:
    """Every class name of the benchmark, sorted; the index into this list is the class index."""
    return cat.catalogue(num_classes, seed).names


def test_class_names(num_classes: int, seed: int = 0) -> List[str]:
    """The held-out classes (sorted): combinations never seen in training."""
    return sorted(cat.catalogue(num_classes, seed).test_names)


def train_class_names(num_classes: int, seed: int = 0) -> List[str]:
    """The training classes (sorted): every class not in ``test_class_names``."""
    test = cat.catalogue(num_classes, seed).test_names
    return [n for n in class_names(num_classes, seed) if n not in test]


def _distractor_pools(catalogue: cat.Catalogue, target: cat.ClassSpec):
    """Training classes other than the target, and the subset sharing one of its families.

    Distractors come from training classes only, so a test combination never appears in any
    training image, not even as background. Related distractors (same shape, other texture,
    or the reverse) make the target identifiable only by the combination, which is what the
    few examples of a task have to teach.
    """
    pool = [c for c in catalogue.classes if c != target and not catalogue.is_test(c)]
    related = [c for c in pool if c.shape == target.shape or c.appearance == target.appearance]
    return pool, related


def _pick_distractors(pool, related, rng: np.random.Generator) -> List[cat.ClassSpec]:
    count = int(rng.integers(1, MAX_DISTRACTORS + 1))
    picked = []
    for _ in range(count):
        source = related if related and rng.random() < RELATED_PROBABILITY else pool
        picked.append(source[int(rng.integers(len(source)))])
    return picked


def render_examples(class_index: int, num_classes: int, examples: int, image_size: int,
                    seed: int, distractors: bool = True) -> List[Scene]:
    """The ``examples`` scenes of one class (``distractors=False`` only for tests/figures).

    Each class has its own random stream keyed by the seed and the class's families and
    variant, so the result does not depend on which other classes are rendered, in which
    order or by how many workers.
    """
    catalogue = cat.catalogue(num_classes, seed)
    spec = catalogue.classes[class_index]
    target = cat.identity(spec, seed)
    pool, related = _distractor_pools(catalogue, spec)
    rng = np.random.default_rng([seed, _IMAGE_STREAM, spec.shape, spec.appearance, spec.variant])
    scenes = []
    for _ in range(examples):
        others = _pick_distractors(pool, related, rng) if distractors and pool else []
        scenes.append(render_scene(target, [cat.identity(o, seed) for o in others],
                                   image_size, rng))
    return scenes


def render_class(class_index: int, num_classes: int, examples: int, image_size: int,
                 seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """All examples of one class.

    Args:
        class_index: index into ``class_names(num_classes, seed)``.
    Returns:
        images: uint8 [examples, image_size, image_size, 3], RGB in [0, 255];
        masks: uint8 [examples, image_size, image_size], 255 on the visible target, else 0.
    """
    scenes = render_examples(class_index, num_classes, examples, image_size, seed)
    return (np.stack([s.image for s in scenes]), np.stack([s.mask for s in scenes]))
