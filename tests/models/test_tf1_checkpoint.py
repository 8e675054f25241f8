"""Loading the original's TF1 checkpoints: exact outputs, ignored bookkeeping, bad input."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.errors import CheckpointError, ConfigError
from metaseg.models import EfficientLab, is_tf1_checkpoint, load_tf1_checkpoint
from tests.models import tf1_fixtures, tf1_reference


@pytest.fixture(scope="module")
def loaded_model(tf1_checkpoint_dir):
    model = EfficientLab(rsd=(2, 4))
    assert load_tf1_checkpoint(model, tf1_checkpoint_dir) == 247
    return model


@pytest.mark.parametrize("size,batch", [(64, 2), (224, 1)])
def test_probabilities_equal_the_original_graph(loaded_model, tf1_weights, size, batch):
    """Acceptance: inference-mode probabilities within 1e-4 of an independent plain-TF
    forward pass reading the checkpoint's values by their TF1 names."""
    x = np.random.default_rng(size).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    ref_logits, ref_probs = tf1_reference.efficientlab(x, tf1_weights)
    probs = loaded_model(x, training=False).numpy()
    assert np.max(np.abs(probs - ref_probs.numpy())) < 1e-4
    logits = loaded_model.logits_model(x, training=False).numpy()
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
    assert ref_probs.numpy()[..., 1].std() > 0.02  # a non-trivial output, not saturated


def test_values_land_on_the_right_variables(loaded_model, tf1_weights):
    w = tf1_weights
    np.testing.assert_array_equal(loaded_model.get_layer("final_layer_weights").kernel.numpy(),
                                  w["decode/final_layer_weights/kernel"])
    np.testing.assert_array_equal(
        loaded_model.encoder.get_layer("block2a_dwconv").kernel.numpy(),
        w["efficientnet-b0/blocks_1/depthwise_conv2d/depthwise_kernel"])
    np.testing.assert_array_equal(
        loaded_model.get_layer("rsd2_fuse_bn").moving_variance.numpy(),
        w["decode/decode_skip_connections_1/batch_normalization_2/moving_variance"])


def test_prefix_and_foreign_absolute_path(tmp_path, tf1_checkpoint_dir, tf1_weights):
    prefix = str(tf1_checkpoint_dir / "model.ckpt-7")
    assert is_tf1_checkpoint(prefix) and is_tf1_checkpoint(tf1_checkpoint_dir)
    # a 'checkpoint' file with the authors' absolute path still finds the file beside it
    moved = tmp_path / "moved"
    prefix2 = tf1_fixtures.save_tf1_checkpoint(moved, tf1_weights, step=3)
    (moved / "checkpoint").write_text('model_checkpoint_path: "/home/author/ckpt/model.ckpt-3"\n')
    model = EfficientLab(rsd=(2, 4))
    assert load_tf1_checkpoint(model, moved) == 247
    assert load_tf1_checkpoint(model, prefix2 + ".index") == 247


def test_skip_final_layer(tf1_checkpoint_dir, tf1_weights):
    keras.utils.set_random_seed(5)
    model = EfficientLab(rsd=(2, 4))
    before = model.get_layer("final_layer_weights").kernel.numpy()
    assert load_tf1_checkpoint(model, tf1_checkpoint_dir, skip_final_layer=True) == 245
    np.testing.assert_array_equal(model.get_layer("final_layer_weights").kernel.numpy(), before)
    np.testing.assert_array_equal(model.get_layer("rsd4_fuse_conv").bias.numpy(),
                                  tf1_weights["decode/decode_skip_connections_3/conv2d_2/bias"])


def test_encoder_only_ignores_everything_else(tmp_path, tf1_weights):
    """An ImageNet EfficientNet checkpoint: blocks past the cut, a head, EMA shadows."""
    encoder = {n: v for n, v in tf1_weights.items() if n.startswith("efficientnet-b0/")}
    extra = {"efficientnet-b0/blocks_11/conv2d/kernel": np.zeros((1, 1, 112, 672), np.float32),
             "efficientnet-b0/head/conv2d/kernel": np.zeros((1, 1, 320, 1280), np.float32),
             "efficientnet-b0/stem/conv2d/kernel/ExponentialMovingAverage":
                 np.zeros((3, 3, 3, 32), np.float32)}
    tf1_fixtures.save_tf1_checkpoint(tmp_path / "imagenet", encoder, extra=extra)
    model = EfficientLab(rsd=(4,))
    decoder_before = model.get_layer("rsd4_fuse_conv").kernel.numpy()
    assert load_tf1_checkpoint(model, tmp_path / "imagenet", encoder_only=True) == 209
    np.testing.assert_array_equal(model.encoder.get_layer("stem_conv").kernel.numpy(),
                                  tf1_weights["efficientnet-b0/stem/conv2d/kernel"])
    np.testing.assert_array_equal(model.get_layer("rsd4_fuse_conv").kernel.numpy(),
                                  decoder_before)


