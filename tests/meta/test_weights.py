import os

import numpy as np
import pytest
import tensorflow as tf

from metaseg.meta import weights
from metaseg.meta.algorithms import direction_order
from tests.conftest import time_limit

RNG = np.random.default_rng(0)
A = [RNG.normal(size=(3, 2)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]
B = [RNG.normal(size=(3, 2)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]


def _close(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-6)


def test_add_subtract_scale_against_numpy():
    _close(weights.add(A, B), [A[0] + B[0], A[1] + B[1]])
    _close(weights.subtract(A, B), [A[0] - B[0], A[1] - B[1]])
    _close(weights.scale(A, 0.25), [A[0] / 4, A[1] / 4])


def test_interpolate_endpoints_and_midpoint():
    _close(weights.interpolate(A, B, 0.0), A)
    _close(weights.interpolate(A, B, 1.0), B)
    _close(weights.interpolate(A, B, 0.5), [(A[i] + B[i]) / 2 for i in range(2)])


def test_all_finite_detects_nan_and_inf():
    assert bool(weights.all_finite(A))
    assert not bool(weights.all_finite([A[0], np.array([1.0, np.nan], np.float32)]))
    assert not bool(weights.all_finite([tf.constant([np.inf])]))


def test_add_n_groups_as_its_cpu_kernel_adds():
    assert weights.add_n_groups(1) == [[0]]
    assert weights.add_n_groups(5) == [[0, 1, 2, 3, 4]]
    assert weights.add_n_groups(8) == [list(range(8))]
    assert weights.add_n_groups(9) == [list(range(9))]
    assert weights.add_n_groups(11) == [[0, 1, 2], list(range(3, 11))]
    assert weights.add_n_groups(17) == [list(range(9)), list(range(9, 17))]


ADD_N_COUNTS = (1, 2, 3, 5, 8, 9, 11, 20)  # counts where tf.add_n's kernel groups inputs

# Against tf.add_n itself (eager: its inputs in the order given), for counts where its kernel
# groups the inputs, and a permuted order; values of mixed magnitude and signed zeros, where
# the order of float additions shows. Prints the counts that differ.
_ADD_N_CHILD = """
import sys
import numpy as np
import tensorflow as tf
from metaseg.meta import weights
differ = []
for count in map(int, sys.argv[1:]):
    rng = np.random.default_rng(count)
    slices = (rng.normal(size=(count, 50)) * 10.0 ** rng.integers(-6, 6, size=(count, 50)))
    slices = slices.astype(np.float32)
    slices[:, :3] = -0.0
    order = list(rng.permutation(count))
    got = weights.total_in_order([tf.constant(slices)], [order])[0].numpy()
    want = tf.add_n([tf.constant(slices[i]) for i in order]).numpy()
    if not (np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))):
        differ.append(count)
print("differ:", differ)
"""


def test_total_in_order_is_add_n_bit_for_bit_in_a_fresh_process():
    """``weights.total_in_order`` against eager ``tf.add_n`` in a process of its own: in a
    long pytest worker, TensorFlow state left by earlier tests changed how eager tf.add_n
    groups its inputs."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", _ADD_N_CHILD, *map(str, ADD_N_COUNTS)], cwd=root,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
        timeout=time_limit(300))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "differ: []"


@pytest.mark.parametrize("num_weights, num_tasks", [(6, 3), (25, 5), (12, 11)])
def test_direction_order_is_that_of_a_compiled_add_n_over_named_arguments(num_weights,
                                                                          num_tasks):
    """The earlier outer update was a tf.function over a list of per-task direction lists:
    its graph optimiser sorts tf.add_n's inputs by argument name. The rule reproduces it."""
    rng = np.random.default_rng(num_weights)
    directions = [[tf.constant((rng.normal(size=40) * 10.0 ** rng.integers(-5, 5, size=40))
                               .astype(np.float32)) for _ in range(num_weights)]
                  for _ in range(num_tasks)]

    @tf.function
    def compiled_add_n(directions):
        return [tf.add_n(list(group)) for group in zip(*directions)]

    want = compiled_add_n(directions)
    stacked = [tf.stack([directions[t][j] for t in range(num_tasks)])
               for j in range(num_weights)]
    got = weights.total_in_order(stacked, direction_order(num_weights, num_tasks))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.numpy(), w.numpy())
    # ... and it is not simply the task order: that differs for some weights.
    plain = weights.total_in_order(stacked, [list(range(num_tasks))] * num_weights)
    assert not all(np.array_equal(p.numpy(), w.numpy()) for p, w in zip(plain, want))
