"""One meta-iteration with the meta-batch spread over the replicas of a ``tf.distribute`` strategy.

With R replicas and meta-batch M, replica r adapts (compiled, ``Adapter.adapt``) to the
``M / R`` episodes ``r * M/R ... (r + 1) * M/R - 1`` of the meta-batch, all starting from
the same weights. Each replica sums its tasks' directions, end statistics and losses; one
``all_reduce`` (a single call on the flat list) adds the sums of all replicas, and every
replica then holds

    theta' = theta + epsilon * (sum of all M directions) / M

which is the single-device outer update, whatever R is.

Batch-norm statistics and inner-optimiser slots under a strategy. Inside one meta-batch the
tasks run in parallel, so a task cannot start from the statistics the previous task ended
with (the original's sequential carry-over). Instead:

- carry-over (default): every task of a meta-batch starts from the state the previous
  meta-batch left; the state left for the next one is the mean over the M tasks of their end
  statistics and optimiser slots (floating values; integer counters and the dropout seed
  state advance identically in every task, so any task's is taken);
- ``--reset_state_per_task``: every task starts from the checkpointed statistics and fresh
  optimiser slots, exactly as on one device; the statistics kept are the mean over tasks.

Both depend only on the set of tasks in the meta-batch, never on how they were split over
replicas, so one device and N replicas give the same weights (to float reassociation).
"""

from __future__ import annotations

from typing import List, NamedTuple, Sequence

import tensorflow as tf

from metaseg.meta import weights
from metaseg.meta.adapt import Adapter, AdaptState


class StepResult(NamedTuple):
    """What one replicated meta-step returns (values of this process's first replica)."""

    loss: float  # mean over the meta-batch of each task's mean inner loss
    finite: bool  # every task's losses and the updated weights are finite


class ReplicatedMetaStep:
    """A compiled meta-step under ``strategy``.

    Args:
      strategy: the run's strategy; the model and ``state`` were built in its scope.
      adapter: the model's compiled adaptation.
      algorithm: Reptile or FOMAML (``make_algorithm``).
      state: the ``MetaState`` holding the variables to update.
      meta_batch: M; ``tasks_per_replica`` = M / R episodes are given to each replica.
      reset_state_per_task: see the module docstring.
    """

    def __init__(self, strategy: tf.distribute.Strategy, adapter: Adapter, algorithm, state, *,
                 meta_batch: int, reset_state_per_task: bool):
        self.strategy, self.adapter, self.algorithm, self.state = (strategy, adapter, algorithm,
                                                                    state)
        self.meta_batch = int(meta_batch)
        self.reset = bool(reset_state_per_task)
        self._step = tf.function(self._distributed_step)
        self._assign = tf.function(self._distributed_assign)

    # -- public ----------------------------------------------------------------------------
    def __call__(self, episodes, learning_rate, total_steps, epsilon) -> StepResult:
        """Adapt every replica to its episodes and, if all is finite, apply the outer update.

        ``episodes``: a distributed value (``experimental_distribute_values_from_function``)
        whose component on each replica is a dict of episode tensors with a leading axis of
        ``tasks_per_replica`` tasks.
        """
        new_values, loss, bad = self._step(episodes, learning_rate, total_steps,
                                           tf.constant(epsilon, tf.float32))
        loss = float(self._first(loss))
        finite = not bool(self._first(bad))
        if finite:
            self._assign(new_values)
        return StepResult(loss, finite)

    # -- compiled ----------------------------------------------------------------------------
    def _distributed_step(self, episodes, learning_rate, total_steps, epsilon):
        return self.strategy.run(self._replica_step,
                                 args=(episodes, learning_rate, total_steps, epsilon))

    def _replica_step(self, episodes, learning_rate, total_steps, epsilon):
        state = self.state
        theta = [tf.identity(v.value) for v in state.trainable]
        start_nt = [tf.identity(v.value) for v in state.non_trainable]
        carried_opt = tf.nest.pack_sequence_as(
            state.opt_structure, [tf.identity(v) for v in state.optimizer])
        fresh_opt = self.adapter.optimizer.init(theta)
        num_tasks = int(tf.nest.flatten(episodes)[0].shape[0])

        direction_sum, nt_ends, opt_ends, loss_sum, bad = None, [], [], 0.0, 0.0
        for t in range(num_tasks):
            episode = tf.nest.map_structure(lambda a, t=t: a[t], episodes)
            start = AdaptState(theta, start_nt, fresh_opt if self.reset else carried_opt)
            direction, end, step_losses = self.algorithm.task_direction(
                self.adapter, start, episode, learning_rate, total_steps)
            direction_sum = direction if direction_sum is None else weights.add(direction_sum,
                                                                                direction)
            nt_ends.append(list(end.non_trainable))
            opt_ends.append(tf.nest.flatten(end.opt))
            task_loss = tf.reduce_mean(step_losses)
            loss_sum += task_loss
            bad += tf.cast(tf.logical_not(tf.math.is_finite(task_loss)), tf.float32)

        nt_sum, nt_last = _float_sums(nt_ends)
        opt_sum, opt_last = _float_sums(opt_ends)
        # The one all-reduce of the step: every float sum in a single call.
        flat = list(direction_sum) + nt_sum + opt_sum + [tf.reshape(loss_sum, []), bad]
        total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, flat)
        scale = 1.0 / self.meta_batch
        n_dir, n_nt = len(direction_sum), len(nt_sum)
        mean_direction = [d * scale for d in total[:n_dir]]
        new_theta = weights.add(theta, weights.scale(mean_direction, epsilon))
        new_nt = _merge(nt_last, [s * scale for s in total[n_dir:n_dir + n_nt]])
        new_opt = _merge(opt_last, [s * scale for s in total[n_dir + n_nt:-2]])
        loss, bad = total[-2] * scale, total[-1]
        bad = tf.logical_or(bad > 0, tf.logical_not(weights.all_finite(new_theta)))
        if self.reset:  # nothing carries over; the checkpointed slots stay as they were
            new_opt = tf.nest.flatten(carried_opt)
        return (new_theta, new_nt, new_opt), loss, bad

    def _distributed_assign(self, new_values):
        new_theta, new_nt, new_opt = new_values
        state = self.state
        targets = ([v.value for v in state.trainable] + [v.value for v in state.non_trainable]
                   + list(state.optimizer))
        values = list(new_theta) + list(new_nt) + list(new_opt)
        for var, value in zip(targets, values, strict=True):
            self.strategy.extended.update(var, _assign, args=(value,), group=False)

    def _first(self, value):
        return self.strategy.experimental_local_results(value)[0]


def _assign(var, value):
    return var.assign(value)


def _float_sums(columns_by_task: Sequence[Sequence[tf.Tensor]]):
    """Per position: the sum over tasks of the floating tensors; the last task's others.

    Returns (sums of the floating positions, in order; list with the last task's tensor at
    non-floating positions and None at floating ones)."""
    sums, last = [], []
    for column in zip(*columns_by_task, strict=True):
        if column[-1].dtype.is_floating:
            sums.append(tf.add_n(list(column)))
            last.append(None)
        else:
            last.append(column[-1])
    return sums, last


def _merge(last: List, means: List[tf.Tensor]) -> List[tf.Tensor]:
    """Fill the None (floating) positions of ``last`` with ``means``, in order."""
    means = iter(means)
    return [next(means) if x is None else x for x in last]