@pytest.mark.parametrize("make", ["missing", "empty_dir"])
def test_no_checkpoint(tmp_path, make, published_model):
    path = tmp_path / "nothing"
    if make == "empty_dir":
        path.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_tf1_checkpoint(published_model, path)
    assert not is_tf1_checkpoint(path)


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


def test_names_the_model_lacks(tf1_checkpoint_dir):
    with pytest.raises(CheckpointError) as info:
        load_tf1_checkpoint(EfficientLab(rsd=(4,)), tf1_checkpoint_dir)
    message = _one_line(info)
    assert "not in the model: 18 (" in message and "(8 more)" in message
    assert "decode/decode_skip_connections_1/" in message and "--rsd" in message
    assert "/Adam" not in message and "beta1_power" not in message


def test_names_the_model_needs_but_are_missing(tmp_path, tf1_weights):
    partial = {n: v for n, v in tf1_weights.items() if "blocks_10/" not in n}
    tf1_fixtures.save_tf1_checkpoint(tmp_path / "partial", partial)
    with pytest.raises(CheckpointError) as info:
        load_tf1_checkpoint(EfficientLab(rsd=(2, 4)), tmp_path / "partial")
    message = _one_line(info)
    assert "missing from the checkpoint: 19 (efficientnet-b0/blocks_10/" in message
    assert "(9 more)" in message and "--feature_extractor_name" in message


def test_shape_mismatch_names_both_shapes_and_the_flag(tmp_path, tf1_weights):
    weights = dict(tf1_weights)
    name = "decode/decode_skip_connections_3/conv2d_1/kernel"
    weights[name] = np.zeros((3, 3, 224, 100), np.float32)
    tf1_fixtures.save_tf1_checkpoint(tmp_path / "shape", weights)
    with pytest.raises(CheckpointError) as info:
        load_tf1_checkpoint(EfficientLab(rsd=(2, 4)), tmp_path / "shape")
    message = _one_line(info)
    assert name in message and "[3, 3, 224, 100]" in message and "[3, 3, 224, 112]" in message
    assert "--rsd" in message


def test_other_backbone(tf1_checkpoint_dir):
    with pytest.raises(CheckpointError, match="--feature_extractor_name efficientnet-b0"):
        load_tf1_checkpoint(EfficientLab(backbone="efficientnet-b3"), tf1_checkpoint_dir)


def test_is_tf1_checkpoint_rejects_other_formats(tmp_path):
    ckpt = tf.train.Checkpoint(v=tf.Variable(1.0))
    prefix = ckpt.save(str(tmp_path / "tf2" / "ckpt"))
    assert os.path.exists(prefix + ".index")
    assert not is_tf1_checkpoint(tmp_path / "tf2")
    assert not is_tf1_checkpoint(prefix)
    weights = tmp_path / "x.weights.h5"
    weights.write_bytes(b"not a checkpoint")
    assert not is_tf1_checkpoint(weights)


def test_original_aspp_checkpoint_is_explained(tmp_path, tf1_weights):
    """The original's pooled ASPP branch had a [1, 1, 1, D] kernel (it convolved the
    channel means laid out spatially); we build the documented branch and say so."""
    model = EfficientLab(rsd=(2, 4), spatial_pyramid_pooling=True)
    weights = dict(tf1_weights)
    aspp = "decode/spatial_pyramid_pooling"
    for scope, layer in (("branch_0/", "aspp_branch0_conv"), ("branch_1/", "aspp_branch1_conv"),
                         ("branch_2/", "aspp_branch2_conv"), ("", "aspp_project_conv")):
        conv = model.get_layer(layer)
        weights[f"{aspp}/{scope}conv2d/kernel"] = conv.kernel.numpy()
        weights[f"{aspp}/{scope}conv2d/bias"] = conv.bias.numpy()
    weights[f"{aspp}/branch_2/conv2d/kernel"] = np.zeros((1, 1, 1, 112), np.float32)
    tf1_fixtures.save_tf1_checkpoint(tmp_path / "aspp", weights)
    with pytest.raises(CheckpointError, match=r"ASPP pooled branch.*\(a bug\)"):
        load_tf1_checkpoint(model, tmp_path / "aspp")


def test_only_efficientlab_models(tf1_checkpoint_dir):
    images = keras.Input((None, None, 3))
    other = keras.Model(images, keras.layers.Conv2D(2, 1)(images))
    with pytest.raises(ConfigError, match="--model_name efficientlab"):
        load_tf1_checkpoint(other, tf1_checkpoint_dir)
