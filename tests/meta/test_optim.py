"""Our pure optimisers against keras.optimizers on the same gradients, and the schedules."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.config import InnerConfig
from metaseg.meta import optim

RNG = np.random.default_rng(1)
PARAMS = [RNG.normal(size=(3, 3)).astype(np.float32), RNG.normal(size=(5,)).astype(np.float32)]
GRADS = [[RNG.normal(size=p.shape).astype(np.float32) for p in PARAMS] for _ in range(6)]


def _run_ours(optimizer, lr):
    params = [tf.constant(p) for p in PARAMS]
    state = optimizer.init(params)
    for grads in GRADS:
        updates, state = optimizer.update([tf.constant(g) for g in grads], state, params,
                                          tf.constant(lr))
        params = optim.apply_updates(params, updates)
    return [p.numpy() for p in params], state


def _run_keras(optimizer):
    variables = [keras.Variable(p) for p in PARAMS]
    for grads in GRADS:
        optimizer.apply_gradients(zip([tf.constant(g) for g in grads], variables))
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("lr", [0.01, 0.3])
def test_sgd_matches_keras(lr):
    ours, state = _run_ours(optim.sgd(), lr)
    theirs = _run_keras(keras.optimizers.SGD(learning_rate=lr))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert int(state.count) == len(GRADS)


def test_adam_beta1_zero_matches_keras():
    ours, state = _run_ours(optim.adam(b1=0.0), 0.01)
    theirs = _run_keras(keras.optimizers.Adam(learning_rate=0.01, beta_1=0.0, beta_2=0.999,
                                              epsilon=1e-8))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(state.count) == len(GRADS)


def test_adam_with_momentum_matches_keras():
    ours, _ = _run_ours(optim.adam(b1=0.9), 0.05)
    theirs = _run_keras(keras.optimizers.Adam(learning_rate=0.05, beta_1=0.9, epsilon=1e-8))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_make_optimizer_follows_sgd_flag():
    params = [tf.zeros([2])]
    assert isinstance(optim.make_optimizer(InnerConfig(sgd=True).sgd).init(params),
                      optim.SGDState)
    assert isinstance(optim.make_optimizer(InnerConfig().sgd).init(params), optim.AdamState)


def test_schedules_match_reference_formulas():
    fixed = optim.schedule("fixed")
    assert float(fixed(0.1, 7, 10)) == pytest.approx(0.1)
    cosine = optim.schedule("cosine_anneal")
    for step in (0, 3, 10):
        want = 0.5 * 0.1 * (1 + math.cos(math.pi * step / 10))
        assert float(cosine(0.1, step, 10)) == pytest.approx(want, 1e-6)
    step = optim.schedule("step_decay", step_decay_rate=0.5, decay_after_n_steps=5)
    assert float(step(0.1, 4, 0)) == pytest.approx(0.1)
    assert float(step(0.1, 5, 0)) == pytest.approx(0.05)
    assert float(step(0.1, 12, 0)) == pytest.approx(0.025)
    assert float(step(1e-6, 50, 0)) == pytest.approx(1e-7)
