"""Scores as REFERENCE.md section 7 defines them, against hand-computed tiny masks."""
import math

import numpy as np
import pytest

from metaseg.evaluation.metrics import IOU_EPSILON, binary_iou, mean_and_ci95


def two_channel(foreground):
    """float32 [N,S,S,2] from foreground values [N,S,S]; channel 0 = 1 - foreground."""
    fg = np.asarray(foreground, np.float32)
    return np.stack([1 - fg, fg], axis=-1)


def square(size, r0, r1, c0, c1, value=1.0):
    out = np.zeros((size, size), np.float32)
    out[r0:r1, c0:c1] = value
    return out


def test_iou_of_hand_made_masks():
    empty = np.zeros((4, 4), np.float32)
    a = square(4, 0, 2, 0, 2)  # 4 pixels
    b = square(4, 0, 2, 0, 3)  # 6 pixels containing a
    c = square(4, 2, 4, 2, 4)  # 4 pixels disjoint from a
    probs = two_channel([a, empty, empty, a, a, b])
    labels = two_channel([a, empty, a, b, c, empty])
    iou = binary_iou(probs, labels).numpy()
    assert iou.shape == (6,) and iou.dtype == np.float32
    eps = IOU_EPSILON
    expected = [1.0,                       # perfect
                1.0,                       # empty prediction of an empty mask scores 1
                eps / (4 + eps),           # empty prediction of a 4-pixel mask: ~0, not NaN
                (4 + eps) / (6 + eps),     # 4 of 6 pixels
                eps / (8 + eps),           # disjoint
                eps / (6 + eps)]           # false positives only
    np.testing.assert_allclose(iou, expected, rtol=1e-6, atol=0)
    assert IOU_EPSILON == 1e-7
    assert 0 < iou[2] < 1e-7  # the epsilon is in the numerator too


def test_probabilities_and_labels_are_rounded_half_to_even():
    """np.round / tf.round as the original: 0.5 -> 0 (background), anything above -> 1."""
    pred = np.array([[[0.5, 0.5000001], [0.49, 0.99]]], np.float32)  # -> [[0, 1], [0, 1]]
    label = np.array([[[0.6, 0.6], [0.4, 0.5]]], np.float32)         # -> [[1, 1], [0, 0]]
    # intersection {(0,1)} = 1 pixel; union {(0,0), (0,1), (1,1)} = 3 pixels
    iou = binary_iou(two_channel(pred), two_channel(label)).numpy()
    np.testing.assert_allclose(iou, [(1 + 1e-7) / (3 + 1e-7)], rtol=1e-6)


def test_only_the_foreground_channel_counts():
    fg = square(4, 1, 3, 1, 3)
    probs = two_channel([fg])
    probs[..., 0] = np.random.default_rng(0).uniform(size=(1, 4, 4))  # garbage background
    labels = two_channel([fg])
    labels[..., 0] = 1.0
    assert binary_iou(probs, labels).numpy().tolist() == [1.0]


def test_ci95_formula_with_nans_ignored():
    # Values 0.2, 0.4, 0.6: mean 0.4, population std sqrt(0.08 / 3), n = 3.
    mean, ci = mean_and_ci95([0.2, 0.4, float("nan"), 0.6])
    assert mean == pytest.approx(0.4, abs=1e-12)
    assert ci == pytest.approx(1.96 * math.sqrt(0.08 / 3) / math.sqrt(3), rel=1e-12)
    assert ci == pytest.approx(0.18479, abs=1e-5)


def test_ci95_edge_cases():
    assert mean_and_ci95([0.7]) == (0.7, 0.0)
    assert mean_and_ci95([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.0))
    assert all(math.isnan(v) for v in mean_and_ci95([]))
    assert all(math.isnan(v) for v in mean_and_ci95([float("nan")]))
    # two values a, b: std = |a - b| / 2
    assert mean_and_ci95([0.0, 1.0]) == pytest.approx((0.5, 1.96 * 0.5 / math.sqrt(2)))
