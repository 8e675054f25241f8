"""EfficientLab: structure, config round trip, modes, and the engine's stateless contract."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.errors import ConfigError
from metaseg.models import EfficientLab
from metaseg.models.layers import DecoderBatchNormalization


def _images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_published_configuration_counts(published_model):
    m = published_model
    assert sum(int(np.prod(v.shape)) for v in m.trainable_variables) == 2_071_714
    assert len(m.weights) == 247 and len(m.trainable_variables) == 169
    assert len(m.non_trainable_weights) == 78  # moving statistics of 39 batch norms
    decoder_bns = [l for l in m.layers if isinstance(l, DecoderBatchNormalization)]
    encoder_bns = [l for l in m.encoder.layers
                   if isinstance(l, keras.layers.BatchNormalization)]
    assert len(decoder_bns) == 6 and len(encoder_bns) == 33
    assert not any(isinstance(l, DecoderBatchNormalization) for l in encoder_bns)


def test_probabilities_and_logits_at_64px(published_model):
    x = _images()
    probs = np.asarray(published_model(x, training=False))
    logits = np.asarray(published_model.logits_model(x, training=False))
    assert probs.shape == logits.shape == (2, 64, 64, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, tf.nn.softmax(logits).numpy(), atol=1e-6)


def test_any_multiple_of_16_and_not_square(published_model):
    out = published_model(_images(1, 32), training=False)
    assert out.shape == (1, 32, 32, 2)
    x = np.zeros((1, 48, 80, 3), np.float32)
    assert published_model(x, training=False).shape == (1, 48, 80, 2)


def test_logits_model_shares_variables_in_order(published_model):
    m, lm = published_model, published_model.logits_model
    for ours, theirs in ((m.trainable_variables, lm.trainable_variables),
                         (m.non_trainable_variables, lm.non_trainable_variables)):
        assert len(ours) == len(theirs)
        assert all(a is b for a, b in zip(ours, theirs))
    assert lm not in m.layers  # not a sublayer: model.layers / weight files unchanged


def test_config_round_trip_and_deterministic_names(published_model):
    config = published_model.get_config()
    assert config == {"name": "efficientlab", "trainable": True,
                      "backbone": "efficientnet-b0", "rsd": [2, 4],
                      "spatial_pyramid_pooling": False, "skip_decoding": False,
                      "final_layer_dropout_rate": 0.0, "rsd_residual": True,
                      "backbone_weights": None}
    clone = EfficientLab.from_config(config)
    assert clone.get_config() == config
    assert [l.name for l in clone.layers] == [l.name for l in published_model.layers]
    assert ([(v.path, tuple(v.shape)) for v in clone.weights]
            == [(v.path, tuple(v.shape)) for v in published_model.weights])


def test_weights_file_round_trip(tmp_path, published_model):
    path = str(tmp_path / "m.weights.h5")
    published_model.save_weights(path)
    other = EfficientLab(rsd=(2, 4))
    other.load_weights(path)
    x = _images(1)
    np.testing.assert_array_equal(other(x, training=False), published_model(x, training=False))


@pytest.mark.parametrize("rsd", [None, ()])
def test_no_rsd(rsd):
    m = EfficientLab(rsd=rsd)
    assert not [l.name for l in m.layers if l.name.startswith("rsd")]
    assert m.get_config()["rsd"] == []
    assert m(_images(1), training=False).shape == (1, 64, 64, 2)


def test_decoder_variants_build_and_run():
    m = EfficientLab(rsd=(1, 3), spatial_pyramid_pooling=True, skip_decoding=True,
                     final_layer_dropout_rate=0.3)
    names = {l.name for l in m.layers}
    assert {"aspp_project_conv", "skip_sep2_pw_bn", "rsd3_project_conv", "rsd3_add",
            "rsd1_fuse_bn", "final_dropout"} <= names
    # skip decoding widens the map to 112 + 56, so the RSD projects it back to 112
    assert m.get_layer("rsd3_project_conv").kernel.shape == (1, 1, 168, 112)
    assert m.get_layer("rsd3_branch0_conv").kernel.shape == (1, 1, 168 + 40, 112)
    out = m(_images(2), training=True)
    assert out.shape == (2, 64, 64, 2)
    assert EfficientLab.from_config(m.get_config()).get_config() == m.get_config()


def test_rsd_without_residual_connections():
    m = EfficientLab(rsd=(4,), skip_decoding=True, rsd_residual=False)
    names = {l.name for l in m.layers}
    assert "rsd4_fuse_bn" in names
    assert not {"rsd4_add", "rsd4_project_conv"} & names  # no residual path to project
    assert m(_images(1), training=False).shape == (1, 64, 64, 2)


@pytest.mark.parametrize("kwargs,flag", [({"backbone": "resnet"}, "--feature_extractor_name"),
                                         ({"rsd": (2, 5)}, "--rsd"),
                                         ({"rsd": (2, 2)}, "--rsd"),
                                         ({"final_layer_dropout_rate": 1.0},
                                          "--final_layer_dropout_rate")])
def test_bad_arguments(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        EfficientLab(**kwargs)


def test_image_size_error(published_model):
    with pytest.raises(ConfigError, match="not a multiple of 16"):
        published_model(np.zeros((1, 72, 72, 3), np.float32))


def test_dropout_only_in_training():
    keras.utils.set_random_seed(3)
    m = EfficientLab(final_layer_dropout_rate=0.5)
    x = _images(2, 32)
    a, b = m(x, training=False), m(x, training=False)
    np.testing.assert_array_equal(a, b)
    c, d = m(x, training=True), m(x, training=True)
    assert not np.allclose(c, d)


def test_stateless_call_in_tf_function_returns_updated_state():
    """The engine's use: logits_model.stateless_call(trainable, non_trainable, x, training)."""
    keras.utils.set_random_seed(4)
    m = EfficientLab(final_layer_dropout_rate=0.5)
    lm = m.logits_model
    trainable = [tf.convert_to_tensor(v) for v in m.trainable_variables]
    non_trainable = [tf.convert_to_tensor(v) for v in m.non_trainable_variables]
    seeds = [i for i, v in enumerate(m.non_trainable_variables) if "seed" in v.path]
    stats = [i for i, v in enumerate(m.non_trainable_variables) if "moving_" in v.path]
    assert len(seeds) == 7 and len(stats) == 78  # 6 stochastic depth + final dropout

    @tf.function
    def step(t, nt, x, training):
        return lm.stateless_call(t, nt, x, training=training)

    x = tf.constant(_images(4, 32))
    logits, new = step(trainable, non_trainable, x, True)
    assert logits.shape == (4, 32, 32, 2)
    for i in stats + seeds:  # every moving statistic and every seed state moved
        assert not np.array_equal(new[i], non_trainable[i]), m.non_trainable_variables[i].path
    logits2, newer = step(trainable, new, x, True)
    assert not np.allclose(logits, logits2)  # fresh dropout masks from the advanced seeds
    for v, old in zip(m.non_trainable_variables, non_trainable):  # variables untouched
        np.testing.assert_array_equal(v.numpy(), old)
    _, unchanged = step(trainable, non_trainable, x, False)
    for a, b in zip(unchanged, non_trainable):
        np.testing.assert_array_equal(a, b)


def test_final_layer_is_named_as_in_the_original(published_model):
    """The engine finds the layer --do_not_restore_final_layer_weights skips by this name."""
    layer = published_model.get_layer(published_model.final_layer_name)
    assert published_model.final_layer_name == "final_layer_weights"
    assert layer.kernel.shape == (1, 1, 112, 2) and layer.bias.shape == (2,)
