"""keras-hub segmenters as ``--model_name`` choices (optional: ``pip install metaseg[kerashub]``).

Built from their configurations with random weights; nothing is downloaded.

* ``segformer_b0``: ``keras_hub.models.SegFormerImageSegmenter``'s layers on a
  ``SegFormerBackbone`` over the MiT-B0 ``MiTBackbone`` (depths 2-2-2-2, widths
  32-64-160-256, 1-2-5-8 heads, reduction ratios 8-4-2-1, 256 projection filters: the
  SegFormer paper's B0). SegFormer predicts at 1/4 resolution; its bilinear resize brings
  the logits back to the input size.
* ``deeplabv3_hub``: ``keras_hub.models.DeepLabV3ImageSegmenter``'s layers on a
  ``DeepLabV3Backbone`` (ASPP on P5, rates 6-12-18, the v3+ low-level decoder on P2) over a
  small ``keras_hub.models.ResNetBackbone`` (basic blocks, widths 64-64-128-128, one block
  per stage, a 64-filter stem).

Both take float32 images ``[N, S, S, 3]`` in [0, 255] (normalised inside with the ImageNet
mean and standard deviation) and return logits ``[N, S, S, 2]``. keras-hub builds these
graphs for one input size (MiT reshapes its token sequences with the static height and
width), so S is fixed when the model is built (``--image_size``, a multiple of 32) and
``FixedImageSize`` makes it static inside the meta-learner's shape-polymorphic functions.
``--final_layer_dropout_rate`` is the dropout before the last 1x1 convolution (keras-hub's
SegFormer has 0.1 there; metaseg's flag replaces it).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from metaseg.config import ModelConfig
from metaseg.errors import ConfigError
from metaseg.models.logits import with_logits

# ImageNet statistics of [0, 255] images (what keras-hub's image converters normalise with).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
STRIDE = 32  # the coarsest feature map of both backbones

MIT_B0 = dict(layerwise_depths=[2, 2, 2, 2], num_layers=4, hidden_dims=[32, 64, 160, 256],
              layerwise_num_heads=[1, 2, 5, 8], layerwise_sr_ratios=[8, 4, 2, 1],
              max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3, 3, 3],
              layerwise_strides=[4, 2, 2, 2])
SEGFORMER_B0_PROJECTION = 256
# keras-hub's ResNet needs 64 filters in its first stage.
SMALL_RESNET = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7],
                    stackwise_num_filters=[64, 64, 128, 128], stackwise_num_blocks=[1, 1, 1, 1],
                    stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block")


@keras.saving.register_keras_serializable(package="metaseg")
class FixedImageSize(keras.layers.Layer):
    """float32 [N, ?, ?, C] -> the same tensor with static shape [N, S, S, C].

    Fails (InvalidArgumentError) on images of another size, instead of letting a graph
    built for S reshape them wrongly.
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images):
        return tf.ensure_shape(images, [None, self.size, self.size, None])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def _keras_hub(model_name: str):
    try:
        import keras_hub  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ConfigError(f"--model_name {model_name} needs keras-hub ({e}): "
                          'pip install "metaseg[kerashub]"') from None
    return keras_hub


def _check_size(model_name: str, image_size: int) -> None:
    if image_size % STRIDE:
        raise ConfigError(f"--model_name {model_name} needs --image_size a multiple of "
                          f"{STRIDE} (its coarsest features are at stride {STRIDE}), got "
                          f"{image_size}")


def _wired(name: str, image_size: int, features, head: keras.layers.Layer, resize,
           dropout_rate: float) -> keras.Model:
    """images [0, 255] -> normalise -> features -> dropout -> head -> (resize): logits."""
    images = keras.Input((image_size, image_size, 3), name="images")
    x = FixedImageSize(image_size, name="fixed_image_size")(images)
    x = keras.layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD],
                                   name="imagenet_normalization")(x)
    x = keras.layers.Dropout(dropout_rate, name="final_layer_dropout")(features(x))
    logits = head(x)
    if resize is not None:
        logits = resize(logits)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    model = keras.Model(images, logits, name=name)
    model.__dict__["final_layer_name"] = head.name
    return model


def segformer_b0_logits(image_size: int, *, dropout_rate: float = 0.0) -> keras.Model:
    """SegFormer-B0 (keras-hub) returning logits ``[N, S, S, 2]``; randomly initialised."""
    _check_size("segformer_b0", image_size)
    keras_hub = _keras_hub("segformer_b0")
    encoder = keras_hub.models.MiTBackbone(**MIT_B0, image_shape=(image_size, image_size, 3))
    backbone = keras_hub.models.SegFormerBackbone(
        image_encoder=encoder, projection_filters=SEGFORMER_B0_PROJECTION)
    segmenter = keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=2)
    return _wired("segformer_b0", image_size, segmenter.backbone,
                  segmenter.output_segmentation_head, segmenter.resizing, dropout_rate)


def deeplabv3_hub_logits(image_size: int, *, dropout_rate: float = 0.0) -> keras.Model:
    """DeepLab v3+ (keras-hub) returning logits ``[N, S, S, 2]``; randomly initialised."""
    _check_size("deeplabv3_hub", image_size)
    keras_hub = _keras_hub("deeplabv3_hub")
    encoder = keras_hub.models.ResNetBackbone(**SMALL_RESNET,
                                              image_shape=(image_size, image_size, 3))
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8,
        dilation_rates=[6, 12, 18], low_level_feature_key="P2",
        image_shape=(image_size, image_size, 3))
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=2)
    return _wired("deeplabv3_hub", image_size, segmenter.backbone, segmenter.output_conv,
                  None, dropout_rate)


def build_segformer_b0(config: ModelConfig, image_size: int) -> keras.Model:
    """``--model_name segformer_b0``: probabilities model with ``logits_model``."""
    return with_logits(segformer_b0_logits(image_size,
                                           dropout_rate=config.final_layer_dropout_rate),
                       name="segformer_b0")


def build_deeplabv3_hub(config: ModelConfig, image_size: int) -> keras.Model:
    """``--model_name deeplabv3_hub``: probabilities model with ``logits_model``."""
    return with_logits(deeplabv3_hub_logits(image_size,
                                            dropout_rate=config.final_layer_dropout_rate),
                       name="deeplabv3_hub")
