"""Fold mIoU and FB-IoU against hand-computed values."""
import math

import numpy as np
import pytest

from metaseg.errors import ConfigError
from metaseg.evaluation.fold_metrics import FoldMetrics

# Three episodes of 2 x 2 query images. Per image: I, U (foreground) and bg I, bg U.
EPISODES = [
    ("a", [[[1, 1], [0, 0]], [[0, 0], [0, 0]]],   # I 1 U 2 | bg 2 3 ; I 0 U 0 | bg 4 4
          [[[1, 0], [0, 0]], [[0, 0], [0, 0]]]),
    ("b", [[[1, 1], [1, 1]]], [[[1, 0], [0, 0]]]),   # I 1 U 4 | bg 0 3
    ("a", [[[1, 1], [1, 1]]], [[[0, 1], [0, 0]]]),   # I 1 U 4 | bg 0 3
]


def _scored(classes=("a", "b", "c")):
    metrics = FoldMetrics(classes)
    for name, pred, true in EPISODES:
        metrics.add(name, np.array(pred), np.array(true))
    return metrics


def test_accumulated_class_iou_and_miou():
    metrics = _scored()
    iou = metrics.class_iou()
    assert iou["a"] == pytest.approx(2 / 6)  # (1 + 0 + 1) / (2 + 0 + 4), not a mean of ratios
    assert iou["b"] == pytest.approx(1 / 4)
    assert math.isnan(iou["c"])  # never scored: left out of the mean
    assert metrics.miou() == pytest.approx((2 / 6 + 1 / 4) / 2)


def test_fb_iou_and_per_image_iou():
    metrics = _scored()
    foreground = 3 / 10  # I 1+0+1+1, U 2+0+4+4
    background = 6 / 13  # I 2+4+0+0, U 3+4+3+3
    assert metrics.fb_iou() == pytest.approx((foreground + background) / 2)
    # Per image: 1/2, empty-on-empty 1, 1/4, 1/4 (REFERENCE.md section 7).
    assert metrics.mean_image_iou() == pytest.approx(0.5)
    summary = metrics.summary()
    assert summary["classes_in_mIoU"] == 2 and summary["episodes"] == {"a": 2, "b": 1, "c": 0}


def test_two_channel_probabilities_score_like_binary_masks():
    binary = _scored()
    two_channel = FoldMetrics(("a", "b", "c"))
    for name, pred, true in EPISODES:
        p = np.array(pred, np.float32) * 0.8 + 0.1  # 0.9 / 0.1 foreground probabilities
        t = np.array(true, np.float32)
        two_channel.add(name, np.stack([1 - p, p], -1), np.stack([1 - t, t], -1))
    assert two_channel.summary() == binary.summary()


def test_bad_input_and_empty():
    metrics = FoldMetrics(["a"])
    assert math.isnan(metrics.miou()) and math.isnan(metrics.fb_iou())
    with pytest.raises(ConfigError, match="not one of the fold's classes"):
        metrics.add("zebra", np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.add("a", np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))
    with pytest.raises(ConfigError):
        FoldMetrics([])
