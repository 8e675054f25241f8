"""EfficientLab's decoder blocks as functional-graph builders (spec/EFFICIENTLAB.md).

Every layer gets a deterministic name built from the block prefix and its role, and the
role tuples below list the weighted units in the order the original created them; the
TF1 checkpoint mapping (``tf1_names.py``) is derived from these, not from a name table.
"""

from __future__ import annotations

import keras

from metaseg.models.layers import AlignedResize, DecoderBatchNormalization, SpatialMeanTile

# Weighted units of one RSD block, in the original's creation order; "project" exists
# only when the decoded map's width differs from D.
RSD_UNITS = ("project", "branch0", "branch1", "fuse")
# ASPP: (TF1 sub-scope, our unit) in creation order; the projection sits at the top scope.
ASPP_UNITS = (("branch_0", "branch0"), ("branch_1", "branch1"), ("branch_2", "branch2"),
              ("", "project"))
ASPP_DROPOUT = 0.5
# Skip decoder: our layer names in creation order (projection, then two separable convs).
SKIP_DECODER_LAYERS = ("skip_project_conv", "skip_project_bn",
                       "skip_sep1_dwconv", "skip_sep1_dw_bn", "skip_sep1_pw_conv",
                       "skip_sep1_pw_bn",
                       "skip_sep2_dwconv", "skip_sep2_dw_bn", "skip_sep2_pw_conv",
                       "skip_sep2_pw_bn")
FINAL_CONV = "final_layer_weights"  # the original's name for the last 1x1 conv


