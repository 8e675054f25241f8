"""Segmentation loss and regularisers of spec/REFERENCE.md section 4, as pure functions.

Everything here maps tensors to a scalar float32 tensor with no Keras state, so the
compiled inner loop can call it on the weight tensors it is differentiating.
"""

from __future__ import annotations

from typing import List, Sequence

import keras
import tensorflow as tf

from metaseg.errors import ConfigError

REGULARIZATION_WEIGHT = 0.0005  # the original's weight for l2, l1 and darc1
IOU_EPSILON = 1e-7
CROSS_ENTROPY_NAMES = ("cross_entropy", "bce", "softmax_cross_entropy")


def uses_dice(loss_name: str) -> bool:
    """Validate ``--loss_name``; True when it adds the -log(dice) term."""
    if "dice" in loss_name:
        return True
    if loss_name in CROSS_ENTROPY_NAMES:
        return False
    raise ConfigError(f"unknown --loss_name {loss_name!r}: use cross_entropy, or any name "
                      "containing 'dice' (e.g. bce_dice) to add -log(dice)")


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Softmax cross-entropy averaged over pixels and batch.

    logits float32 [N, H, W, C]; labels float32 [N, H, W, C], one-hot or soft, rows
    summing to 1. Label smoothing as TF1's ``softmax_cross_entropy``: labels become
    ``labels * (1 - s) + s / C``.
    """
    num_classes = tf.cast(tf.shape(labels)[-1], labels.dtype)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / num_classes
    per_pixel = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(per_pixel)


def soft_iou(probabilities, labels):
    """Mean over the batch of each image's soft IoU of the foreground channel (1).

    probabilities, labels float32 [N, H, W, 2] in [0, 1]. Per image:
    (sum(p*y) + 1e-7) / (sum(p) + sum(y) - sum(p*y) + 1e-7). Returns a scalar in (0, 1].
    """
    p = probabilities[..., 1]
    y = labels[..., 1]
    intersection = tf.reduce_sum(p * y, axis=[1, 2])
    union = tf.reduce_sum(p, axis=[1, 2]) + tf.reduce_sum(y, axis=[1, 2]) - intersection
    return tf.reduce_mean((intersection + IOU_EPSILON) / (union + IOU_EPSILON))


def segmentation_loss(logits, labels, *, loss_name: str = "cross_entropy",
                      label_smoothing: float = 0.0):
    """The training loss: cross-entropy, plus -log(dice) for any name containing "dice".

    logits float32 [N, S, S, 2] (pre-softmax, input resolution); labels float32
    [N, S, S, 2], channel 1 foreground. dice = 2 IoU / (IoU + 1) with IoU the batch mean
    of per-image soft IoUs (the original took the dice of the mean IoU, on unsmoothed
    labels). Returns a scalar float32 tensor.
    """
    dice = uses_dice(loss_name)
    loss = cross_entropy(logits, labels, label_smoothing)
    if dice:
        iou = soft_iou(tf.nn.softmax(logits), labels)
        loss -= tf.math.log(2.0 * iou / (iou + 1.0))
    return loss


def _layers_recursive(layer):
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from _layers_recursive(sub)


def regularized_mask(model) -> List[bool]:
    """Aligned with ``model.trainable_variables``: True where l2/l1 apply.

    The original penalised every trainable variable whose name lacked
    "batch_normalization": all kernels and biases, but not batch-norm gamma and beta
    (REFERENCE.md sections 4 and 11).
    """
    norm_ids = {id(v) for layer in _layers_recursive(model)
                if isinstance(layer, keras.layers.BatchNormalization)
                for v in layer.trainable_variables}
    return [id(v) not in norm_ids for v in model.trainable_variables]


def regularization_loss(trainable: Sequence, mask: Sequence[bool], logits, *,
                        l2: bool = False, l1: bool = False, darc1: bool = False):
    """Sum of the enabled penalties, each weighted 0.0005. Returns a scalar float32.

    trainable: weight tensors aligned with ``mask`` (from ``regularized_mask``).
    l2: sum(||w||^2 / 2) over masked weights; l1: sum(|w|) over them.
    darc1: max over positions and channels of the batch-summed |logits|
    (logits float32 [N, H, W, C]).
    """
    total = tf.constant(0.0, tf.float32)
    selected = [w for w, keep in zip(trainable, mask) if keep]
    if l2:
        total += REGULARIZATION_WEIGHT * tf.add_n([tf.nn.l2_loss(w) for w in selected])
    if l1:
        total += REGULARIZATION_WEIGHT * tf.add_n(
            [tf.reduce_sum(tf.abs(w)) for w in selected])
    if darc1:
        total += REGULARIZATION_WEIGHT * tf.reduce_max(
            tf.reduce_sum(tf.abs(logits), axis=0))
    return total
