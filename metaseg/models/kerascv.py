"""keras-cv models as ``--model_name`` choices (optional: ``pip install metaseg[kerascv]``).

``deeplabv3plus``: ``keras_cv.models.DeepLabV3Plus`` on a small randomly initialised
ResNet (v1) backbone; nothing is downloaded. Input float32 images ``[N, S, S, 3]`` in
[0, 255] (the backbone rescales them to [0, 1]), S a multiple of 32 (DeepLab v3+ upsamples
the stride-32 features by 8 and concatenates them with the stride-4 ones). Output softmax
probabilities ``[N, S, S, 2]``; ``logits_model`` returns the logits, and the last 1x1
convolution is the top-level layer ``final_layer_weights``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from metaseg.config import ModelConfig
from metaseg.errors import ConfigError
from metaseg.models.logits import with_logits

FINAL_LAYER = "final_layer_weights"


@keras.saving.register_keras_serializable(package="metaseg")
class DynamicUpSampling2D(keras.layers.UpSampling2D):
    """``UpSampling2D`` that also works when the spatial size is only known at run time.

    Keras 3's ``UpSampling2D`` (through ``keras.ops.image.resize``) tests ``size > 0`` in
    Python, which fails inside ``tf.function`` when the height and width are unknown, as
    in the meta-learner's shape-polymorphic inner loop. Same result (bilinear, half-pixel
    centres) via ``tf.image.resize``. Registered with Keras (package "metaseg") so that a
    ``.keras`` export of the model loads after ``import metaseg.models``.
    """

    def call(self, inputs):
        size = tf.shape(inputs)[1:3] * tf.constant(self.size, tf.int32)
        method = "bilinear" if self.interpolation == "bilinear" else "nearest"
        return tf.cast(tf.image.resize(inputs, size, method=method), inputs.dtype)


def _dynamic_upsampling(layer):
    if isinstance(layer, keras.layers.UpSampling2D) and not isinstance(
            layer, DynamicUpSampling2D):
        return DynamicUpSampling2D(**layer.get_config())
    return layer  # shared, with its variables


def _keras_cv():
    try:
        import keras_cv
    except ImportError as e:
        raise ConfigError(f"--model_name deeplabv3plus needs keras-cv ({e}): "
                          "pip install metaseg[kerascv]") from None
    return keras_cv


def deeplabv3plus_logits(*, filters: Sequence[int] = (16, 32, 64, 128),
                         blocks: Sequence[int] = (1, 1, 1, 1), aspp_channels: int = 64,
                         projection_filters: int = 24, head_channels: int = 64,
                         dropout_rate: float = 0.0,
                         name: str = "deeplabv3plus") -> keras.Model:
    """DeepLab v3+ (keras-cv) returning logits ``[N, S, S, 2]``; randomly initialised.

    filters, blocks: per-stage widths and residual block counts of the ResNet v1 backbone
    (four stages, strides 4, 8, 16, 32 overall); aspp_channels: width of the atrous spatial
    pyramid pooling; projection_filters: the low-level (stride 4) projection width;
    head_channels: the segmentation head width; dropout_rate: dropout before the final
    1x1 convolution.
    """
    keras_cv = _keras_cv()
    if len(filters) != 4 or len(blocks) != 4:
        raise ConfigError(f"deeplabv3plus needs 4 backbone stages, got filters={filters} "
                          f"blocks={blocks}")
    backbone = keras_cv.models.ResNetBackbone(
        stackwise_filters=list(filters), stackwise_blocks=list(blocks),
        stackwise_strides=[1, 2, 2, 2], include_rescaling=True, input_shape=(None, None, 3))
    head = keras.Sequential([
        keras.layers.Conv2D(head_channels, 1, padding="same", use_bias=False,
                            name="segmentation_head_conv"),
        keras.layers.BatchNormalization(name="segmentation_head_norm"),
        keras.layers.ReLU(name="segmentation_head_relu"),
        DynamicUpSampling2D(size=(4, 4), interpolation="bilinear"),
    ], name="segmentation_head")
    deeplab = keras_cv.models.DeepLabV3Plus(
        backbone=backbone, num_classes=2, projection_filters=projection_filters,
        spatial_pyramid_pooling=keras_cv.layers.SpatialPyramidPooling(
            dilation_rates=[6, 12, 18], num_channels=aspp_channels),
        segmentation_head=head, name=f"{name}_features")
    # The same layers and variables, with the stride-32 upsampling made shape-polymorphic.
    features = keras.models.clone_model(deeplab, clone_function=_dynamic_upsampling)
    images = keras.Input((None, None, 3), name="images")
    x = features(images)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="final_layer_dropout")(x)
    logits = keras.layers.Conv2D(2, 1, padding="same", name=FINAL_LAYER,
                                 dtype="float32")(x)
    model = keras.Model(images, logits, name=name)
    model.__dict__["final_layer_name"] = FINAL_LAYER
    return model


def build_deeplabv3plus(config: ModelConfig) -> keras.Model:
    """``--model_name deeplabv3plus``: probabilities model with ``logits_model``."""
    logits = deeplabv3plus_logits(dropout_rate=config.final_layer_dropout_rate)
    return with_logits(logits, name="deeplabv3plus")