def conv_kernel_initializer():
    """Normal(0, sqrt(2 / (k * k * filters_out))): EfficientNet's conv initialiser."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal")


def rsd_prefix(reduction: int) -> str:
    return f"rsd{reduction}_"


def _unit(x, filters: int, kernel: int, name: str, dilation: int = 1):
    """RSD unit: conv (bias, Glorot) -> swish -> batch norm; activation before the norm."""
    x = keras.layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation,
                            name=f"{name}_conv")(x)
    x = keras.layers.Activation("swish", name=f"{name}_swish")(x)
    return DecoderBatchNormalization(name=f"{name}_bn")(x)


def rsd_block(x, skip, width: int, reduction: int, residual: bool = True):
    """Residual skip decoder fusing decoded map x [N, h, w, C] with skip [N, H, W, Cs].

    Returns float32 [N, H, W, width]. ``residual=False`` drops the final add
    (``--disable_rsd_residual_connections``, which the original silently ignored).
    """
    p = rsd_prefix(reduction)
    up = AlignedResize(name=f"{p}upsample")([x, skip])
    cat = keras.layers.Concatenate(name=f"{p}concat")([up, skip])
    # The branches get as many filters as the (projected) residual path: always width.
    b0 = _unit(cat, width, 1, f"{p}branch0")
    b1 = _unit(cat, width, 3, f"{p}branch1", dilation=2)
    b2 = SpatialMeanTile(name=f"{p}pool")(cat)
    pyramid = keras.layers.Concatenate(name=f"{p}pyramid")([b0, b1, b2])
    y = _unit(pyramid, width, 3, f"{p}fuse")
    if not residual:
        return y  # the projection below would feed nothing, so it is not built
    if up.shape[-1] != width:
        up = _unit(up, width, 1, f"{p}project")
    return keras.layers.Add(name=f"{p}add")([y, up])


def _conv_swish_dropout(x, width: int, kernel: int, name: str, dilation: int = 1):
    x = keras.layers.Conv2D(width, kernel, padding="same", dilation_rate=dilation,
                            name=f"{name}_conv")(x)
    x = keras.layers.Activation("swish", name=f"{name}_swish")(x)
    return keras.layers.Dropout(ASPP_DROPOUT, name=f"{name}_dropout")(x)


def aspp(x, width: int):
    """Atrous spatial pyramid pooling on the encoder output x [N, h, w, C] -> [N, h, w, D].

    Branches as spec/EFFICIENTLAB.md describes (1x1; 3x3 dilation 6; global mean -> 1x1,
    resized back), each conv + swish + dropout 0.5, concatenated in the original's order
    (pooled, dilated, 1x1) and projected by a 1x1 conv + swish + dropout.
    """
    b0 = _conv_swish_dropout(x, width, 1, "aspp_branch0")
    b1 = _conv_swish_dropout(x, width, 3, "aspp_branch1", dilation=6)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    b2 = _conv_swish_dropout(pooled, width, 1, "aspp_branch2")
    b2 = AlignedResize(name="aspp_branch2_resize")([b2, x])
    cat = keras.layers.Concatenate(name="aspp_concat")([b2, b1, b0])
    return _conv_swish_dropout(cat, width, 1, "aspp_project")


def _separable(x, filters: int, name: str):
    """Depthwise 3x3 -> BN -> swish -> pointwise 1x1 -> BN -> swish, no biases."""
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                     depthwise_initializer=conv_kernel_initializer(),
                                     name=f"{name}_dwconv")(x)
    x = DecoderBatchNormalization(always_batch_statistics=True, name=f"{name}_dw_bn")(x)
    x = keras.layers.Activation("swish", name=f"{name}_dw_swish")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False,
                            kernel_initializer=conv_kernel_initializer(),
                            name=f"{name}_pw_conv")(x)
    x = DecoderBatchNormalization(always_batch_statistics=True, name=f"{name}_pw_bn")(x)
    return keras.layers.Activation("swish", name=f"{name}_pw_swish")(x)


def skip_decoder(x, reduction_2, images, width: int):
    """DeepLab v3+ style refinement (``--skip_decoding``).

    x [N, h, w, C] is resized to a quarter of the input size and concatenated with a
    1x1-projected (width // 2, no bias, BN, swish) reduction 2; two separable conv blocks
    follow. Returns [N, H/4, W/4, width + width // 2]. As in the original, these batch
    norms always normalise with batch statistics (their ``training=True``).
    """
    skip_width = width // 2
    up = AlignedResize(divisor=4, name="skip_resize")([x, images])
    s = keras.layers.Conv2D(skip_width, 1, use_bias=False, name="skip_project_conv")(
        reduction_2)
    s = DecoderBatchNormalization(always_batch_statistics=True, name="skip_project_bn")(s)
    s = keras.layers.Activation("swish", name="skip_project_swish")(s)
    y = keras.layers.Concatenate(name="skip_concat")([up, s])
    y = _separable(y, width + skip_width, "skip_sep1")
    return _separable(y, width + skip_width, "skip_sep2")


def decode(features, images, *, rsd, spatial_pyramid_pooling: bool, skip_decoding: bool,
           final_layer_dropout_rate: float, rsd_residual: bool):
    """Encoder reductions -> logits float32 [N, H, W, 2] at the input resolution.

    ``features``: dict reduction_1..4 from the encoder; ``images``: the raw input tensor
    (only its spatial size is used). RSD blocks run in descending reduction order.
    """
    width = features["reduction_4"].shape[-1]
    x = features["reduction_4"]
    if spatial_pyramid_pooling:
        x = aspp(x, width)
    if skip_decoding:
        x = skip_decoder(x, features["reduction_2"], images, width)
    for r in sorted(rsd, reverse=True):
        x = rsd_block(x, features[f"reduction_{r}"], width, r, residual=rsd_residual)
    if final_layer_dropout_rate > 0:
        x = keras.layers.Dropout(final_layer_dropout_rate, name="final_dropout")(x)
    x = keras.layers.Conv2D(2, 1, kernel_initializer=conv_kernel_initializer(),
                            name=FINAL_CONV)(x)
    # float32 under the bf16 policy too: the loss and softmax see float32 logits.
    return AlignedResize(name="logits", dtype="float32")([x, images])
