"""Small Keras layers EfficientLab needs beyond the stock ones.

Each reproduces one behaviour of the original TF1 graph (spec/EFFICIENTLAB.md):
ImageNet input normalisation, corner-aligned bilinear resizing, the RSD block's tiled
spatial mean, and the decoder's batch norm (unbiased moving variance, like TF1's fused op).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from metaseg.errors import ConfigError
from metaseg.models.batch_norm import FusedBatchNormalization

# ImageNet statistics in [0, 255] units, as the original subtracted and divided them.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
SIZE_MULTIPLE = 16  # the encoder's output stride


def check_image_size(height, width) -> None:
    """Raise ConfigError unless every known spatial size is a multiple of 16."""
    for size in (height, width):
        if size is not None and int(size) % SIZE_MULTIPLE != 0:
            error = ConfigError(
                f"image size {height}x{width} is not a multiple of {SIZE_MULTIPLE} "
                "(the encoder's output stride); resize images or choose another "
                "--image_size, e.g. 224 or 64")
            # Keras rewraps exceptions raised inside layer calls with a multi-line
            # argument dump unless this marker is set; keep the user's one clear line.
            error._keras_call_info_injected = True
            raise error


@keras.saving.register_keras_serializable(package="metaseg")
class ImageNetNormalization(keras.layers.Layer):
    """Images float32 [N, H, W, 3] in [0, 255] -> (x - mean) / std per channel.

    Subtract-then-divide in that order, exactly as the original did. H and W must be
    multiples of 16: checked here whenever the static shape is known, so a wrong size
    fails with one clear line instead of a shape error deep in the decoder.
    """

    def call(self, images):
        check_image_size(images.shape[1], images.shape[2])
        mean = ops.convert_to_tensor(MEAN_RGB, dtype=images.dtype)
        std = ops.convert_to_tensor(STDDEV_RGB, dtype=images.dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="metaseg")
class AlignedResize(keras.layers.Layer):
    """Bilinear resize with corner-aligned sampling (TF1 ``align_corners=True``).

    Called on ``[x, reference]``: x float32 [N, h, w, C] is resized to the spatial size of
    ``reference`` [N, H, W, *] divided by ``divisor`` (integer division, as the original's
    ``tf.shape(images)[1:3] // 4``). The target size is read at run time, so one model
    serves every input size. ``keras.ops.image.resize`` uses half-pixel centres and would
    differ from the original by up to 3.0 on logits.
    """

    def __init__(self, divisor: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.divisor = int(divisor)

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3] // self.divisor
        return tf.raw_ops.ResizeBilinear(
            images=x, size=size, align_corners=True, half_pixel_centers=False)

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        spatial = [None if s is None else s // self.divisor for s in ref_shape[1:3]]
        return (x_shape[0], *spatial, x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "divisor": self.divisor}


@keras.saving.register_keras_serializable(package="metaseg")
class SpatialMeanTile(keras.layers.Layer):
    """x [N, H, W, C] -> its spatial mean per channel, broadcast back to [N, H, W, C]."""

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        return ops.broadcast_to(mean, ops.shape(x))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="metaseg")
class DecoderBatchNormalization(FusedBatchNormalization):
    """Batch norm as the original decoder's fused TF1 layers computed it.

    Normalises with the biased batch variance but updates the moving variance with the
    unbiased one (n / (n - 1), n = N*H*W), which is what ``tf.nn.fused_batch_norm`` does;
    Keras's stock layer uses the biased variance for both. Momentum 0.99, epsilon 1e-3.
    Computed by the fused kernel where ``FusedBatchNormalization`` can, else as below.

    ``always_batch_statistics=True`` reproduces the skip decoder's ``training=True``
    layers: batch statistics even at inference, while the moving averages still move
    only in training mode (the original ran those update ops with the train step only).
    """

    unbiased_moving_variance = True

    def __init__(self, always_batch_statistics: bool = False, **kwargs):
        kwargs.setdefault("momentum", 0.99)
        kwargs.setdefault("epsilon", 1e-3)
        super().__init__(**kwargs)
        self.always_batch_statistics = bool(always_batch_statistics)

    def _batch_statistics_at_inference(self) -> bool:
        return self.always_batch_statistics

    def _unfused_call(self, inputs, training, mask):
        if not (training or self.always_batch_statistics):
            return super()._unfused_call(inputs, False, mask)
        # In float32 under a mixed policy, as Keras's own batch norm (its weights are float32).
        inputs = ops.cast(inputs, "float32")
        mean, variance = ops.moments(inputs, axes=self._reduction_axes)
        if training:
            self._update_moving_statistics(inputs, mean, variance)
        outputs = ops.batch_normalization(
            inputs, mean, variance, axis=self.axis, offset=self.beta, scale=self.gamma,
            epsilon=self.epsilon)
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, inputs, mean, variance):
        shape = ops.shape(inputs)
        n = ops.cast(ops.prod([shape[a] for a in self._reduction_axes]), variance.dtype)
        unbiased = variance * n / ops.maximum(n - 1.0, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + unbiased * (1.0 - m))

    def get_config(self):
        return {**super().get_config(),
                "always_batch_statistics": self.always_batch_statistics}
