"""Reptile (Nichol et al. 2018): move toward the weights adapted to each task."""

from __future__ import annotations

import tensorflow as tf

from metaseg.meta import weights


class Reptile:
    """Direction of a task: ``phi - theta``, its adapted weights minus the start."""

    name = "reptile"

    def task_direction(self, adapter, state, episode, learning_rate, total_steps):
        """See ``algorithms.MetaAlgorithm``."""
        end, step_losses = adapter.adapt(state, episode["x"], episode["y"], learning_rate,
                                         tf.constant(0), total_steps)
        return weights.subtract(end.trainable, state.trainable), end, step_losses
