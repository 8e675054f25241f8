"""Scores as the original computes them (REFERENCE.md section 7)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

IOU_EPSILON = 1e-7


def binary_iou(probabilities: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-image IoU of the rounded foreground channel: float32 [N].

    probabilities, labels: float32 [N,S,S,2] (channel 1 = foreground). Both are rounded to
    0/1 and scored ``(|P and L| + 1e-7) / (|P or L| + 1e-7)``, so an empty prediction of an
    empty mask scores 1.
    """
    pred = tf.round(probabilities[..., 1]) > 0.5
    true = tf.round(labels[..., 1]) > 0.5
    inter = tf.reduce_sum(tf.cast(pred & true, tf.float32), axis=[1, 2])
    union = tf.reduce_sum(tf.cast(pred | true, tf.float32), axis=[1, 2])
    return (inter + IOU_EPSILON) / (union + IOU_EPSILON)


def mean_and_ci95(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width ``1.96 * std / sqrt(n)`` of a 95 % confidence interval.

    NaNs are ignored, as the original's ``np.nanmean`` did.
    """
    values = np.asarray(scores, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))
