"""The compiled adaptation against an eager Keras reference, purity and retracing."""
import keras
import numpy as np
import tensorflow as tf

from metaseg.config import InnerConfig
from metaseg.meta.adapt import Adapter, predict_queries
from metaseg.models import losses
from tests.meta.conftest import tiny_logits_model

RNG = np.random.default_rng(3)


def _batches(k, b, size=16):
    x = RNG.uniform(0, 255, size=(k, b, size, size, 3)).astype(np.float32)
    fg = (RNG.uniform(size=(k, b, size, size)) > 0.6).astype(np.float32)
    y = np.stack([1 - fg, fg], axis=-1)
    return tf.constant(x), tf.constant(y)


def _reference_sgd(model, x, y, lr):
    """K eager steps on the real variables with Keras's own SGD (independent of Adapter)."""
    opt = keras.optimizers.SGD(learning_rate=lr)
    step_losses = []
    for k in range(x.shape[0]):
        with tf.GradientTape() as tape:
            logits = model(x[k], training=True)
            loss = losses.segmentation_loss(logits, y[k], loss_name="cross_entropy")
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        step_losses.append(float(loss))
    return [v.numpy() for v in model.trainable_variables], \
        [v.numpy() for v in model.non_trainable_variables], step_losses


def test_adaptation_equals_eager_keras_sgd_steps():
    x, y = _batches(4, 3)
    model = tiny_logits_model(seed=1)
    adapter = Adapter(model, InnerConfig(sgd=True, learning_rate=0.05))
    end, step_losses = adapter.adapt(adapter.initial_state(), x, y, tf.constant(0.05),
                                     tf.constant(0), tf.constant(4))
    ref_w, ref_nt, ref_losses = _reference_sgd(tiny_logits_model(seed=1), x, y, 0.05)
    for got, want in zip(end.trainable, ref_w):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    for got, want in zip(end.non_trainable, ref_nt):  # batch-norm moving statistics
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(step_losses.numpy(), ref_losses, rtol=1e-4)


def test_adaptation_is_pure_and_assign_writes_back():
    x, y = _batches(2, 2)
    model = tiny_logits_model(seed=2)
    before = [v.numpy().copy() for v in model.variables]
    adapter = Adapter(model, InnerConfig())
    end, _ = adapter.adapt(adapter.initial_state(), x, y, tf.constant(0.01), tf.constant(0),
                           tf.constant(2))
    for var, old in zip(model.variables, before):
        np.testing.assert_array_equal(var.numpy(), old)
    adapter.assign(end)
    for var, value in zip(model.trainable_variables, end.trainable):
        np.testing.assert_array_equal(var.numpy(), value.numpy())
    assert not np.array_equal(model.trainable_variables[0].numpy(), before[0])


def test_no_retracing_across_step_counts_batch_sizes_and_learning_rates():
    model = tiny_logits_model(seed=3)
    adapter = Adapter(model, InnerConfig(sgd=True))
    state = adapter.initial_state()
    for k, b, lr in ((3, 2, 0.1), (1, 5, 0.01), (4, 1, 0.5)):
        x, y = _batches(k, b)
        state, step_losses = adapter.adapt(state, x, y, tf.constant(lr), tf.constant(0),
                                           tf.constant(k))
        assert step_losses.shape == (k,)
    assert adapter.adapt.experimental_get_tracing_count() == 1


def test_weight_decay_multiplies_before_each_step():
    """With a zero loss, K steps of decay r leave r**K times the weights."""
    model = tiny_logits_model(seed=4)
    zero_loss = lambda trainable, logits, labels: 0.0 * tf.reduce_sum(logits)  # noqa: E731
    adapter = Adapter(model, InnerConfig(sgd=True, weight_decay=0.5), loss_fn=zero_loss)
    x, y = _batches(3, 1)
    start = adapter.initial_state()
    end, _ = adapter.adapt(start, x, y, tf.constant(0.1), tf.constant(0), tf.constant(3))
    for got, old in zip(end.trainable, start.trainable):
        np.testing.assert_allclose(got.numpy(), old.numpy() * 0.125, rtol=1e-6)


def test_predict_gives_probabilities_in_inference_mode():
    model = tiny_logits_model(seed=5)
    adapter = Adapter(model, InnerConfig())
    x, _ = _batches(1, 3)
    probs = adapter.predict(adapter.initial_state(), x[0]).numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    want = tf.nn.softmax(model(x[0], training=False)).numpy()
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)


def test_xla_compiled_adaptation_computes_the_same_function():
    x, y = _batches(2, 2)
    plain = Adapter(tiny_logits_model(seed=6), InnerConfig(sgd=True, learning_rate=0.05))
    xla = Adapter(tiny_logits_model(seed=6), InnerConfig(sgd=True, learning_rate=0.05,
                                                         jit_compile=True))
    args = (x, y, tf.constant(0.05), tf.constant(0), tf.constant(2))
    end_plain, losses_plain = plain.adapt(plain.initial_state(), *args)
    end_xla, losses_xla = xla.adapt(xla.initial_state(), *args)
    np.testing.assert_allclose(losses_xla.numpy(), losses_plain.numpy(), rtol=1e-4)
    for a, b in zip(end_xla.trainable, end_plain.trainable):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_predict_queries_feeds_each_query_after_the_support_set():
    adapter = Adapter(tiny_logits_model(seed=4), InnerConfig(sgd=True))
    rng = np.random.default_rng(4)
    support_x, query_x = (tf.constant(rng.uniform(0, 255, (n, 16, 16, 3)), tf.float32)
                          for n in (3, 4))
    state, calls = adapter.initial_state(), []

    def predict(state, images):  # records what the network is fed
        calls.append(images.shape[0])
        return adapter.predict(state, images)

    probs = predict_queries(predict, state, support_x, query_x, transductive=False).numpy()
    assert probs.shape == (4, 16, 16, 2) and calls == [4] * 4  # 3 support images + 1 query
    for i in range(4):  # its own output, the last of the batch
        alone = adapter.predict(state, tf.concat([support_x, query_x[i:i + 1]], 0))[-1]
        assert np.array_equal(probs[i], alone.numpy())
    calls.clear()
    batch = predict_queries(predict, state, support_x, query_x, transductive=True).numpy()
    assert calls == [4] and np.array_equal(batch, adapter.predict(state, query_x).numpy())
    # inside a compiled function, for a query count unknown when it is traced
    compiled = tf.function(
        lambda s, sx, qx: predict_queries(adapter._predict, s, sx, qx, transductive=False),
        input_signature=[tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), state),
                         tf.TensorSpec([None, 16, 16, 3]), tf.TensorSpec([None, 16, 16, 3])])
    np.testing.assert_allclose(compiled(state, support_x, query_x).numpy(), probs, atol=1e-6)
