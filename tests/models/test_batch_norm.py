"""FusedBatchNormalization computes Keras's batch norm (and the decoder's) with the fused op."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.config import InnerConfig
from metaseg.meta.adapt import Adapter
from metaseg.models import EfficientLab
from metaseg.models.batch_norm import FusedBatchNormalization, set_fused
from metaseg.models.layers import DecoderBatchNormalization

C = 5
TOL = dict(rtol=1e-5, atol=1e-5)


def _data(shape=(2, 2, 3, C), seed=1):
    """Few values per channel (n = 12), so the n / (n - 1) correction is 9 % and visible."""
    return np.random.default_rng(seed).normal(2.0, 3.0, size=shape).astype(np.float32)


def _weights(seed=2):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.5, 2.0, C), rng.normal(size=C), rng.normal(size=C),
            rng.uniform(0.5, 2.0, C)]  # gamma, beta, moving mean, moving variance


def _pair(fused_cls=FusedBatchNormalization, **kwargs):
    """(stock Keras layer, fused layer) with the same config and weights."""
    stock = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, **kwargs)
    fused = fused_cls(momentum=0.9, epsilon=1e-3, **kwargs)
    for layer in (stock, fused):
        layer.build((None, None, None, C))
        layer.set_weights([w.astype(np.float32) for w in _weights()])
    return stock, fused


def _output_and_grads(layer, x, training):
    """Output, and gradients of <output, cotangent> wrt the input, gamma and beta."""
    x = tf.constant(x)
    cotangent = tf.constant(np.random.default_rng(3).normal(size=x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * cotangent)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [y.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("training", [True, False])
def test_outputs_gradients_and_statistics_equal_keras(training):
    stock, fused = _pair()
    for step in range(4):  # moving statistics after several updates
        x = _data(seed=10 + step)
        for a, b in zip(_output_and_grads(stock, x, training),
                        _output_and_grads(fused, x, training)):
            np.testing.assert_allclose(b, a, **TOL)
    for a, b in zip(stock.weights, fused.weights):
        assert a.path.split("/")[-1] == b.path.split("/")[-1]
        np.testing.assert_allclose(b.numpy(), a.numpy(), **TOL)
    moved = not np.allclose(fused.moving_variance.numpy(), _weights()[3])
    assert moved == training


def test_fused_op_runs_and_its_variance_is_converted_back_to_the_biased_one():
    """The op's batch variance is n / (n - 1) larger; Keras's moving variance is not."""
    _, fused = _pair()
    x = _data()
    y, _, unbiased, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=fused.gamma, offset=fused.beta, mean=np.zeros(0, np.float32),
        variance=np.zeros(0, np.float32), epsilon=1e-3, is_training=True)
    np.testing.assert_array_equal(fused(x, training=True), y)  # the fused kernel's output
    biased = x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(unbiased, biased * 12 / 11, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(),
                               0.9 * _weights()[3] + 0.1 * biased, rtol=1e-5)


def test_one_value_per_channel_gives_zero_batch_variance_as_keras():
    stock, fused = _pair()
    x = _data((1, 1, 1, C))
    np.testing.assert_allclose(fused(x, training=True), stock(x, training=True), **TOL)
    np.testing.assert_allclose(fused.moving_variance.numpy(), stock.moving_variance.numpy(),
                               **TOL)
    assert np.isfinite(fused.moving_variance.numpy()).all()


@pytest.mark.parametrize("always", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_decoder_batch_norm_fused_equals_its_unfused_computation(always, training):
    layers = []
    for fused in (False, True):
        layer = DecoderBatchNormalization(always_batch_statistics=always)
        layer.build((None, None, None, C))
        layer.set_weights([w.astype(np.float32) for w in _weights()])
        layer.fused = fused
        layers.append(layer)
    for step in range(3):
        x = _data(seed=20 + step)
        for a, b in zip(_output_and_grads(layers[0], x, training),
                        _output_and_grads(layers[1], x, training)):
            np.testing.assert_allclose(b, a, **TOL)
    for a, b in zip(*(layer.weights for layer in layers)):
        np.testing.assert_allclose(b.numpy(), a.numpy(), **TOL)
    # The decoder keeps the unbiased moving variance (its statistics moved only in training).
    assert np.allclose(layers[1].moving_variance.numpy(), _weights()[3]) != training


def test_under_stateless_call_in_tf_function():
    """The inner loop's use: values passed in, updated statistics returned, variables kept."""
    models = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        inputs = keras.Input((None, None, C))
        models.append(keras.Model(inputs, cls(momentum=0.9, name="bn")(inputs)))
    for m in models:
        m.set_weights([w.astype(np.float32) for w in _weights()])
    rng = np.random.default_rng(4)
    trainable = [tf.constant(rng.uniform(0.5, 2.0, C).astype(np.float32)),
                 tf.constant(rng.normal(size=C).astype(np.float32))]
    non_trainable = [tf.constant(rng.normal(size=C).astype(np.float32)),
                     tf.constant(rng.uniform(0.5, 2.0, C).astype(np.float32))]
    x = tf.constant(_data())
    results = []
    for m in models:
        call = tf.function(lambda t, nt, x, training, m=m: m.stateless_call(
            t, nt, x, training=training))
        results.append([call(trainable, non_trainable, x, training) for training in (True,
                                                                                     False)])
        for v, w in zip(m.weights, _weights()):  # variables untouched
            np.testing.assert_allclose(v.numpy(), w.astype(np.float32))
    for (stock_y, stock_nt), (fused_y, fused_nt) in zip(*results):
        np.testing.assert_allclose(fused_y, stock_y, **TOL)
        for a, b in zip(stock_nt, fused_nt):
            np.testing.assert_allclose(b, a, **TOL)
    assert not np.allclose(results[1][0][1][1], non_trainable[1])  # training moved them
    np.testing.assert_array_equal(results[1][1][1][1], non_trainable[1])  # inference did not


