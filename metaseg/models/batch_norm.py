"""Batch norm computed by TensorFlow's fused kernel: Keras's layer, same function, faster.

Keras 3's TensorFlow backend computes batch norm as separate ops (moments, then the
normalisation), which cost 16 % of a 224-px inner step; ``FusedBatchNormV3`` does the
statistics, the normalisation and, in the backward pass, the whole gradient in one kernel
each (batch-norm time per 224-px step 0.94 -> 0.27 s in issue 16's profile; the inner
step with and without it: ``bench/bench_fused_bn.py``).

``FusedBatchNormalization`` is ``keras.layers.BatchNormalization`` with another ``call``:
same variables (gamma, beta, moving_mean, moving_variance, in that order), names, config
and saved form, and the same function. The fused op's batch variance carries the
n / (n - 1) correction, so the moving variance is updated with it converted back to the
biased variance Keras uses (``unbiased_moving_variance = False``); the decoder's subclass
keeps the unbiased one, as the original's fused TF1 layers did. Moving statistics are
written with ``Variable.assign``, which ``model.stateless_call`` captures, so the inner
loop's functional state works unchanged.

Only the NHWC float32 case is fused (the network's): any other axis, rank, dtype policy,
a mask, ``synchronized`` or ``renorm``, a layer without gamma or beta, or another backend
runs the parent's computation. ``set_fused(model, False)`` switches a built model's layers
back to the unfused computation (benchmarks and tests compare the two).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def fused_batch_statistics(x, gamma, beta, epsilon: float):
    """Training-mode fused batch norm of x float32 [N, H, W, C].

    Returns (outputs [N, H, W, C] normalised with the batch mean and biased variance,
    batch mean [C], batch variance [C] with the n / (n - 1) correction, n = N * H * W;
    0 when n = 1).
    """
    empty = tf.zeros([0], x.dtype)  # no running statistics: the op only reads the batch
    outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=epsilon,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    return outputs, mean, variance


def biased_variance(unbiased, x):
    """The fused op's corrected variance [C] of x [N, H, W, C] back to the biased one."""
    n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), unbiased.dtype)
    return unbiased * ((n - 1.0) / tf.maximum(n, 1.0))


@keras.saving.register_keras_serializable(package="metaseg")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by the fused kernel (NHWC float32).

    Inputs and outputs as the parent's. ``training=True`` (and ``trainable``): batch
    statistics, moving averages updated as ``moving * momentum + batch * (1 - momentum)``
    with the biased batch variance; otherwise the moving statistics.
    """

    unbiased_moving_variance = False  # the parent's rule: the biased batch variance

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = True  # not config: set_fused() flips it for comparisons

    def call(self, inputs, training=None, mask=None):
        training = bool(training) and self.trainable
        if not (self.fused and self._fusable(inputs, mask)):
            return self._unfused_call(inputs, training, mask)
        if not (training or self._batch_statistics_at_inference()):
            return self._fused_inference(inputs)
        outputs, mean, variance = fused_batch_statistics(
            inputs, self.gamma, self.beta, self.epsilon)
        if training:
            if not self.unbiased_moving_variance:
                variance = biased_variance(variance, inputs)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return outputs

    def _fusable(self, inputs, mask) -> bool:
        axis = self.axis if self.axis >= 0 else self.axis + len(inputs.shape)
        return (keras.backend.backend() == "tensorflow" and mask is None
                and len(inputs.shape) == 4 and axis == 3
                and inputs.dtype == tf.float32 and self.compute_dtype == "float32"
                and self.scale and self.center and not self.synchronized and not self.renorm)

    def _fused_inference(self, inputs):
        # The fused kernel with is_training=False: 1.06-1.54x faster than the parent's
        # tf.nn.batch_normalization on the network's shapes, equal to ~2e-6.
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=self.gamma, offset=self.beta, mean=self.moving_mean,
            variance=self.moving_variance, epsilon=self.epsilon, exponential_avg_factor=1.0,
            data_format="NHWC", is_training=False)
        return outputs

    def _batch_statistics_at_inference(self) -> bool:
        return False

    def _unfused_call(self, inputs, training, mask):
        return super().call(inputs, training=training, mask=mask)


def set_fused(model, fused: bool) -> int:
    """Set every FusedBatchNormalization of ``model`` (recursively) to fused or not.

    Call before tracing. Returns how many layers were set.
    """
    count = 0
    for layer in model._flatten_layers(include_self=True):  # pylint: disable=protected-access
        if isinstance(layer, FusedBatchNormalization):
            layer.fused = bool(fused)
            count += 1
    return count
