"""First-order MAML: the direction of a task is the change made by its last inner step.

With ``--foml-tail T`` the episode holds the first ``K - 1`` batches drawn from
``train_shots - T`` examples and a held-out tail batch of ``T`` examples for the last step
(REFERENCE.md section 6); the episode sampler builds both parts.
"""

from __future__ import annotations

import tensorflow as tf

from metaseg.meta import weights


class FOMAML:
    """Direction of a task: ``phi_K - phi_{K-1}``."""

    name = "fomaml"

    def task_direction(self, adapter, state, episode, learning_rate, total_steps):
        """See ``algorithms.MetaAlgorithm``."""
        if "tail_x" in episode:
            first_x, first_y = episode["x"], episode["y"]
            last_x, last_y = episode["tail_x"][None], episode["tail_y"][None]
        else:
            first_x, first_y = episode["x"][:-1], episode["y"][:-1]
            last_x, last_y = episode["x"][-1:], episode["y"][-1:]
        before, first_losses = adapter.adapt(state, first_x, first_y, learning_rate,
                                             tf.constant(0), total_steps)
        end, last_loss = adapter.adapt(before, last_x, last_y, learning_rate,
                                       tf.shape(first_x)[0], total_steps)
        direction = weights.subtract(end.trainable, before.trainable)
        return direction, end, tf.concat([first_losses, last_loss], axis=0)
