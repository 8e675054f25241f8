"""``--model_name`` -> model builder. Each builder takes a ModelConfig."""

from __future__ import annotations

from typing import Callable, Dict

import keras
from absl import logging

from metaseg.config import ModelConfig
from metaseg.errors import CheckpointError, ConfigError
from metaseg.models.efficientlab import EfficientLab
from metaseg.models.tf1_checkpoint import is_tf1_checkpoint, load_tf1_checkpoint


def _build_efficientlab(config: ModelConfig) -> keras.Model:
    model = EfficientLab(
        backbone=config.feature_extractor_name, rsd=config.rsd,
        spatial_pyramid_pooling=config.spatial_pyramid_pooling,
        skip_decoding=config.skip_decoding,
        final_layer_dropout_rate=config.final_layer_dropout_rate,
        rsd_residual=config.rsd_residual, backbone_weights=config.backbone_weights)
    if config.restore_efficient_net_weights_from:
        _restore_backbone(model, config.restore_efficient_net_weights_from)
    return model


def _restore_backbone(model, path: str) -> None:
    """``--restore_efficient_net_weights_from``: a TF1 EfficientNet (or EfficientLab)
    checkpoint directory or prefix, as the original took; only the encoder is read."""
    if not is_tf1_checkpoint(path):
        raise CheckpointError(
            f"--restore_efficient_net_weights_from {path}: no TF1 EfficientNet checkpoint "
            "there (expected a directory with a 'checkpoint' file, or a prefix with .index "
            "and .data files, holding efficientnet-b*/ variables)")
    count = load_tf1_checkpoint(model, path, encoder_only=True)
    logging.info("Backbone initialised from %s (%d variables)", path, count)


MODELS: Dict[str, Callable[[ModelConfig], keras.Model]] = {
    "efficientlab": _build_efficientlab,
}


def build_model(config: ModelConfig) -> keras.Model:
    """Build the network ``config.model_name`` names; ConfigError for an unknown name."""
    try:
        builder = MODELS[config.model_name]
    except KeyError:
        raise ConfigError(f"unknown --model_name {config.model_name!r}: known models are "
                          f"{', '.join(sorted(MODELS))}") from None
    return builder(config)
