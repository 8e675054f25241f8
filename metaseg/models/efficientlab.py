"""EfficientLab: truncated EfficientNet encoder + residual skip decoder, keras-hub style.

The whole graph is built in ``__init__`` as a functional model; ``get_config`` returns
every constructor argument, so ``from_config`` rebuilds the same layer names and weights
layout. ``logits_model`` shares every layer and variable and stops before the softmax,
which is what the meta-learning engine differentiates through ``stateless_call``.
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import keras

from metaseg.errors import ConfigError
from metaseg.models import decoder
from metaseg.models.efficientnet import build_encoder, check_backbone
from metaseg.models.layers import ImageNetNormalization

REDUCTIONS = (1, 2, 3, 4)


def normalize_rsd(rsd: Optional[Iterable[int]]) -> Tuple[int, ...]:
    """``--rsd`` as a tuple of distinct reductions 1-4; None or () means no RSD blocks."""
    rsd = tuple(int(r) for r in (rsd or ()))
    bad = [r for r in rsd if r not in REDUCTIONS]
    if bad:
        raise ConfigError(f"--rsd entries must be reductions 1-4, got {list(rsd)}")
    if len(set(rsd)) != len(rsd):
        raise ConfigError(f"--rsd entries must be distinct, got {list(rsd)}")
    return rsd


@keras.saving.register_keras_serializable(package="metaseg")
class EfficientLab(keras.Model):
    """Binary segmentation network of spec/EFFICIENTLAB.md.

    Input: images float32 [N, H, W, 3] in [0, 255], H and W multiples of 16 (checked,
    ConfigError otherwise). Output: softmax probabilities float32 [N, H, W, 2] in [0, 1],
    channel 0 background, channel 1 foreground. ``training=True`` uses batch statistics
    (and updates moving averages), dropout and stochastic depth; ``training=False`` uses
    moving averages and disables both.

    Args (keyword-only):
      backbone: "efficientnet-b0" (D = 112) or "efficientnet-b3" (D = 136).
      rsd: reductions (1-4) feeding residual skip decoders, applied in descending order;
        None or () for none. The published configuration is (2, 4).
      spatial_pyramid_pooling: add the ASPP block on the encoder output.
      skip_decoding: add the DeepLab v3+ style skip decoder.
      final_layer_dropout_rate: dropout before the final 1x1 conv, in [0, 1).
      rsd_residual: keep the RSD residual add (False = --disable_rsd_residual_connections).
      backbone_weights: None or "imagenet" (Keras downloads the weights when asked).
      name: model name.
    """

    def __init__(self, *, backbone: str = "efficientnet-b0", rsd=(2, 4),
                 spatial_pyramid_pooling: bool = False, skip_decoding: bool = False,
                 final_layer_dropout_rate: float = 0.0, rsd_residual: bool = True,
                 backbone_weights: Optional[str] = None, name: str = "efficientlab",
                 **kwargs):
        check_backbone(backbone)
        rsd = normalize_rsd(rsd)
        if not 0.0 <= final_layer_dropout_rate < 1.0:
            raise ConfigError("--final_layer_dropout_rate must be in [0, 1), got "
                              f"{final_layer_dropout_rate}")
        # === Layers and functional graph ===
        encoder = build_encoder(backbone, backbone_weights)
        images = keras.Input((None, None, 3), name="images")
        features = encoder(ImageNetNormalization(name="normalize")(images))
        logits = decoder.decode(
            features, images, rsd=rsd, spatial_pyramid_pooling=spatial_pyramid_pooling,
            skip_decoding=skip_decoding, final_layer_dropout_rate=final_layer_dropout_rate,
            rsd_residual=rsd_residual)
        probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(logits)
        super().__init__(inputs=images, outputs=probabilities, name=name, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.rsd = rsd
        self.spatial_pyramid_pooling = bool(spatial_pyramid_pooling)
        self.skip_decoding = bool(skip_decoding)
        self.final_layer_dropout_rate = float(final_layer_dropout_rate)
        self.rsd_residual = bool(rsd_residual)
        self.backbone_weights = backbone_weights
        self.encoder = encoder
        self.decoder_width = int(features["reduction_4"].shape[-1])
        # The last 1x1 conv, which --do_not_restore_final_layer_weights leaves out.
        self.final_layer_name = decoder.FINAL_CONV
        # Stored around Keras's attribute tracking: it is a view of this model's own
        # layers, not a sublayer, so ``model.layers`` and weight files stay unchanged.
        self.__dict__["_logits_model"] = keras.Model(images, logits, name=f"{name}_logits")

    @property
    def logits_model(self) -> keras.Model:
        """Same layers and variables (same order); outputs logits float32 [N, H, W, 2]."""
        return self.__dict__["_logits_model"]

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone,
            "rsd": list(self.rsd),
            "spatial_pyramid_pooling": self.spatial_pyramid_pooling,
            "skip_decoding": self.skip_decoding,
            "final_layer_dropout_rate": self.final_layer_dropout_rate,
            "rsd_residual": self.rsd_residual,
            "backbone_weights": self.backbone_weights,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
