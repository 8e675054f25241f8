"""Reptile and FOMAML: closed forms on a linear model, and the properties of the outer step."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.config import InnerConfig
from metaseg.meta import weights
from metaseg.meta.adapt import Adapter
from metaseg.meta.algorithms import annealed_meta_step, make_algorithm, outer_update

LR, K = 0.1, 5
TARGET = np.random.default_rng(0).normal(size=(1, 1, 3, 2)).astype(np.float32)


def _linear_adapter():
    """logits = x @ W (1x1 conv, no bias); loss 0.5 ||W - C||^2, so SGD has a closed form."""
    keras.utils.set_random_seed(7)
    images = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(2, 1, use_bias=False, name="w")(images)
    model = keras.Model(images, logits)

    def quadratic(trainable, logits, labels):
        return 0.5 * tf.reduce_sum(tf.square(trainable[0] - TARGET)) + 0.0 * tf.reduce_sum(logits)

    return Adapter(model, InnerConfig(sgd=True, learning_rate=LR), loss_fn=quadratic)


def _episode(steps=K):
    return {"x": tf.zeros([steps, 1, 4, 4, 3]), "y": tf.zeros([steps, 1, 4, 4, 2]),
            "task": tf.constant(0)}


def _direction(name, adapter, episode):
    state = adapter.initial_state()
    direction, end, step_losses = make_algorithm(name).task_direction(
        adapter, state, episode, tf.constant(LR), tf.constant(K))
    return state, direction, end, step_losses


def test_reptile_direction_matches_closed_form():
    adapter = _linear_adapter()
    state, direction, _, step_losses = _direction("reptile", adapter, _episode())
    w0 = state.trainable[0].numpy()
    # SGD on 0.5||w - c||^2: w_k = c + (1 - lr)^k (w_0 - c).
    want = (TARGET + (1 - LR) ** K * (w0 - TARGET)) - w0
    np.testing.assert_allclose(direction[0].numpy(), want, rtol=1e-5, atol=1e-6)
    assert step_losses.shape == (K,)


def test_fomaml_direction_matches_closed_form_last_step_change():
    adapter = _linear_adapter()
    state, direction, _, _ = _direction("fomaml", adapter, _episode())
    w0 = state.trainable[0].numpy()
    # w_K - w_{K-1} = -lr (w_{K-1} - c) = -lr (1 - lr)^(K-1) (w_0 - c).
    want = -LR * (1 - LR) ** (K - 1) * (w0 - TARGET)
    np.testing.assert_allclose(direction[0].numpy(), want, rtol=1e-5, atol=1e-7)


def test_fomaml_direction_is_the_last_step_of_a_plain_keras_sgd_loop():
    """A non-linear loss with a different batch per step, against K steps of SGD written
    with a GradientTape on the Keras model itself (no Adapter, no stateless call)."""
    keras.utils.set_random_seed(3)
    images = keras.Input((None, None, 3))
    model = keras.Model(images, keras.layers.Conv2D(2, 1, name="w")(images))

    def cross_entropy(trainable, logits, labels):
        del trainable
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))

    rng = np.random.default_rng(1)
    x = rng.normal(size=(K, 2, 4, 4, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, size=(K, 2, 4, 4))]
    adapter = Adapter(model, InnerConfig(sgd=True, learning_rate=LR), loss_fn=cross_entropy)
    state = adapter.initial_state()
    direction, _, step_losses = make_algorithm("fomaml").task_direction(
        adapter, state, {"x": tf.constant(x), "y": tf.constant(y)}, tf.constant(LR),
        tf.constant(K))

    losses = []
    for k in range(K):  # plain SGD on the model's own variables
        before = [v.numpy().copy() for v in model.trainable_variables]
        with tf.GradientTape() as tape:
            loss = cross_entropy(None, model(x[k]), y[k])
        grads = tape.gradient(loss, model.trainable_variables)
        for var, grad in zip(model.trainable_variables, grads):
            var.assign_sub(LR * grad)
        losses.append(float(loss))
    last_change = [v.numpy() - b for v, b in zip(model.trainable_variables, before)]
    for got, want in zip(direction, last_change, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(step_losses.numpy(), losses, rtol=1e-5)
    assert np.abs(last_change[0]).max() > 1e-4  # the step moved the weights


def test_fomaml_tail_batch_is_the_last_step():
    """With a tail, K-1 steps use x and the single last step uses tail_x."""
    adapter = _linear_adapter()
    episode = {"x": tf.zeros([K - 1, 2, 4, 4, 3]), "y": tf.zeros([K - 1, 2, 4, 4, 2]),
               "tail_x": tf.zeros([3, 4, 4, 3]), "tail_y": tf.zeros([3, 4, 4, 2])}
    state, direction, _, step_losses = _direction("fomaml", adapter, episode)
    w0 = state.trainable[0].numpy()
    np.testing.assert_allclose(direction[0].numpy(),
                               -LR * (1 - LR) ** (K - 1) * (w0 - TARGET), rtol=1e-5, atol=1e-7)
    assert step_losses.shape == (K,)


def test_reptile_meta_step_one_equals_adapted_weights_and_zero_changes_nothing():
    adapter = _linear_adapter()
    state, direction, end, _ = _direction("reptile", adapter, _episode())
    one = outer_update(state.trainable, direction, 1, tf.constant(1.0))
    np.testing.assert_allclose(one[0].numpy(), end.trainable[0].numpy(), rtol=1e-6, atol=1e-7)
    zero = outer_update(state.trainable, direction, 1, tf.constant(0.0))
    np.testing.assert_array_equal(zero[0].numpy(), state.trainable[0].numpy())


def test_outer_update_of_three_tasks_is_the_mean_of_their_directions():
    theta = [tf.constant(np.ones((2, 2), np.float32))]
    dirs = [[tf.constant(np.full((2, 2), v, np.float32))] for v in (1.0, 2.0, 6.0)]
    direction_sum = [tf.constant(np.full((2, 2), 1.0 + 2.0 + 6.0, np.float32))]
    got = outer_update(theta, direction_sum, 3, tf.constant(0.5))
    np.testing.assert_allclose(got[0].numpy(), 1 + 0.5 * 3.0)
    single = [weights.add(theta, weights.scale(d, 0.5))[0].numpy() for d in dirs]
    np.testing.assert_allclose(got[0].numpy(), np.mean(single, axis=0), rtol=1e-6)


def test_outer_update_rounds_as_the_earlier_compiled_mean_did():
    """theta + sum * (epsilon * (1/M)) in float32, for a meta-batch of 3 (where a division
    by 3 and a product with its reciprocal round differently)."""
    rng = np.random.default_rng(2)
    theta = rng.normal(size=1000).astype(np.float32)
    dirs = [rng.normal(size=1000).astype(np.float32) for _ in range(3)]
    total = (dirs[0] + dirs[1]) + dirs[2]
    got = outer_update([theta], [tf.constant(total)], tf.constant(3.0),
                       tf.constant(0.7))[0].numpy()
    np.testing.assert_array_equal(got, theta + total * (np.float32(0.7) * np.float32(1 / 3)))


def test_meta_step_annealing_is_linear():
    assert annealed_meta_step(0, 100, 0.1, 1e-5) == pytest.approx(0.1)
    assert annealed_meta_step(50, 100, 0.1, 1e-5) == pytest.approx(0.5 * 0.1 + 0.5 * 1e-5)
    assert annealed_meta_step(100, 100, 0.1, 1e-5) == pytest.approx(1e-5)


def test_unknown_algorithm_is_rejected():
    with pytest.raises(ValueError, match="reptile"):
        make_algorithm("maml++")
