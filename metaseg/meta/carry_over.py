"""How batch-norm statistics and inner-optimiser slots pass between the tasks of meta-training.

Besides the weights, a task's adaptation reads and updates state that is not meta-learned:
the non-trainable weights (batch-norm moving statistics, the dropout seed state) and the
inner optimiser's slots. A carry-over policy says which state each task of a meta-batch
starts from, and what the meta-batch leaves for the next one (written back to the
variables and checkpointed):

============  =========================================  =====================================
policy        task t of the meta-batch starts from       the meta-batch leaves
============  =========================================  =====================================
sequential    task t-1's end state (task 0: the saved)   the last task's end state
reset         the saved statistics and fresh slots       statistics: the mean over the tasks;
                                                         slots: as saved
mean          the saved state                            the mean over the tasks of their end
                                                         states
============  =========================================  =====================================

"The mean" is that of the floating entries; integer entries (the dropout seed state, the
optimiser's step count) advance alike in tasks that start from the same state, so the last
task's is kept. ``sequential`` is the original's (REFERENCE.md section 11), the default on
one device (``--carry_over``; ``--reset_state_per_task`` is ``reset``). Its tasks depend on
each other, so it needs the whole meta-batch on one replica. Under ``reset`` and ``mean`` the
tasks are independent and the result depends only on the set of tasks, not on their order or
on how they are spread over replicas; ``mean`` is the default under a ``tf.distribute``
strategy other than the default one.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import tensorflow as tf

from metaseg.config import CARRY_OVER_POLICIES
from metaseg.errors import ConfigError
from metaseg.meta import weights

# Tasks of a meta-batch whose ops may run at once (the tf.while_loop's parallel_iterations,
# read when the meta-step is traced). Every task's forward and backward pass needs only the
# shared weights theta; under ``sequential`` only the running statistics and slots pass from
# one task to the next, so the executor overlaps the tasks' steps on the two cores (Reptile,
# 2 tasks x 5 steps on 2 idle cores: 1.30x faster at 224 px than one task at a time, no gain
# at 64 px; ``bench/bench_task_overlap.py``). Values and their order are the same either way.
PARALLEL_TASKS = 10


class Carried(NamedTuple):
    """The state carried from task to task (lists aligned with the model's)."""

    non_trainable: list  # batch-norm moving statistics and dropout seed state
    opt: Any  # the inner optimiser's state (optim.SGDState or optim.AdamState)


def choose_policy(carry_over: Optional[str], reset_state_per_task: bool, *, distributed: bool,
                  replicas: int) -> str:
    """The policy a run uses: ``carry_over`` if given, ``reset`` for ``reset_state_per_task``,
    else ``mean`` under a strategy other than the default one and ``sequential`` without.
    (``MetaConfig`` has already refused the two flags contradicting each other.)"""
    policy = carry_over or ("reset" if reset_state_per_task else
                            "mean" if distributed else "sequential")
    if policy == "sequential" and replicas > 1:
        raise ConfigError(
            f"--carry_over sequential starts every task from the previous task's statistics, "
            f"which the {replicas} replicas adapting in parallel cannot do; use --carry_over "
            "mean or reset, or one device")
    return policy


def carry_over(policy: str, saved: Carried, fresh_opt, adapt_task: Callable, num_tasks: int, *,
               meta_batch, sum_over_replicas: Optional[Callable] = None):
    """Adapt to the ``num_tasks`` tasks of this replica's share of a meta-batch under ``policy``.

    Args:
      policy: one of ``CARRY_OVER_POLICIES`` (module docstring).
      saved: the state the previous meta-batch left (the variables' values).
      fresh_opt: the optimiser state a new adaptation starts with (``optimizer.init``).
      adapt_task: ``(t, start) -> (end, out)``: adapt to task t (an int32 scalar tensor,
        0-based, in order) from the ``Carried`` state ``start``; ``out`` is a nest of tensors
        of static shape to keep for every task (e.g. its direction and loss). Traced once:
        the tasks run in a ``tf.while_loop``, so a meta-batch of M tasks costs one task's
        graph to build and optimise.
      num_tasks: how many tasks this replica adapts to.
      meta_batch: the number of tasks over all replicas (a scalar, e.g. a float32 tensor):
        means divide by it.
      sum_over_replicas: adds a list of float tensors over the replicas (an all-reduce);
        None with one replica.

    Returns (every task's ``out``, stacked: leading axis ``num_tasks``, in task order; the
    state the meta-batch leaves). Pure when ``adapt_task`` is: nothing is read or written
    outside the arguments.
    """
    if policy not in CARRY_OVER_POLICIES:
        raise ValueError(f"unknown carry-over policy {policy!r}; known: {CARRY_OVER_POLICIES}")
    first = Carried(saved.non_trainable, fresh_opt) if policy == "reset" else saved
    task = tf.function(adapt_task, autograph=False).get_concrete_function(
        tf.TensorSpec([], tf.int32), tf.nest.map_structure(_spec, first))
    end_like, out_like = task.structured_outputs
    flat_end_like = tf.nest.flatten(end_like)
    # The floating entries a mean is taken of: none for sequential; all for reset and mean
    # (reset keeps only the statistics' means, but averaging the slots too gives both the
    # same all-reduce: under tf.distribute, strategies over the same devices in one process
    # share collective keys, and two collectives under one key must agree in shape).
    floating = [] if policy == "sequential" else [
        i for i, x in enumerate(flat_end_like) if x.dtype.is_floating]

    def body(t, start, last, outs, ends):
        del last
        end, out = task(t, start)
        flat_end = tf.nest.flatten(end)
        outs = [ta.write(t, x) for ta, x in zip(outs, tf.nest.flatten(out), strict=True)]
        ends = [ta.write(t, flat_end[i]) for ta, i in zip(ends, floating, strict=True)]
        # Sequential: the next task starts where this one ended; else from the same state.
        return t + 1, (end if policy == "sequential" else start), end, outs, ends

    def arrays(tensors):
        return [tf.TensorArray(x.dtype, size=num_tasks, element_shape=x.shape) for x in tensors]

    _, _, last, outs, ends = tf.while_loop(
        lambda t, *_: t < num_tasks, body,
        (tf.constant(0), first, first, arrays(tf.nest.flatten(out_like)),
         arrays([flat_end_like[i] for i in floating])), parallel_iterations=PARALLEL_TASKS)
    outs = tf.nest.pack_sequence_as(out_like, [ta.stack() for ta in outs])
    if policy == "sequential":  # the loop's last end state
        return outs, last
    # The mean over all tasks of the floating entries (added as tf.add_n adds, as the former
    # eager mean did); the last task's integer entries (and, for reset, its slots: replaced
    # by the saved ones below).
    end_sums = weights.total_in_order([ta.stack() for ta in ends],
                                      [list(range(num_tasks))] * len(floating)) if ends else []
    if sum_over_replicas is not None and end_sums:
        end_sums = sum_over_replicas(end_sums)
    kept = tf.nest.flatten(last)
    for i, total in zip(floating, end_sums, strict=True):
        # A division by a tensor: eager and compiled divide alike (a constant divisor would
        # become a product with its reciprocal in a graph, one rounding away).
        kept[i] = total / tf.cast(meta_batch, total.dtype)
    kept = tf.nest.pack_sequence_as(last, kept)
    if policy == "reset":  # nothing of the slots carries over: they stay as saved
        kept = Carried(kept.non_trainable, saved.opt)
    return outs, kept


def _spec(x) -> tf.TensorSpec:
    x = tf.convert_to_tensor(x)
    return tf.TensorSpec(x.shape, x.dtype)
