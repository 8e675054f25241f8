"""The small layers: corner-aligned resize, decoder batch norm, normalisation, tiled mean."""
import numpy as np
import pytest
import tensorflow as tf

from metaseg.errors import ConfigError
from metaseg.models.layers import (AlignedResize, DecoderBatchNormalization,
                                   ImageNetNormalization, SpatialMeanTile)


def aligned_bilinear_numpy(x, out_h, out_w):
    """Corner-aligned bilinear sampling: output i reads input i * (in - 1) / (out - 1)."""
    n, h, w, c = x.shape
    out = np.zeros((n, out_h, out_w, c), np.float64)
    for i in range(out_h):
        y = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0, fy = int(np.floor(y)), y - np.floor(y)
        y1 = min(y0 + 1, h - 1)
        for j in range(out_w):
            s = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0, fx = int(np.floor(s)), s - np.floor(s)
            x1 = min(x0 + 1, w - 1)
            top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
            bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("in_size,ref_size,divisor", [(4, 16, 1), (7, 3, 1), (5, 5, 1),
                                                        (4, 64, 4)])
def test_aligned_resize_matches_corner_aligned_sampling(in_size, ref_size, divisor):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, in_size, in_size, 3)).astype(np.float32)
    ref = np.zeros((2, ref_size, ref_size, 1), np.float32)
    out = np.asarray(AlignedResize(divisor=divisor)([x, ref]))
    target = ref_size // divisor
    assert out.shape == (2, target, target, 3)
    np.testing.assert_allclose(out, aligned_bilinear_numpy(x, target, target), atol=1e-5)
    # corners are copied exactly, unlike half-pixel-centre resizing
    np.testing.assert_array_equal(out[:, 0, 0], x[:, 0, 0])
    np.testing.assert_array_equal(out[:, -1, -1], x[:, -1, -1])


def _bn(always=False):
    layer = DecoderBatchNormalization(always_batch_statistics=always)
    layer.build((None, 4, 4, 3))
    layer.gamma.assign([1.5, 0.5, 2.0])
    layer.beta.assign([0.1, -0.2, 0.3])
    layer.moving_mean.assign([0.5, -0.5, 1.0])
    layer.moving_variance.assign([2.0, 0.5, 1.0])
    return layer


def _data():
    return np.random.default_rng(1).normal(2.0, 3.0, size=(2, 4, 4, 3)).astype(np.float32)


def test_decoder_batch_norm_training_uses_batch_stats_and_unbiased_moving_variance():
    layer, x = _bn(), _data()
    out = np.asarray(layer(x, training=True))
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, for normalising
    expected = (x - mean) / np.sqrt(var + 1e-3) * [1.5, 0.5, 2.0] + [0.1, -0.2, 0.3]
    np.testing.assert_allclose(out, expected, atol=1e-4)
    unbiased = x.var(axis=(0, 1, 2), ddof=1)  # n = 32 values per channel
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               0.99 * np.array([0.5, -0.5, 1.0]) + 0.01 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               0.99 * np.array([2.0, 0.5, 1.0]) + 0.01 * unbiased, rtol=1e-5)


def test_decoder_batch_norm_inference_uses_moving_stats_and_changes_nothing():
    layer, x = _bn(), _data()
    out = np.asarray(layer(x, training=False))
    expected = ((x - [0.5, -0.5, 1.0]) / np.sqrt(np.array([2.0, 0.5, 1.0]) + 1e-3)
                * [1.5, 0.5, 2.0] + [0.1, -0.2, 0.3])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(layer.moving_variance.numpy(), [2.0, 0.5, 1.0])


def test_always_batch_statistics_normalises_with_batch_but_updates_only_in_training():
    layer, x = _bn(always=True), _data()
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - mean) / np.sqrt(var + 1e-3) * [1.5, 0.5, 2.0] + [0.1, -0.2, 0.3]
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected, atol=1e-4)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), [0.5, -0.5, 1.0])
    layer(x, training=True)
    assert not np.allclose(layer.moving_mean.numpy(), [0.5, -0.5, 1.0])


def test_imagenet_normalization_values():
    x = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    out = np.asarray(ImageNetNormalization()(np.tile(x, (1, 16, 16, 1))))
    expected = (np.array([0.0, 127.5, 255.0]) - np.array([0.485, 0.456, 0.406]) * 255) / (
        np.array([0.229, 0.224, 0.225]) * 255)
    np.testing.assert_allclose(out[0, 5, 7], expected, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 60, 64, 3), (1, 64, 40, 3)])
def test_image_size_not_multiple_of_16_is_one_clear_config_error(shape):
    with pytest.raises(ConfigError) as info:
        ImageNetNormalization()(np.zeros(shape, np.float32))
    message = str(info.value)
    assert "multiple of 16" in message and "\n" not in message
    assert f"{shape[1]}x{shape[2]}" in message


def test_spatial_mean_tile():
    x = np.random.default_rng(2).normal(size=(2, 3, 5, 4)).astype(np.float32)
    out = np.asarray(SpatialMeanTile()(x))
    assert out.shape == x.shape
    np.testing.assert_allclose(out[:, 2, 4], x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(out[:, 0, 0], out[:, 1, 3])


def test_decoder_batch_norm_matches_tf1_fused_batch_norm():
    """The original decoder's layers were fused: same output, unbiased variance update."""
    layer, x = _bn(), _data()
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    old_mean, old_var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    y, batch_mean, batch_var, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=gamma, offset=beta, mean=np.zeros(0, np.float32),
        variance=np.zeros(0, np.float32), epsilon=1e-3, is_training=True)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), y.numpy(), atol=1e-5)
    # TF1's moving-average update: moving -= (moving - batch) * (1 - momentum)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               old_var - (old_var - batch_var.numpy()) * 0.01, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               old_mean - (old_mean - batch_mean.numpy()) * 0.01, rtol=1e-5)
