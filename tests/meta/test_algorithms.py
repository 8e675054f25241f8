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


def test_fomaml_direction_equals_the_last_steps_change():
    adapter = _linear_adapter()
    state, direction, end, _ = _direction("fomaml", adapter, _episode())
    before_last, _ = adapter.adapt(state, _episode()["x"][:-1], _episode()["y"][:-1],
                                   tf.constant(LR), tf.constant(0), tf.constant(K))
    np.testing.assert_allclose(direction[0].numpy(),
                               (end.trainable[0] - before_last.trainable[0]).numpy(), atol=1e-7)


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
    one = outer_update(state.trainable, [direction], tf.constant(1.0))
    np.testing.assert_allclose(one[0].numpy(), end.trainable[0].numpy(), rtol=1e-6, atol=1e-7)
    zero = outer_update(state.trainable, [direction], tf.constant(0.0))
    np.testing.assert_array_equal(zero[0].numpy(), state.trainable[0].numpy())


def test_outer_update_of_three_tasks_is_the_mean_of_their_directions():
    theta = [tf.constant(np.ones((2, 2), np.float32))]
    dirs = [[tf.constant(np.full((2, 2), v, np.float32))] for v in (1.0, 2.0, 6.0)]
    got = outer_update(theta, dirs, tf.constant(0.5))
    np.testing.assert_allclose(got[0].numpy(), 1 + 0.5 * 3.0)
    single = [weights.add(theta, weights.scale(d, 0.5))[0].numpy() for d in dirs]
    np.testing.assert_allclose(got[0].numpy(), np.mean(single, axis=0), rtol=1e-6)


def test_meta_step_annealing_is_linear():
    assert annealed_meta_step(0, 100, 0.1, 1e-5) == pytest.approx(0.1)
    assert annealed_meta_step(50, 100, 0.1, 1e-5) == pytest.approx(0.5 * 0.1 + 0.5 * 1e-5)
    assert annealed_meta_step(100, 100, 0.1, 1e-5) == pytest.approx(1e-5)


def test_unknown_algorithm_is_rejected():
    with pytest.raises(ValueError, match="reptile"):
        make_algorithm("maml++")
