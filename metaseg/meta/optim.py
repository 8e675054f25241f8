"""Inner-loop optimisers as pure (init, update) pairs, and learning-rate schedules.

Written in the manner of optax (``optax/_src/transform.py``): an optimiser is a NamedTuple of
two pure functions, its state a NamedTuple of tensors, so that a whole adaptation is a pure
function of (weights, state, batches) that ``tf.function`` compiles whole. Keras 3's
``optimizer.stateless_apply`` does not work on the TensorFlow backend, hence these.

``update(grads, state, params, learning_rate) -> (updates, new_state)``; apply the updates
with :func:`apply_updates`. The learning rate is a scalar tensor argument (not baked into the
optimiser) so schedules and UHO never cause a retrace. A schedule is a function built once
from its settings (:func:`schedule`); nothing here reads the run's configuration.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import tensorflow as tf


class Optimizer(NamedTuple):
    init: Callable
    update: Callable


class SGDState(NamedTuple):
    count: tf.Tensor  # int64 scalar: steps taken


class AdamState(NamedTuple):
    count: tf.Tensor  # int64 scalar: steps taken (TF1's beta power accumulators, as a count)
    mu: list  # first moments, one per parameter
    nu: list  # second moments, one per parameter


def apply_updates(params: Sequence[tf.Tensor], updates: Sequence[tf.Tensor]) -> list:
    """``params + updates``, element-wise."""
    return [p + u for p, u in zip(params, updates, strict=True)]


def sgd() -> Optimizer:
    """Plain gradient descent (``--sgd``)."""

    def init(params):
        del params
        return SGDState(count=tf.zeros([], tf.int64))

    def update(grads, state, params, learning_rate):
        del params
        updates = [-tf.cast(learning_rate, g.dtype) * g for g in grads]
        return updates, SGDState(count=state.count + 1)

    return Optimizer(init, update)


def adam(b1: float = 0.0, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam as TF1's ``AdamOptimizer`` and ``keras.optimizers.Adam`` compute it.

    The original uses beta1 = 0 (no momentum), beta2 = 0.999, epsilon 1e-8:
    ``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)``, ``w -= lr_t * m / (sqrt(v) + eps)``.
    """

    def init(params):
        zeros = [tf.zeros_like(p) for p in params]
        return AdamState(count=tf.zeros([], tf.int64), mu=list(zeros), nu=list(zeros))

    def update(grads, state, params, learning_rate):
        del params
        count = state.count + 1
        t = tf.cast(count, tf.float32)
        lr_t = learning_rate * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        mu = [m + (g - m) * (1.0 - b1) for g, m in zip(grads, state.mu, strict=True)]
        nu = [v + (tf.square(g) - v) * (1.0 - b2) for g, v in zip(grads, state.nu, strict=True)]
        updates = [-lr_t * m / (tf.sqrt(v) + eps) for m, v in zip(mu, nu, strict=True)]
        return updates, AdamState(count=count, mu=mu, nu=nu)

    return Optimizer(init, update)


def make_optimizer(use_sgd: bool) -> Optimizer:
    """The inner optimiser the flags ask for: ``--sgd`` or Adam with beta1 = 0."""
    return sgd() if use_sgd else adam(b1=0.0)


Schedule = Callable[..., tf.Tensor]  # (base_lr, step, total_steps) -> learning rate


def schedule(name: str, decay_after_n_steps: int = 1, step_decay_rate: float = 1.0) -> Schedule:
    """``(base_lr, step, total_steps) -> the learning rate at inner step step`` (0-based) of
    ``total_steps``, for the schedule ``name``.

    REFERENCE.md section 5: fixed/constant; cosine_anneal ``0.5 lr (1 + cos(pi step/total))``;
    step/step_decay ``lr * rate ** (step // n)`` floored at 1e-7. The arguments may be
    tensors; the schedule's kind is chosen here, once (it selects the graph).
    """
    if name in ("fixed", "constant"):
        def rate(base_lr, step, total_steps):
            del step, total_steps
            return tf.cast(base_lr, tf.float32)
    elif name == "cosine_anneal":
        def rate(base_lr, step, total_steps):
            total = tf.maximum(tf.cast(total_steps, tf.float32), 1.0)
            return 0.5 * tf.cast(base_lr, tf.float32) * (
                1.0 + tf.cos(math.pi * tf.cast(step, tf.float32) / total))
    elif name in ("step", "step_decay"):
        every, decay = float(decay_after_n_steps), float(step_decay_rate)

        def rate(base_lr, step, total_steps):
            del total_steps
            exponent = tf.floor(tf.cast(step, tf.float32) / every)
            return tf.maximum(tf.cast(base_lr, tf.float32) * tf.pow(decay, exponent), 1e-7)
    else:
        raise ValueError(f"unknown learning-rate schedule {name!r}")
    return rate
