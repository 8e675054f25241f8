"""EfficientNet-B0/B3 encoder truncated at stride 16, built from ``keras.applications``.

The application's layers compute the original's function for even input sizes
(spec/EFFICIENTLAB.md, "Verified facts"), and reusing them lets ``weights="imagenet"``
hand users the standard ImageNet backbone. We rebuild a fresh graph by calling the
application's layers from ``stem_conv_pad`` up to the last block of stride 16, so that

- the application's own preprocessing (a ``Rescaling``/``Normalization`` pair that, with
  ``weights=None``, only divides by 255) is bypassed: EfficientLab normalises itself;
- only the kept blocks' variables belong to the encoder (no dead top-of-network weights);
- the encoder's input layer has a deterministic name;
- its batch norms are ``FusedBatchNormalization`` copies of the application's (same
  config and weights), computed by TensorFlow's fused kernel.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import keras
from absl import logging

from metaseg.errors import ConfigError, DataError
from metaseg.models.batch_norm import FusedBatchNormalization

# --feature_extractor_name -> keras.applications constructor (looked up at build time).
_APPLICATIONS = {"efficientnet-b0": "EfficientNetB0", "efficientnet-b3": "EfficientNetB3"}
BACKBONES = tuple(_APPLICATIONS)
LAST_STAGE = 5  # Keras stage 5 ends the stride-16 part (B0 112 channels, B3 136)
# Keras stage whose last block is each reduction's endpoint (stage 4 is also stride 16).
REDUCTION_STAGES = {1: 1, 2: 2, 3: 3, 4: LAST_STAGE}
DROP_CONNECT_RATE = 0.2
WEIGHTS_ORIGIN = "https://storage.googleapis.com/keras-applications/"  # Keras' download site
# What run_metasegnet.py users can do without the network ({file}, {cache}: where Keras
# looks for the weights file before downloading it).
OFFLINE_CHOICES = ("copy {file} into {cache} (set KERAS_HOME to choose the folder), pass "
                   "--restore_efficient_net_weights_from with a TF1 EfficientNet checkpoint, "
                   "or leave --backbone_weights unset (random initialisation)")
_BLOCK_RE = re.compile(r"^block(\d+)([a-z])_")


def check_backbone(backbone: str) -> None:
    """Raise ConfigError for a backbone name we cannot build."""
    if backbone not in _APPLICATIONS:
        raise ConfigError(f"unknown backbone {backbone!r} (--feature_extractor_name): "
                          f"choose one of {', '.join(BACKBONES)}")


def block_prefixes(layers) -> List[str]:
    """Keras block prefixes (``block1a_`` ...) of the kept stages, in network order."""
    found = {}
    for layer in layers:
        match = _BLOCK_RE.match(layer.name)
        if match and int(match.group(1)) <= LAST_STAGE:
            found[match.group(0)] = (int(match.group(1)), match.group(2))
    return sorted(found, key=found.get)


def _stage_end(prefixes: List[str], stage: int) -> str:
    """Prefix of the last block of ``stage``."""
    return [p for p in prefixes if int(_BLOCK_RE.match(p).group(1)) == stage][-1]


def _block_output_name(app, prefix: str) -> str:
    """A block ends in ``<prefix>add`` when residual, else ``<prefix>project_bn``."""
    names = {layer.name for layer in app.layers}
    return f"{prefix}add" if f"{prefix}add" in names else f"{prefix}project_bn"


def _rebuild(app, start_layer: str, new_input, output_names: List[str]) -> Dict[str, object]:
    """Call ``app``'s layers from ``start_layer`` on ``new_input``; return named outputs.

    Walks the application's layers in topological order, re-calling each one whose
    inputs are available on the mapped tensors, and stops after the last requested
    output, so nothing beyond the cut is ever called (or owns a variable in our graph).
    Stock batch norms are replaced by their fused copies (:func:`_fused_copy`).
    """
    tensors = {id(app.get_layer(start_layer).input): new_input}
    outputs, remaining = {}, set(output_names)
    for layer in app.layers:
        if not remaining:
            break
        inputs = layer.input
        flat = keras.tree.flatten(inputs)
        if not flat or not all(id(t) in tensors for t in flat):
            continue  # the application's input and preprocessing layers
        mapped = keras.tree.map_structure(lambda t: tensors[id(t)], inputs)
        if type(layer) is keras.layers.BatchNormalization:  # pylint: disable=unidiomatic-typecheck
            tensors[id(layer.output)] = _fused_copy(layer, mapped)
        else:
            tensors[id(layer.output)] = layer(mapped)
        if layer.name in remaining:
            outputs[layer.name] = tensors[id(layer.output)]
            remaining.discard(layer.name)
    if remaining:
        raise RuntimeError(f"encoder endpoints not reached: {sorted(remaining)}")
    return outputs


def _fused_copy(layer, inputs):
    """Call a ``FusedBatchNormalization`` with ``layer``'s config and weights on inputs.

    Same name, so the same variable paths (``stem_bn/gamma`` ...) in the same order.
    """
    fused = FusedBatchNormalization.from_config(layer.get_config())
    outputs = fused(inputs)
    fused.set_weights(layer.get_weights())
    return outputs


def _set_stochastic_depth(encoder: keras.Model, prefixes: List[str]) -> None:
    """Rates 0.2 * idx / blocks_kept, as the truncated original (Keras scales by 16)."""
    for idx, prefix in enumerate(prefixes):
        try:
            layer = encoder.get_layer(f"{prefix}drop")
        except ValueError:
            continue  # not a residual block, or idx == 0
        layer.rate = DROP_CONNECT_RATE * idx / len(prefixes)


def weights_file(backbone: str) -> str:
    """The name of the ImageNet weights file Keras downloads for ``backbone``."""
    return _APPLICATIONS[backbone].lower() + "_notop.h5"


def weights_cache_dir() -> str:
    """Where Keras keeps downloaded weights (and looks for them first)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _is_download_failure(error: Exception) -> bool:
    """Keras' failed download (a bare Exception "URL fetch failure ..."), a network or file
    error, or a download that arrived corrupt."""
    text = str(error)
    return (text.startswith("URL fetch failure") or isinstance(error, OSError)
            or (isinstance(error, ValueError) and "corrupted file" in text))


