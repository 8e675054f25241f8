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

from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

from metaseg.config import CARRY_OVER_POLICIES
from metaseg.errors import ConfigError


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


def carry_over(policy: str, saved: Carried, fresh_opt, adapt_task: Callable[[int, Carried],
                                                                          Tuple[Carried, Any]],
               num_tasks: int, *, meta_batch, sum_over_replicas: Optional[Callable] = None,
               ) -> Tuple[List[Any], Carried]:
    """Adapt to the ``num_tasks`` tasks of this replica's share of a meta-batch under ``policy``.

    Args:
      policy: one of ``CARRY_OVER_POLICIES`` (module docstring).
      saved: the state the previous meta-batch left (the variables' values).
      fresh_opt: the optimiser state a new adaptation starts with (``optimizer.init``).
      adapt_task: ``(t, start) -> (end, result)``: adapt to task t (0-based, in order) from
        ``start``; ``result`` is anything the caller wants back (direction, loss...).
      num_tasks: how many tasks this replica adapts to.
      meta_batch: the number of tasks over all replicas (a scalar, e.g. a float32 tensor):
        means divide by it.
      sum_over_replicas: adds a list of float tensors over the replicas (an all-reduce);
        None with one replica.

    Returns (the ``num_tasks`` results in task order, the state the meta-batch leaves).
    Pure when ``adapt_task`` is: nothing is read or written outside the arguments.
    """
    if policy not in CARRY_OVER_POLICIES:
        raise ValueError(f"unknown carry-over policy {policy!r}; known: {CARRY_OVER_POLICIES}")
    start = Carried(saved.non_trainable, fresh_opt) if policy == "reset" else saved
    results, ends = [], []
    for t in range(num_tasks):
        end, result = adapt_task(t, start)
        results.append(result)
        ends.append(end)
        if policy == "sequential":
            start = end
    if policy == "sequential":
        return results, ends[-1]
    structure = ends[-1]
    means = _mean_of_floats([tf.nest.flatten(end) for end in ends], meta_batch,
                            sum_over_replicas)
    kept = tf.nest.pack_sequence_as(structure, means)
    if policy == "reset":  # nothing of the slots carries over: they stay as saved
        kept = Carried(kept.non_trainable, saved.opt)
    return results, kept


def _mean_of_floats(columns_by_task: Sequence[Sequence[tf.Tensor]], meta_batch,
                    sum_over_replicas) -> list:
    """Per position: the mean over all tasks of a floating tensor (the sum over this
    replica's tasks, added over the replicas, divided by ``meta_batch``); the last task's
    tensor at integer positions."""
    columns = [list(column) for column in zip(*columns_by_task, strict=True)]
    floating = [i for i, column in enumerate(columns) if column[-1].dtype.is_floating]
    sums = [tf.add_n(columns[i]) for i in floating]
    if sum_over_replicas is not None and sums:
        sums = sum_over_replicas(sums)
    out = [column[-1] for column in columns]
    for i, value in zip(floating, sums, strict=True):
        # A division by a tensor: eager and compiled divide alike (a constant divisor would
        # become a product with its reciprocal in a graph, one rounding away).
        out[i] = value / tf.cast(meta_batch, value.dtype)
    return out
