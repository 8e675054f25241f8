"""Meta-learning algorithms: how a task becomes a direction, and the one outer update.

Every algorithm turns one task episode into an update *direction* in weight space; the outer
update is the same for all of them (REFERENCE.md section 6):

    theta <- theta + epsilon * mean_i(direction_i)

For Reptile (``reptile.py``) the direction is ``phi_i - theta`` (so the update interpolates
toward the mean adapted weights); for FOMAML (``fomaml.py``) it is the change made by the
task's last inner step. Pick one with :func:`make_algorithm`, keyed on a name, not booleans
spread through the code (learn2learn ``algorithms/`` style). The algorithm modules import
nothing from here, so there is no import loop; the meta-step (``step.py``) is the one caller
of :func:`outer_update`.
"""

from __future__ import annotations

from typing import Dict, Protocol, Sequence

import tensorflow as tf

from metaseg.meta.adapt import Adapter, AdaptState
from metaseg.meta.fomaml import FOMAML
from metaseg.meta.reptile import Reptile


class MetaAlgorithm(Protocol):
    """What an algorithm provides (``Reptile``, ``FOMAML``)."""

    name: str

    def task_direction(self, adapter: Adapter, state: AdaptState, episode: Dict[str, tf.Tensor],
                       learning_rate, total_steps):
        """Adapt to one episode from ``state``.

        Returns (direction: list of tensors aligned with ``state.trainable``,
        end state after the last inner step, per-step losses float32 [K]).
        """


ALGORITHMS = {algorithm.name: algorithm for algorithm in (Reptile, FOMAML)}


def make_algorithm(name: str) -> MetaAlgorithm:
    """The algorithm called ``name`` ("reptile" or "fomaml")."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown meta-learning algorithm {name!r}; known: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]()


def annealed_meta_step(iteration, total_iterations, meta_step, meta_step_final) -> float:
    """Linear annealing: ``(i/N) * final + (1 - i/N) * initial`` at iteration i of N."""
    frac = iteration / float(total_iterations)
    return frac * meta_step_final + (1.0 - frac) * meta_step


def direction_order(num_weights: int, num_tasks: int) -> list:
    """For each of ``num_weights`` weights, the order in which the meta-step adds the
    ``num_tasks`` tasks' directions (task indices): the order of the earlier compiled outer
    update, ``tf.add_n`` over its arguments named ``directions``, ``directions_1``, ...
    (task-major), whose inputs TensorFlow's graph optimiser sorts by name. Float addition
    is not associative, so this order is what keeps meta-training bit-identical to the
    checkpoints and numbers that code produced."""
    def name(i):
        return "directions" if i == 0 else f"directions_{i}"

    return [sorted(range(num_tasks), key=lambda t, j=j: name(j + num_weights * t))
            for j in range(num_weights)]


def outer_update(theta: Sequence[tf.Tensor], direction_sum: Sequence[tf.Tensor], num_tasks,
                 epsilon) -> list:
    """``theta + epsilon * mean(directions)``, the mean being ``direction_sum / num_tasks``.

    ``direction_sum``: the element-wise sum of the meta-batch's ``num_tasks`` directions
    (added in ``direction_order``, and over the replicas when the tasks are spread over
    several).
    Computed as ``theta + direction_sum * (epsilon * (1 / num_tasks))``: the order of
    operations TensorFlow's graph optimiser gave the earlier compiled ``theta + epsilon *
    (tf.add_n(directions) / M)`` (division by a constant becomes a product with its
    reciprocal, and the constant is moved next to the other scalar), kept so that results
    stay bit-identical. ``num_tasks`` and ``epsilon`` are scalars (tensors inside the step,
    so nothing is folded differently).
    """
    reciprocal = 1.0 / tf.cast(num_tasks, tf.float32)
    factor = tf.cast(epsilon, tf.float32) * reciprocal
    return [t + d * tf.cast(factor, d.dtype) for t, d in zip(theta, direction_sum, strict=True)]
