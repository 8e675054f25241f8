"""Dense, L2-normalised pixel embeddings for clustering unlabelled images into pseudo-classes.

A feature extractor maps uint8 images ``[N, S, S, 3]`` to float32 ``[N, S / 2**r,
S / 2**r, C]`` with unit-length vectors along the last axis, ``r`` the feature level
(reduction 1-4: strides 2, 4, 8 and 16, the EfficientLab encoder's endpoints).

Backbones (``--backbone``):
- ``imagenet``: our EfficientNet encoder with the standard Keras ImageNet weights (downloaded
  by Keras when first asked), run in inference mode on ImageNet-normalised images;
- ``random``: the same encoder untrained (for tests and smoke runs; Keras draws the weights);
- a directory: the encoder of a metaseg checkpoint (``config.json`` + ``model.ckpt-*``,
  e.g. a meta-trained run) or of a checkpoint of the original TF1 code;
- ``pixels``: no network, the colour ``[R, G, B, 255] / 255`` of each pixel averaged over
  2**r x 2**r cells (a deterministic stand-in that tests the clustering and sharding path;
  the constant channel keeps black and white apart after normalisation).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
from absl import logging

from metaseg import checkpoints
from metaseg.config import ModelConfig
from metaseg.errors import CheckpointError, ConfigError
from metaseg.models import build_model
from metaseg.models.efficientnet import build_encoder
from metaseg.models.layers import ImageNetNormalization
from metaseg.models.tf1_checkpoint import load_tf1_checkpoint

PIXELS, RANDOM, IMAGENET = "pixels", "random", "imagenet"
FEATURE_LEVELS = (1, 2, 3, 4)
ENCODER_STRIDE = 16  # encoder inputs must be multiples of the deepest stride

FeatureFn = Callable[[np.ndarray], np.ndarray]


def stride(feature_level: int) -> int:
    """Pixels per feature cell along each axis at reduction ``feature_level``."""
    return 2 ** feature_level


def check_settings(backbone: str, feature_level: int, image_size: int) -> None:
    """ConfigError for a feature level or image size the backbone cannot use."""
    if feature_level not in FEATURE_LEVELS:
        raise ConfigError(f"--feature_level must be one of {FEATURE_LEVELS} (reductions: "
                          f"strides 2, 4, 8, 16), got {feature_level}")
    multiple = stride(feature_level) if backbone == PIXELS else ENCODER_STRIDE
    if image_size <= 0 or image_size % multiple:
        raise ConfigError(f"--image_size must be a positive multiple of {multiple} for "
                          f"--backbone {backbone} at --feature_level {feature_level}, "
                          f"got {image_size}")
    if backbone not in (PIXELS, RANDOM, IMAGENET) and not os.path.isdir(backbone):
        raise ConfigError(f"--backbone must be pixels, random, imagenet or a checkpoint "
                          f"directory; {backbone!r} is none of them")


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Unit vectors along the last axis (a zero vector stays zero)."""
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def pixel_features(images: np.ndarray, feature_level: int) -> np.ndarray:
    """uint8 [N, S, S, 3] -> float32 [N, S/s, S/s, 4]: mean [R, G, B, 255]/255 per s x s cell,
    L2-normalised (s = 2**feature_level)."""
    s = stride(feature_level)
    n, size = images.shape[0], images.shape[1]
    rgb1 = np.concatenate([images.astype(np.float32),
                           np.full(images.shape[:3] + (1,), 255.0, np.float32)], -1) / 255.0
    cells = rgb1.reshape(n, size // s, s, size // s, s, 4).mean(axis=(2, 4))
    return l2_normalize(cells)


def _encoder_from_checkpoint(directory: str, encoder_name: str):
    """(normalisation layer, encoder) of the EfficientLab stored in ``directory``."""
    found = checkpoints.detect(directory)
    if found.kind.is_metaseg:
        stored = checkpoints.read_run_config(found.directory)
        if stored is None:
            raise CheckpointError(f"{directory} has no config.json describing its model; "
                                  "pass the directory meta-training wrote")
        # The checkpoint supplies every weight: never download or read backbone weights.
        model = build_model(dataclasses.replace(stored.model, backbone_weights=None,
                                                restore_efficient_net_weights_from=None))
        iteration = checkpoints.restore_weights(model, found.prefix)
        logging.info("Features from the encoder of %s (iteration %d)", found.prefix, iteration)
    elif found.kind is checkpoints.Kind.TF1:
        model = build_model(ModelConfig(feature_extractor_name=encoder_name))
        count = load_tf1_checkpoint(model, directory, encoder_only=True)
        logging.info("Features from the TF1 checkpoint %s (%d encoder variables)", directory,
                     count)
    else:
        raise CheckpointError(f"--backbone {directory}: neither a metaseg checkpoint "
                              "(config.json + model.ckpt-*) nor a TF1 checkpoint of the original")
    encoder = model.get_layer(model.backbone.replace("-", "_"))
    return model.get_layer("normalize"), encoder


def _encoder(backbone: str, encoder_name: str):
    if backbone in (RANDOM, IMAGENET):
        weights = IMAGENET if backbone == IMAGENET else None
        offline = ("copy {file} into {cache} (set KERAS_HOME to choose the folder), or pass "
                   "--backbone with a metaseg or TF1 checkpoint directory (e.g. a meta-trained "
                   "run); --backbone random or pixels need no weights but cluster poorly")
        return ImageNetNormalization(name="normalize"), build_encoder(
            encoder_name, weights, flag="--backbone imagenet", offline_choices=offline)
    return _encoder_from_checkpoint(backbone, encoder_name)


def make_feature_fn(backbone: str, feature_level: int, image_size: int,
                    encoder_name: str = "efficientnet-b0") -> FeatureFn:
    """A function uint8 [N, S, S, 3] -> float32 [N, S/2**r, S/2**r, C], L2-normalised."""
    check_settings(backbone, feature_level, image_size)
    if backbone == PIXELS:
        return lambda images: pixel_features(images, feature_level)
    import tensorflow as tf

    normalize, encoder = _encoder(backbone, encoder_name)
    key = f"reduction_{feature_level}"

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)])
    def features(images):
        out = encoder(normalize(tf.cast(images, tf.float32)), training=False)[key]
        return tf.math.l2_normalize(out, axis=-1, epsilon=1e-24)

    return lambda images: features(tf.constant(images, tf.uint8)).numpy()
