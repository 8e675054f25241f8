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


def add_n_groups(count: int) -> list:
    """How ``tf.add_n``'s CPU kernel adds ``count`` inputs: the first group (2-9 inputs) left to
    right, then each further group of 8 summed left to right and added to the total."""
    first = count if count < 2 else {0: 8, 1: 9}.get(count % 8, count % 8)
    return [list(range(first))] + [list(range(i, i + 8)) for i in range(first, count, 8)]


def total_in_order(stacked: Sequence[tf.Tensor], orders: Sequence[Sequence[int]]) -> list:
    """Per position j: the sum of the slices of ``stacked[j]`` (leading axis: one slice per
    task), bit for bit what ``tf.add_n`` gives for those slices in the order ``orders[j]``
    (a permutation of the slice indices; see ``add_n_groups``). Added inside
    ``tf.while_loop``s, so TensorFlow's graph optimiser cannot regroup the additions (it
    rewrites a chain of adds as one ``AddN`` with its inputs sorted by name)."""
    count = len(orders[0])
    groups = add_n_groups(count)
    width = max(len(g) for g in groups)
    # [positions, groups, width] slice indices; -1: nothing (adds -0.0, which is exact).
    table = tf.constant([[[order[i] for i in g] + [-1] * (width - len(g)) for g in groups]
                         for order in orders], tf.int32)

    def slice_of(s, index):
        return tf.where(index >= 0, tf.gather(s, tf.maximum(index, 0)),
                        tf.constant(-0.0, s.dtype))

    def group_body(g, totals):
        def member_body(k, sums):
            return k + 1, [total + slice_of(s, table[j, g, k])
                           for j, (total, s) in enumerate(zip(sums, stacked, strict=True))]

        _, sums = tf.while_loop(lambda k, _: k < width, member_body,
                                (tf.constant(0), _negative_zeros(stacked)))
        return g + 1, [total + group for total, group in zip(totals, sums, strict=True)]

    _, totals = tf.while_loop(lambda g, _: g < len(groups), group_body,
                              (tf.constant(0), _negative_zeros(stacked)))
    return list(totals)


def _negative_zeros(stacked) -> list:
    """-0.0 of one slice's shape: -0.0 + x is x bit for bit (also for x = -0.0)."""
    return [tf.fill(s.shape[1:], tf.constant(-0.0, s.dtype)) for s in stacked]


def interpolate(old: Sequence[tf.Tensor], new: Sequence[tf.Tensor], epsilon) -> list:
    """``old + epsilon * (new - old)``: a step of size ``epsilon`` from ``old`` toward ``new``."""
    return add(old, scale(subtract(new, old), epsilon))


def all_finite(a: Sequence[tf.Tensor]) -> tf.Tensor:
    """Scalar bool: every element of every floating tensor in ``a`` is finite."""
    tensors = [tf.convert_to_tensor(x) for x in a]
    checks = [tf.reduce_all(tf.math.is_finite(x)) for x in tensors if x.dtype.is_floating]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
