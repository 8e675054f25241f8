"""Pure weight-space arithmetic over lists of tensors (no Keras objects inside).

Reptile is "interpolate the old weights toward the mean of the adapted weights"; FOMAML is
"old weights plus the scaled mean of each task's last-step change". Both are written with
these few functions, in the manner of openai/supervised-reptile's ``variables.py``.
A "weight list" is a Python list of tensors (or arrays) with matching shapes.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def add(a: Sequence[tf.Tensor], b: Sequence[tf.Tensor]) -> list:
    """Element-wise ``a + b``."""
    return [x + y for x, y in zip(a, b, strict=True)]


def subtract(a: Sequence[tf.Tensor], b: Sequence[tf.Tensor]) -> list:
    """Element-wise ``a - b``."""
    return [x - y for x, y in zip(a, b, strict=True)]


def scale(a: Sequence[tf.Tensor], factor) -> list:
    """Every tensor of ``a`` times the scalar ``factor``."""
    return [x * tf.cast(factor, x.dtype) for x in a]


def total(weight_lists: Sequence[Sequence[tf.Tensor]]) -> list:
    """The element-wise sum of several weight lists, added in order (``tf.add_n``: for float
    tensors, ``((w_0 + w_1) + w_2) + ...``, as a loop of ``add`` would)."""
    if not weight_lists:
        raise ValueError("total() needs at least one weight list")
    return [tf.add_n(list(group)) for group in zip(*weight_lists, strict=True)]


def mean(weight_lists: Sequence[Sequence[tf.Tensor]]) -> list:
    """The element-wise mean of several weight lists (e.g. the adapted weights of a meta-batch)."""
    return [s / len(weight_lists) for s in total(weight_lists)]


def interpolate(old: Sequence[tf.Tensor], new: Sequence[tf.Tensor], epsilon) -> list:
    """``old + epsilon * (new - old)``: a step of size ``epsilon`` from ``old`` toward ``new``."""
    return add(old, scale(subtract(new, old), epsilon))


def all_finite(a: Sequence[tf.Tensor]) -> tf.Tensor:
    """Scalar bool: every element of every floating tensor in ``a`` is finite."""
    tensors = [tf.convert_to_tensor(x) for x in a]
    checks = [tf.reduce_all(tf.math.is_finite(x)) for x in tensors if x.dtype.is_floating]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
