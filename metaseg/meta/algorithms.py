"""Meta-learning algorithms as thin classes over shared weight-space functions.

Every algorithm turns one task episode into an update *direction* in weight space; the outer
update is the same for all of them (REFERENCE.md section 6):

    theta <- theta + epsilon * mean_i(direction_i)

For Reptile the direction is ``phi_i - theta`` (so the update interpolates toward the mean
adapted weights); for FOMAML it is the change made by the task's last inner step. Pick one
with :func:`make_algorithm`, keyed on a name, not booleans spread through the code
(learn2learn ``algorithms/`` style).
"""

from __future__ import annotations

from typing import Callable, Dict

import tensorflow as tf

from metaseg.meta import weights
from metaseg.meta.adapt import Adapter, AdaptState


def annealed_meta_step(iteration, total_iterations, meta_step, meta_step_final) -> float:
    """Linear annealing: ``(i/N) * final + (1 - i/N) * initial`` at iteration i of N."""
    frac = iteration / float(total_iterations)
    return frac * meta_step_final + (1.0 - frac) * meta_step


@tf.function(reduce_retracing=True)
def outer_update(theta, directions, epsilon):
    """``theta + epsilon * mean(directions)`` over lists of tensors (compiled once per M)."""
    return weights.add(theta, weights.scale(weights.mean(directions), epsilon))


class MetaAlgorithm:
    """Base: subclasses implement :meth:`task_direction`."""

    name = ""

    def task_direction(self, adapter: Adapter, state: AdaptState, episode: Dict[str, tf.Tensor],
                       learning_rate, total_steps):
        """Adapt to one episode from ``state``.

        Returns (direction: list of tensors aligned with ``state.trainable``,
        end state after the last inner step, per-step losses float32 [K]).
        """
        raise NotImplementedError


_REGISTRY: Dict[str, Callable[[], MetaAlgorithm]] = {}


def register(name: str):
    def decorator(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorator


def make_algorithm(name: str) -> MetaAlgorithm:
    """The algorithm called ``name`` ("reptile" or "fomaml")."""
    # Importing the modules registers them; kept here so callers only need this factory.
    from metaseg.meta import fomaml, reptile  # noqa: F401  pylint: disable=import-outside-toplevel
    if name not in _REGISTRY:
        raise ValueError(f"unknown meta-learning algorithm {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]()
