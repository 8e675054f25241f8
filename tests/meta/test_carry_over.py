"""The carry-over of batch-norm statistics and optimiser slots: the three policies, worked by
hand on a fake adaptation whose effect on the state is known."""
import numpy as np
import pytest
import tensorflow as tf

from metaseg.errors import ConfigError
from metaseg.meta.carry_over import Carried, carry_over, choose_policy
from metaseg.meta.optim import AdamState

SAVED = Carried([tf.constant([1.0, 2.0]), tf.constant(10, tf.int64)],
                AdamState(tf.constant(4, tf.int64), [tf.constant([0.5])], [tf.constant([0.25])]))
FRESH = AdamState(tf.constant(0, tf.int64), [tf.constant([0.0])], [tf.constant([0.0])])


def _run(policy, tasks=(0, 1, 2), meta_batch=None, sum_over_replicas=None):
    """Task t adds t + 1 to the statistics, 10 (t + 1) to the first moment, one to the seed
    state and the step count, and returns the state it started from; returns (the start of
    each task as a list of Carried, the state kept)."""
    numbers = tf.constant([t + 1.0 for t in tasks])

    def adapt_task(t, start):
        task = numbers[t]
        (stat, seed), opt = start
        end = Carried([stat + task, seed + 1],
                      AdamState(opt.count + 1, [opt.mu[0] + 10.0 * task], opt.nu))
        return end, start

    starts, kept = carry_over(policy, SAVED, FRESH, adapt_task, len(tasks),
                              meta_batch=meta_batch or len(tasks),
                              sum_over_replicas=sum_over_replicas)
    starts = [tf.nest.map_structure(lambda x, i=i: x[i], starts) for i in range(len(tasks))]
    return starts, kept


def _values(state):
    return [np.asarray(t) for t in tf.nest.flatten(state)]


def _same(a, b):
    for x, y in zip(_values(a), _values(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _carried(stat, seed, count, mu, nu):
    return Carried([tf.constant(stat), tf.constant(seed, tf.int64)],
                   AdamState(tf.constant(count, tf.int64), [tf.constant(mu)], [tf.constant(nu)]))


def test_sequential_starts_each_task_where_the_previous_ended_and_keeps_the_last():
    starts, kept = _run("sequential")
    _same(starts[0], SAVED)
    _same(starts[1], _carried([2.0, 3.0], 11, 5, [10.5], [0.25]))
    _same(starts[2], _carried([4.0, 5.0], 12, 6, [30.5], [0.25]))
    _same(kept, _carried([7.0, 8.0], 13, 7, [60.5], [0.25]))


def test_reset_starts_every_task_from_the_saved_statistics_and_fresh_slots():
    starts, kept = _run("reset")
    for start in starts:
        _same(start, Carried(SAVED.non_trainable, FRESH))
    # Statistics: the mean of 1+1, 1+2, 1+3 (and 2+...); the seed state: the last task's;
    # the slots: as saved.
    _same(kept, Carried([tf.constant([3.0, 4.0]), tf.constant(11, tf.int64)], SAVED.opt))


def test_mean_starts_every_task_from_the_saved_state_and_keeps_the_mean_of_the_ends():
    starts, kept = _run("mean")
    for start in starts:
        _same(start, SAVED)
    _same(kept, _carried([3.0, 4.0], 11, 5, [20.5], [0.25]))


@pytest.mark.parametrize("policy", ["reset", "mean"])
def test_parallel_policies_depend_on_the_set_of_tasks_not_on_order_or_replicas(policy):
    _, one_replica = _run(policy, tasks=(0, 1, 2, 3))
    _, reversed_order = _run(policy, tasks=(3, 2, 1, 0))
    _same(one_replica, reversed_order)
    # Two replicas of two tasks each: the other replica's sums arrive by the all-reduce.
    other = []
    _run(policy, tasks=(2, 3), meta_batch=4, sum_over_replicas=lambda s: other.extend(s) or s)
    _, first = _run(policy, tasks=(0, 1), meta_batch=4,
                    sum_over_replicas=lambda s: [a + b for a, b in zip(s, other, strict=True)])
    _same(first, one_replica)


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown carry-over policy 'last'"):
        _run("last")


@pytest.mark.parametrize("carry, reset, distributed, want", [
    (None, False, False, "sequential"), (None, False, True, "mean"),
    (None, True, False, "reset"), (None, True, True, "reset"),
    ("mean", False, False, "mean"), ("reset", True, False, "reset"),
    ("sequential", False, True, "sequential"),  # a strategy of one replica can
])
def test_the_policy_a_run_uses(carry, reset, distributed, want):
    assert choose_policy(carry, reset, distributed=distributed, replicas=1) == want


def test_sequential_on_several_replicas_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"^--carry_over sequential .* the 2 replicas adapting "
                                          r"in parallel cannot do; use --carry_over mean or "
                                          r"reset, or one device$"):
        choose_policy("sequential", False, distributed=True, replicas=2)
    assert choose_policy(None, False, distributed=True, replicas=2) == "mean"
