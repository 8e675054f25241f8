"""Inner-loop optimisers as pure (init, update) pairs, and learning-rate schedules.

Written in the manner of optax (``optax/_src/transform.py``): an optimiser is a NamedTuple of
two pure functions, its state a NamedTuple of tensors, so that a whole adaptation is a pure
function of (weights, state, batches) that ``tf.function`` compiles whole. Keras 3's
``optimizer.stateless_apply`` does not work on the TensorFlow backend, hence these.

``update(grads, state, params, learning_rate) -> (updates, new_state)``; apply the updates
with :func:`apply_updates`. The learning rate is a scalar tensor argument (not baked into the
optimiser) so schedules and UHO never cause a retrace.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

from metaseg.config import InnerConfig


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


def make_optimizer(config: InnerConfig) -> Optimizer:
    """The inner optimiser the flags ask for: ``--sgd`` or Adam with beta1 = 0."""
    return sgd() if config.sgd else adam(b1=0.0)


def learning_rate_at(config: InnerConfig, base_lr, step, total_steps) -> tf.Tensor:
    """The scheduled learning rate at inner step ``step`` (0-based) of ``total_steps``.

    REFERENCE.md section 5: fixed/constant; cosine_anneal ``0.5 lr (1 + cos(pi step/total))``;
    step/step_decay ``lr * rate ** (step // n)`` floored at 1e-7. ``base_lr``, ``step`` and
    ``total_steps`` may be tensors; the schedule kind is static (it selects the graph).
    """
    base_lr = tf.cast(base_lr, tf.float32)
    step = tf.cast(step, tf.float32)
    name = config.learning_rate_scheduler
    if name in ("fixed", "constant"):
        return base_lr
    if name == "cosine_anneal":
        total = tf.maximum(tf.cast(total_steps, tf.float32), 1.0)
        return 0.5 * base_lr * (1.0 + tf.cos(math.pi * step / total))
    # "step" / "step_decay"
    exponent = tf.floor(step / float(config.decay_after_n_steps))
    return tf.maximum(base_lr * tf.pow(float(config.step_decay_rate), exponent), 1e-7)
