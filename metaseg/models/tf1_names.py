"""The original TF1 variable names of an EfficientLab, derived from its structure.

TF1 named a layer's variables ``<scope>/<kind>[_<k>]/<weight>``: within one variable
scope, the k-th layer of a kind created gets the suffix ``_k`` (none for the first).
So the names follow from three things we know about each block: its scope (backbone
block index, decoder block), the kind of each weighted layer, and their creation order.
This module walks the Keras model in that order and applies the rule; nothing here is
a table of the 247 published names (those only serve to check the rule in tests).
"""

from __future__ import annotations

import collections
from typing import List, NamedTuple

import keras

from metaseg.models import decoder
from metaseg.models.efficientnet import block_prefixes

# Per Keras block, the weighted layers' suffixes in the original's creation order, with
# the TF1 sub-scope they live in (squeeze-and-excitation under "se").
ENCODER_BLOCK_ROLES = (("expand_conv", ""), ("expand_bn", ""), ("dwconv", ""), ("bn", ""),
                       ("se_reduce", "se"), ("se_expand", "se"), ("project_conv", ""),
                       ("project_bn", ""))
STEM_LAYERS = ("stem_conv", "stem_bn")
DECODE_SCOPE = "decode"
FINAL_SCOPE = f"{DECODE_SCOPE}/final_layer_weights"

ENCODER, DECODER, FINAL = "encoder", "decoder", "final"


class TF1Variable(NamedTuple):
    """One model variable and the name the original gave it."""
    name: str           # e.g. "efficientnet-b0/blocks_3/conv2d_1/kernel"
    variable: object    # the keras.Variable it maps to
    section: str        # ENCODER, DECODER or FINAL


def _kind(layer, encoder: bool) -> str:
    """TF1 layer kind, i.e. the default name of the layer class in the original."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise_conv2d"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv2d"
    if isinstance(layer, keras.layers.BatchNormalization):
        # EfficientNet used its TpuBatchNormalization subclass; the decoder tf.layers'.
        return "tpu_batch_normalization" if encoder else "batch_normalization"
    raise TypeError(f"no TF1 kind for layer {layer.name} ({type(layer).__name__})")


def _weight_name(layer, variable) -> str:
    """Keras weight name -> TF1 weight name (only depthwise kernels differ)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D) and variable.name == "kernel":
        return "depthwise_kernel"
    return variable.name


class _ScopeNamer:
    """Applies TF1's per-scope uniquification: conv2d, conv2d_1, conv2d_2, ..."""

    def __init__(self):
        self._counts = collections.Counter()

    def layer_scope(self, scope: str, kind: str) -> str:
        k = self._counts[(scope, kind)]
        self._counts[(scope, kind)] += 1
        return f"{scope}/{kind}" + (f"_{k}" if k else "")


def _variables_of(layer, layer_scope: str, section: str) -> List[TF1Variable]:
    return [TF1Variable(f"{layer_scope}/{_weight_name(layer, v)}", v, section)
            for v in layer.weights]


def _group(layers_with_subscopes, scope: str, encoder: bool, section: str):
    """Name one scope's layers, given in creation order as (layer, sub-scope) pairs."""
    namer, out = _ScopeNamer(), []
    for layer, sub in layers_with_subscopes:
        full = f"{scope}/{sub}" if sub else scope
        out += _variables_of(layer, namer.layer_scope(full, _kind(layer, encoder)), section)
    return out


def _optional_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def encoder_variables(model) -> List[TF1Variable]:
    """Stem then ``blocks_<i>`` for the kept blocks, i in network order."""
    enc, root = model.encoder, model.backbone
    out = _group([(enc.get_layer(n), "") for n in STEM_LAYERS], f"{root}/stem", True, ENCODER)
    for i, prefix in enumerate(block_prefixes(enc.layers)):
        layers = [(_optional_layer(enc, prefix + role), sub)
                  for role, sub in ENCODER_BLOCK_ROLES]
        out += _group([(l, s) for l, s in layers if l is not None],
                      f"{root}/blocks_{i}", True, ENCODER)
    return out


def _aspp_variables(model) -> List[TF1Variable]:
    scope = f"{DECODE_SCOPE}/spatial_pyramid_pooling"
    return _group([(model.get_layer(f"aspp_{unit}_conv"), sub)
                   for sub, unit in decoder.ASPP_UNITS], scope, False, DECODER)


def _skip_decoder_variables(model) -> List[TF1Variable]:
    scope = f"{DECODE_SCOPE}/decode_skip_connections"
    return _group([(model.get_layer(n), "") for n in decoder.SKIP_DECODER_LAYERS],
                  scope, False, DECODER)


def _rsd_variables(model, reduction: int) -> List[TF1Variable]:
    # The original's scope index is the reduction index minus one.
    scope = f"{DECODE_SCOPE}/decode_skip_connections_{reduction - 1}"
    p = decoder.rsd_prefix(reduction)
    layers = []
    for unit in decoder.RSD_UNITS:
        conv = _optional_layer(model, f"{p}{unit}_conv")
        if conv is not None:
            layers += [(conv, ""), (model.get_layer(f"{p}{unit}_bn"), "")]
    return _group(layers, scope, False, DECODER)


def decoder_variables(model) -> List[TF1Variable]:
    """ASPP, skip decoder, RSD blocks (descending reduction), final layer: as created."""
    out = []
    if model.spatial_pyramid_pooling:
        out += _aspp_variables(model)
    if model.skip_decoding:
        out += _skip_decoder_variables(model)
    for r in sorted(model.rsd, reverse=True):
        out += _rsd_variables(model, r)
    return out + _variables_of(model.get_layer(decoder.FINAL_CONV), FINAL_SCOPE, FINAL)


def tf1_variables(model) -> List[TF1Variable]:
    """Every variable of an EfficientLab with its TF1 name, in the original's creation
    order (the order of ``spec/efficientlab_b0_rsd24_tf1_variables.tsv``)."""
    return encoder_variables(model) + decoder_variables(model)
