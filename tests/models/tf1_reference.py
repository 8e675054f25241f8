"""A second, plain-TF implementation of the original EfficientLab forward pass (B0,
inference mode), reading weights from a {TF1 name: array} dict.

Written from spec/EFFICIENTLAB.md and the published EfficientNet-B0 block arguments with
raw TF ops (SAME-padded convolutions, batch-norm formula, swish, SE, RSD blocks), so it
shares no code with metaseg's Keras model or its checkpoint loader.
"""

import numpy as np
import tensorflow as tf

MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32) * 255
STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32) * 255
# EfficientNet-B0 stages (repeats 1, 2, 2, 3, 3; strides 1, 2, 2, 2, 1) -> per-block stride.
B0_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1]
REDUCTION_BLOCKS = {1: 0, 2: 2, 3: 4, 4: 10}
EPS = 1e-3


def _bn(x, w, scope):
    mean, var = w[f"{scope}/moving_mean"], w[f"{scope}/moving_variance"]
    return (x - mean) / tf.sqrt(var + EPS) * w[f"{scope}/gamma"] + w[f"{scope}/beta"]


def _swish(x):
    return x * tf.sigmoid(x)


def _conv(x, w, scope, stride=1, dilation=1):
    y = tf.nn.conv2d(x, w[f"{scope}/kernel"], strides=stride, padding="SAME",
                     dilations=dilation)
    return y + w[f"{scope}/bias"] if f"{scope}/bias" in w else y


def _resize(x, size):
    return tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)


def _mbconv(x, w, scope, stride):
    expand = f"{scope}/tpu_batch_normalization_2/gamma" in w
    inputs = x
    names = (["conv2d", "tpu_batch_normalization", "tpu_batch_normalization_1",
              "conv2d_1", "tpu_batch_normalization_2"] if expand else
             [None, None, "tpu_batch_normalization", "conv2d", "tpu_batch_normalization_1"])
    if expand:
        x = _swish(_bn(_conv(x, w, f"{scope}/{names[0]}"), w, f"{scope}/{names[1]}"))
    x = tf.nn.depthwise_conv2d(x, w[f"{scope}/depthwise_conv2d/depthwise_kernel"],
                               strides=[1, stride, stride, 1], padding="SAME")
    x = _swish(_bn(x, w, f"{scope}/{names[2]}"))
    se = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    se = _conv(_swish(_conv(se, w, f"{scope}/se/conv2d")), w, f"{scope}/se/conv2d_1")
    x = tf.sigmoid(se) * x
    x = _bn(_conv(x, w, f"{scope}/{names[3]}"), w, f"{scope}/{names[4]}")
    if stride == 1 and inputs.shape[-1] == x.shape[-1]:
        x = x + inputs  # drop-connect is inactive in inference
    return x


def encoder(images, w, root="efficientnet-b0"):
    """images float32 [N, H, W, 3] in [0, 255] -> {reduction: feature map}."""
    x = (images - MEAN_RGB) / STDDEV_RGB
    x = _conv(x, w, f"{root}/stem/conv2d", stride=2)
    x = _swish(_bn(x, w, f"{root}/stem/tpu_batch_normalization"))
    reductions = {}
    for i, stride in enumerate(B0_STRIDES):
        x = _mbconv(x, w, f"{root}/blocks_{i}", stride)
        for r, block in REDUCTION_BLOCKS.items():
            if block == i:
                reductions[r] = x
    return reductions


def _unit(x, w, scope, k, dilation=1):
    conv = "conv2d" + (f"_{k}" if k else "")
    bn = "batch_normalization" + (f"_{k}" if k else "")
    return _bn(_swish(_conv(x, w, f"{scope}/{conv}", dilation=dilation)), w, f"{scope}/{bn}")


def rsd(x, skip, w, reduction, width=112):
    scope = f"decode/decode_skip_connections_{reduction - 1}"
    up = _resize(x, tf.shape(skip)[1:3])
    cat = tf.concat([up, skip], axis=-1)
    k = 0
    if up.shape[-1] != width:
        up, k = _unit(up, w, scope, 0), 1
    b0 = _unit(cat, w, scope, k)
    b1 = _unit(cat, w, scope, k + 1, dilation=2)
    b2 = tf.tile(tf.reduce_mean(cat, axis=[1, 2], keepdims=True),
                 [1, tf.shape(cat)[1], tf.shape(cat)[2], 1])
    y = _unit(tf.concat([b0, b1, b2], axis=-1), w, scope, k + 2)
    return y + up


def efficientlab(images, w, rsd_reductions=(2, 4)):
    """-> (logits, probabilities), both float32 [N, H, W, 2] at the input size."""
    images = tf.convert_to_tensor(images, tf.float32)
    reductions = encoder(images, w)
    x = reductions[4]
    for r in sorted(rsd_reductions, reverse=True):
        x = rsd(x, reductions[r], w, r)
    x = _conv(x, w, "decode/final_layer_weights")
    logits = _resize(x, tf.shape(images)[1:3])
    return logits, tf.nn.softmax(logits)