def test_xla_compiled_training_step_equals_eager():
    _, fused = _pair()
    x = tf.constant(_data())
    eager = fused(x, training=True).numpy()
    fused.set_weights([w.astype(np.float32) for w in _weights()])
    compiled = tf.function(lambda x: fused(x, training=True), jit_compile=True)(x).numpy()
    np.testing.assert_allclose(compiled, eager, **TOL)


@pytest.mark.parametrize("kwargs,shape,dtype", [
    ({"axis": 1}, (2, C, 3, 3), "float32"),            # channels first
    ({}, (2, 6, C), "float32"),                         # rank 3
    ({"dtype": "mixed_bfloat16"}, (2, 3, 3, C), "float32"),
    ({"center": False}, (2, 3, 3, C), "float32"),
])
def test_other_cases_run_the_parents_computation_exactly(kwargs, shape, dtype):
    stock = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    x = _data(shape).astype(dtype)
    stock.build(x.shape)
    fused.build(x.shape)
    fused.set_weights(stock.get_weights())
    for training in (True, False):
        np.testing.assert_array_equal(
            np.asarray(fused(x, training=training), np.float32),
            np.asarray(stock(x, training=training), np.float32))
    for a, b in zip(stock.weights, fused.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy())


def test_config_is_keras_config_and_keras_file_round_trip(tmp_path):
    stock, fused = _pair()
    assert fused.get_config() == {**stock.get_config(), "name": fused.name}
    inputs = keras.Input((None, None, C))
    model = keras.Model(inputs, fused(inputs))
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[-1], FusedBatchNormalization)
    x = _data()
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))


# -- the whole network ---------------------------------------------------------------------

def _two_networks():
    """The same EfficientLab (skip decoder and ASPP too, so every kind of batch norm) twice,
    one with every batch norm back on the unfused computation."""
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        models.append(EfficientLab(rsd=(2, 4), skip_decoding=True,
                                   spatial_pyramid_pooling=True))
    unfused, fused = models
    assert set_fused(unfused, False) == 45
    for a, b in zip(unfused.weights, fused.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    return unfused, fused


@pytest.fixture(scope="module")
def networks():
    return _two_networks()


def _batch(n=2, size=64, seed=5):
    """At 32 px the deepest batch norms see 8 values per channel and a 1-ulp change of the
    weights already moves the second loss by 2e-4; at 64 px (32 values) by 5e-7."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    fg = (rng.uniform(size=(n, size, size)) > 0.6).astype(np.float32)
    return x, np.stack([1 - fg, fg], -1)


def test_every_batch_norm_of_the_network_is_fused(networks):
    _, fused = networks
    norms = [l for l in fused._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert len(norms) == 45 and all(isinstance(l, FusedBatchNormalization) for l in norms)
    assert all(l.fused for l in norms)


def test_network_outputs_and_first_losses_equal(networks):
    unfused, fused = networks
    x, y = _batch()
    np.testing.assert_allclose(fused(x, training=False), unfused(x, training=False),
                               rtol=1e-4, atol=1e-5)
    inner = InnerConfig(sgd=True, learning_rate=0.0005, loss_name="bce_dice", l2=True)
    xs, ys = tf.constant(np.stack([x] * 3)), tf.constant(np.stack([y] * 3))
    results = []
    for model in (unfused, fused):
        adapter = Adapter(model, inner)
        state, losses = adapter.adapt(adapter.initial_state(), xs, ys, tf.constant(0.0005),
                                      tf.constant(0), tf.constant(3))
        results.append((state, losses.numpy()))
    (state_a, losses_a), (state_b, losses_b) = results
    np.testing.assert_allclose(losses_b, losses_a, rtol=1e-5)
    for a, b in zip(state_a.non_trainable, state_b.non_trainable):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for a, b in zip(state_a.trainable, state_b.trainable):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_network_keras_file_round_trip_keeps_fused_layers(tmp_path, networks):
    _, fused = networks
    path = str(tmp_path / "efficientlab.keras")
    fused.save(path)
    loaded = keras.models.load_model(path)
    assert ([(v.path, tuple(v.shape)) for v in loaded.weights]
            == [(v.path, tuple(v.shape)) for v in fused.weights])
    assert sum(isinstance(l, FusedBatchNormalization) for l in loaded._flatten_layers()) == 45
    x, _ = _batch(1)
    np.testing.assert_array_equal(loaded(x, training=False), fused(x, training=False))
