"""The meta-step: one compiled call adapts to every task of a meta-batch and updates the weights.

With R replicas (R = 1 under the default strategy, one device) and meta-batch M, replica r
adapts (``Adapter.adapt``, through the algorithm's ``task_direction``) to the ``M / R``
episodes ``r * M/R ... (r + 1) * M/R - 1`` of the meta-batch, all from the same weights
theta, with the batch-norm statistics and optimiser slots each task starts from chosen by
the carry-over policy (``carry_over.py``; the tasks run in a ``tf.while_loop``, so the graph
holds one task's adaptation whatever M is). Each replica adds its tasks' directions (in
``algorithms.direction_order``, which keeps one-device results bit-identical to the earlier
code); one ``all_reduce`` (a single call on the flat list, an identity with one replica)
adds the sums of all replicas, with every task's mean loss and task index, and every
replica then holds

    theta' = outer_update(theta, sum of all M directions, M, epsilon)

which is the same whatever R is. Inside the same call: the finite check (every task's loss
and theta') and, only if everything is finite, the assignment of theta', the statistics and
the slots the policy keeps to the variables (a ``tf.cond``: a non-finite step assigns
nothing). The host reads back the M task losses, their task indices and the finite flag,
once per meta-step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from metaseg import distribute
from metaseg.meta import weights
from metaseg.meta.adapt import Adapter, AdaptState
from metaseg.meta.algorithms import direction_order, outer_update
from metaseg.meta.carry_over import Carried, carry_over


class StepResult(NamedTuple):
    """What one meta-step returns (host values)."""

    loss: float  # mean over the meta-batch of each task's mean inner loss
    task_losses: np.ndarray  # float32 [M]: each task's mean inner loss, in meta-batch order
    tasks: np.ndarray  # int [M]: each task's index in the task store
    finite: bool  # every task's losses and the updated weights are finite (else: not assigned)


class MetaStep:
    """The compiled meta-step under ``strategy``.

    Args:
      strategy: the run's strategy (``tf.distribute.get_strategy()`` for one device); the
        model and ``state`` were built in its scope.
      adapter: the model's compiled adaptation.
      algorithm: Reptile or FOMAML (``make_algorithm``).
      state: the ``MetaState`` holding the variables to update.
      meta_batch: M; ``tasks_per_replica`` = M / R episodes are given to each replica.
      policy: the carry-over policy (``carry_over.choose_policy``).
    """

    def __init__(self, strategy: tf.distribute.Strategy, adapter: Adapter, algorithm, state, *,
                 meta_batch: int, policy: str):
        self.strategy, self.adapter, self.algorithm, self.state = (strategy, adapter, algorithm,
                                                                    state)
        self.meta_batch = int(meta_batch)
        self.tasks_per_replica = distribute.tasks_per_replica(self.meta_batch, strategy)
        self.policy = policy
        self._num_tasks = tf.constant(float(self.meta_batch))  # a tensor: see outer_update
        self._step = tf.function(self._compiled, autograph=False)  # explicit control flow

    def __call__(self, episodes, learning_rate, total_steps, epsilon) -> StepResult:
        """Adapt every replica to its episodes and, if all is finite, apply the outer update.

        ``episodes``: a distributed value (``experimental_distribute_values_from_function``;
        under the default strategy simply the value) whose component on each replica is a dict
        of episode tensors with a leading axis of ``tasks_per_replica`` tasks.
        ``learning_rate``, ``total_steps``: scalar tensors; ``epsilon``: the meta step size.
        """
        losses, tasks, finite = self._step(episodes, learning_rate, total_steps,
                                           tf.constant(epsilon, tf.float32), self._num_tasks)
        losses, tasks, finite = (self.strategy.experimental_local_results(v)[0].numpy()
                                 for v in (losses, tasks, finite))
        # The mean in double precision of the float32 task losses, as a Python loop would.
        loss = sum(float(x) for x in losses) / len(losses)
        return StepResult(loss, losses, tasks, bool(finite))

    # -- compiled ----------------------------------------------------------------------------
    def _compiled(self, episodes, learning_rate, total_steps, epsilon, num_tasks):
        new_values, losses, tasks, finite = self.strategy.run(
            self._replica_step, args=(episodes, learning_rate, total_steps, epsilon, num_tasks))
        # After the all-reduce every replica holds the same flag; this process's first one's.
        ok = self.strategy.experimental_local_results(finite)[0]
        tf.cond(ok, lambda: self._assign(new_values), lambda: None)
        return losses, tasks, finite

    def _replica_step(self, episodes, learning_rate, total_steps, epsilon, num_tasks):
        state = self.state
        theta = [tf.identity(v.value) for v in state.trainable]
        saved = Carried([tf.identity(v.value) for v in state.non_trainable],
                        tf.nest.pack_sequence_as(state.opt_structure,
                                                 [tf.identity(v) for v in state.optimizer]))
        per = self.tasks_per_replica
        context = tf.distribute.get_replica_context()

        def adapt_task(t, start):
            episode = tf.nest.map_structure(lambda a: a[t], episodes)
            direction, end, step_losses = self.algorithm.task_direction(
                self.adapter, AdaptState(theta, start.non_trainable, start.opt), episode,
                learning_rate, total_steps)
            task_id = tf.cast(episode["task"], tf.float32)
            return (Carried(end.non_trainable, end.opt),
                    (direction, tf.reduce_mean(step_losses), task_id))

        def sum_over_replicas(tensors):
            return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)

        (directions, task_losses, task_ids), kept = carry_over(
            self.policy, saved, self.adapter.optimizer.init(theta), adapt_task, per,
            meta_batch=num_tasks, sum_over_replicas=sum_over_replicas)
        direction_sum = weights.total_in_order(directions, direction_order(len(theta), per))
        # This replica's tasks at their places in the meta-batch, zeros elsewhere: the sum over
        # the replicas is every task's value (x + 0 = x, NaN stays NaN; task indices are exact
        # in float32).
        first = context.replica_id_in_sync_group * per
        place = [[first, self.meta_batch - first - per]]
        local = [tf.pad(task_losses, place), tf.pad(task_ids, place)]
        # The one all-reduce of the directions: sums, losses and task indices in a single call.
        summed = sum_over_replicas(direction_sum + local)
        direction_sum, (losses, tasks) = summed[:-2], summed[-2:]
        new_theta = outer_update(theta, direction_sum, num_tasks, epsilon)
        finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(losses)),
                                weights.all_finite(new_theta))
        new_values = (new_theta, list(kept.non_trainable), tf.nest.flatten(kept.opt))
        return new_values, losses, tf.cast(tasks, tf.int32), finite

    def _assign(self, new_values):
        """Cross-replica: every replica's copy of each variable gets that replica's value."""
        new_theta, new_nt, new_opt = new_values
        state = self.state
        targets = ([v.value for v in state.trainable] + [v.value for v in state.non_trainable]
                   + list(state.optimizer))
        values = list(new_theta) + list(new_nt) + list(new_opt)
        for var, value in zip(targets, values, strict=True):
            self.strategy.extended.update(var, _assign, args=(value,), group=False)


def _assign(var, value):
    return var.assign(value)
