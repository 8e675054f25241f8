"""``--model_name`` -> model builder. Each builder takes a ModelConfig.

The meta-learner is model-agnostic: any Keras model mapping float32 images
``[N, S, S, 3]`` in [0, 255] to 2-channel logits ``[N, S, S, 2]`` (channel 1 foreground)
can be meta-trained. ``register_model(name, builder)`` makes one available as
``--model_name name``; ``build_model`` gives every model the EfficientLab interface
(softmax output, ``logits_model`` attribute) through ``with_logits``. Models whose graph
is built for one input size (keras-hub's) are registered with ``sized=True``: their builder
takes ``(config, image_size)`` and ``build_model`` needs the image size.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Optional, Set

import keras
from absl import logging

from metaseg.config import ModelConfig
from metaseg.errors import CheckpointError, ConfigError
from metaseg.models import kerascv, kerashub  # keras-cv / keras-hub load only when built
from metaseg.models.efficientlab import EfficientLab
from metaseg.models.logits import is_functional, logits_model, with_logits
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


MODELS: Dict[str, Callable[..., keras.Model]] = {
    "efficientlab": _build_efficientlab,
    "deeplabv3plus": kerascv.build_deeplabv3plus,
    "segformer_b0": kerashub.build_segformer_b0,
    "deeplabv3_hub": kerashub.build_deeplabv3_hub,
}
# Names whose builder takes (config, image_size): graphs built for one input size.
SIZED: Set[str] = {"segformer_b0", "deeplabv3_hub"}


def register_model(name: str, builder: Callable[..., keras.Model], *,
                   overwrite: bool = False, sized: bool = False) -> None:
    """Make ``builder`` available as ``--model_name name``.

    ``builder(config: ModelConfig)`` returns a fresh ``keras.Model`` that maps float32
    images ``[N, S, S, 3]`` in [0, 255] to logits ``[N, S, S, 2]``; or one whose output
    is probabilities and whose ``logits_model`` attribute is a model sharing its variables
    that returns the logits. Optional: ``final_layer_name``, the top-level layer
    ``--do_not_restore_final_layer_weights`` skips (default "final_layer_weights").
    ``sized=True``: the builder is called as ``builder(config, image_size)`` (S, the side of
    the square images the model will see), for models whose graph has a static input size.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise ConfigError(f"builder for model {name!r} must be callable, got {builder!r}")
    if name in MODELS and not overwrite:
        raise ConfigError(f"model {name!r} is already registered; pass overwrite=True "
                          "to replace it")
    MODELS[name] = builder
    if sized:
        SIZED.add(name)
    else:
        SIZED.discard(name)


def _check_channels(model: keras.Model, model_name: str) -> None:
    net = logits_model(model)
    try:
        channels = net.outputs[0].shape[-1] if is_functional(net) else None
    except (AttributeError, IndexError):
        channels = None
    if channels is not None and channels != 2:
        raise ConfigError(f"--model_name {model_name}: the model returns {channels} "
                          "channels; the meta-learner needs 2 (background, foreground)")


# ModelConfig.mixed_precision -> Keras dtype policy.
DTYPE_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Build layers under ``DTYPE_POLICIES[precision]``, restoring the global policy after.

    Keras layers take the global policy when they are created, so the policy is per model
    (each layer keeps its own) even though it is set globally for the duration.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(DTYPE_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(config: ModelConfig, image_size: Optional[int] = None) -> keras.Model:
    """Build the network ``config.model_name`` names; ConfigError for an unknown name.

    ``config.mixed_precision == "bf16"``: every layer computes in bfloat16 except batch
    norm and the logits, which stay float32 like the variables (EfficientLab marks its
    logits layer float32; other models should end in a float32 layer too).
    ``image_size``: the side of the square images the model will see; models registered
    with ``sized=True`` need it (the others work at any size and ignore it).
    """
    try:
        builder = MODELS[config.model_name]
    except KeyError:
        raise ConfigError(f"unknown --model_name {config.model_name!r}: known models are "
                          f"{', '.join(sorted(MODELS))}") from None
    sized = config.model_name in SIZED
    if sized and image_size is None:
        raise ConfigError(f"--model_name {config.model_name} is built for one image size: "
                          "call build_model(config, image_size=S)")
    with dtype_policy(config.mixed_precision):
        model = builder(config, int(image_size)) if sized else builder(config)
    if not isinstance(model, keras.Model):
        raise ConfigError(f"--model_name {config.model_name}: the builder returned "
                          f"{type(model).__name__}, not a keras.Model")
    _check_channels(model, config.model_name)
    if not hasattr(model, "logits_model"):
        model = with_logits(model)
    return model
