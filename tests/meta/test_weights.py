import numpy as np
import tensorflow as tf

from metaseg.meta import weights

RNG = np.random.default_rng(0)
A = [RNG.normal(size=(3, 2)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]
B = [RNG.normal(size=(3, 2)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]
C = [RNG.normal(size=(3, 2)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32)]


def _close(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-6)


def test_add_subtract_scale_against_numpy():
    _close(weights.add(A, B), [A[0] + B[0], A[1] + B[1]])
    _close(weights.subtract(A, B), [A[0] - B[0], A[1] - B[1]])
    _close(weights.scale(A, 0.25), [A[0] / 4, A[1] / 4])


def test_mean_of_three_lists():
    _close(weights.mean([A, B, C]), [(A[i] + B[i] + C[i]) / 3 for i in range(2)])


def test_interpolate_endpoints_and_midpoint():
    _close(weights.interpolate(A, B, 0.0), A)
    _close(weights.interpolate(A, B, 1.0), B)
    _close(weights.interpolate(A, B, 0.5), [(A[i] + B[i]) / 2 for i in range(2)])


def test_all_finite_detects_nan_and_inf():
    assert bool(weights.all_finite(A))
    assert not bool(weights.all_finite([A[0], np.array([1.0, np.nan], np.float32)]))
    assert not bool(weights.all_finite([tf.constant([np.inf])]))