def _imagenet_application(constructor, backbone: str, flag: str, offline_choices: str):
    """``constructor(weights="imagenet")``; a failed download is one DataError line."""
    try:
        return constructor(include_top=False, weights="imagenet", input_shape=(None, None, 3))
    except Exception as e:  # pylint: disable=broad-except  # Keras raises bare Exception
        if not _is_download_failure(e):
            raise
        reason = " ".join(str(e).split("-- ")[-1].split()) or type(e).__name__
        file, cache = weights_file(backbone), weights_cache_dir()
        raise DataError(
            f"{flag} needs Keras' ImageNet weights for {backbone} ({file}, downloaded from "
            f"{WEIGHTS_ORIGIN} the first time and then kept in {cache}), and getting them "
            f"failed: {reason}. This needs the network once; offline, "
            + offline_choices.format(file=file, cache=cache)) from None


def build_encoder(backbone: str = "efficientnet-b0", weights: Optional[str] = None,
                  name: Optional[str] = None, *, flag: str = "--backbone_weights imagenet",
                  offline_choices: str = OFFLINE_CHOICES) -> keras.Model:
    """Truncated EfficientNet as a functional model.

    Args:
      backbone: "efficientnet-b0" or "efficientnet-b3".
      weights: None (random init) or "imagenet" (downloaded by Keras when asked).
      name: model name; default "efficientnet_b0" / "efficientnet_b3".
      flag, offline_choices: how the user asked for ImageNet weights and what they can do
        without the network (``{file}``, ``{cache}`` filled in), for the one-line DataError
        raised when the weights cannot be downloaded.
    Returns:
      keras.Model mapping ImageNet-normalised images float32 [N, H, W, 3] (H, W multiples
      of 16) to a dict ``reduction_1`` .. ``reduction_4``: the last block outputs at
      strides 2, 4, 8 and 16 (B0: 16, 24, 40, 112 channels; B3: 24, 32, 48, 136).
      ``reduction_4`` is the encoder output; its width is the decoder width D.
    """
    check_backbone(backbone)
    if weights not in (None, "imagenet"):
        raise ConfigError(f"--backbone_weights must be 'imagenet' or unset, got {weights!r}")
    if weights:
        logging.info("Building %s with ImageNet weights (Keras downloads them once).",
                     backbone)
    constructor = getattr(keras.applications, _APPLICATIONS[backbone])
    if weights:
        app = _imagenet_application(constructor, backbone, flag, offline_choices)
    else:
        app = constructor(include_top=False, weights=None, input_shape=(None, None, 3))
    prefixes = block_prefixes(app.layers)
    endpoints = {f"reduction_{r}": _block_output_name(app, _stage_end(prefixes, stage))
                 for r, stage in REDUCTION_STAGES.items()}
    new_input = keras.Input((None, None, 3), name="normalized_images")
    outputs = _rebuild(app, "stem_conv_pad", new_input, list(endpoints.values()))
    name = name or backbone.replace("-", "_")
    encoder = keras.Model(new_input, {r: outputs[n] for r, n in endpoints.items()},
                          name=name)
    _set_stochastic_depth(encoder, prefixes)
    return encoder
