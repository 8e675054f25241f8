"""``--steps auto``'s k-fold choice (metaseg.evaluation.autosteps) on a model whose held-out
curves are known in closed form, the folds, and the quality estimate's invariants."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.config import InnerConfig
from metaseg.errors import DataError
from metaseg.evaluation import autosteps, quality
from metaseg.meta.adapt import Adapter
from metaseg.specs import BatchSpec

S, LR = 4, 0.1


def constant_model():
    """Logits [N,S,S,2] = a 1x1 convolution, zero weights: foreground sigmoid(bias1 - bias0)."""
    inputs = keras.Input((S, S, 3))
    outputs = keras.layers.Conv2D(2, 1, kernel_initializer="zeros",
                                  bias_initializer="zeros")(inputs)
    return keras.Model(inputs, outputs)


def rising_loss(trainable, logits, labels):
    """d loss / d bias1 = -1 whatever the batch: SGD raises bias1 by LR every step, so after
    step k every pixel's foreground probability is sigmoid(LR k)."""
    del labels
    return -trainable[1][1] + 0.0 * tf.reduce_sum(logits)


def distance_score(probabilities, labels):
    """-|mean foreground probability - the held-out image's target| per image."""
    return -tf.abs(tf.reduce_mean(probabilities[..., 1], [1, 2])
                   - tf.reduce_mean(labels[..., 1], [1, 2]))


def soft_labels(targets):
    t = np.asarray(targets, np.float32)[:, None, None, None]
    return np.concatenate([np.broadcast_to(1 - t, (len(t), S, S, 1)),
                           np.broadcast_to(t, (len(t), S, S, 1))], -1).astype(np.float32)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def adapter():
    return Adapter(constant_model(), InnerConfig(sgd=True, learning_rate=LR),
                   loss_fn=rising_loss)


def test_choice_is_the_median_of_the_held_out_optima(adapter):
    """Leave-one-out on 3 images whose own best step counts are 3, 5 and 8: the mean of
    -|p_k - t_i| is highest at the median, step 5; each fold's curve peaks at its own."""
    best = [3, 5, 8]
    masks = soft_labels([sigmoid(LR * k) for k in best])
    images = np.zeros((3, S, S, 3), np.float32)
    found = autosteps.held_out_curves(adapter, images, masks, BatchSpec(2), max_steps=12,
                                      learning_rate=LR, seed=0, score_fn=distance_score)
    assert found.held_out == [[0], [1], [2]]
    assert found.steps == 5
    assert [int(np.argmax(c)) + 1 for c in found.fold_curves] == best
    expected = [-np.mean([abs(sigmoid(LR * k) - sigmoid(LR * b)) for b in best])
                for k in range(1, 13)]
    np.testing.assert_allclose(found.curve, expected, atol=1e-6)
    assert found.score == pytest.approx(found.curve[4])
    record = found.record(["a", "b", "c"])
    assert record["chosen_steps"] == 5 and record["folds"] == [["a"], ["b"], ["c"]]
    assert len(record["held_out_curve"]) == 12 and len(record["fold_curves"]) == 3


def test_chunked_folds_give_the_same_curves(adapter):
    """A budget of one mini-batch per call continues the state: the same curves."""
    masks = soft_labels([sigmoid(LR * k) for k in (2, 4, 6, 9, 1, 7)])
    images = np.zeros((6, S, S, 3), np.float32)
    whole = autosteps.held_out_curves(adapter, images, masks, BatchSpec(2), max_steps=10,
                                      learning_rate=LR, seed=3, score_fn=distance_score)
    chunked = autosteps.held_out_curves(adapter, images, masks, BatchSpec(2), max_steps=10,
                                        learning_rate=LR, seed=3, score_fn=distance_score,
                                        batch_bytes=1)
    np.testing.assert_allclose(chunked.fold_curves, whole.fold_curves, atol=1e-7)
    assert chunked.steps == whole.steps
    # six images: five folds, sizes 2,1,1,1,1, each image held out once
    assert sorted(len(f) for f in whole.held_out) == [1, 1, 1, 1, 2]
    assert sorted(i for f in whole.held_out for i in f) == list(range(6))


def test_folds_and_choice_rules():
    assert autosteps.folds(5) == [[0], [1], [2], [3], [4]]
    eleven = autosteps.folds(11, seed=1)
    assert len(eleven) == 5 and sorted(sum(eleven, [])) == list(range(11))
    with pytest.raises(DataError, match="at least two"):
        autosteps.folds(1)
    assert autosteps.choose([0.2, 0.5, 0.5, 0.1]) == 2  # the earliest of equal scores
    assert autosteps.choose([math.nan, 0.3, 0.1]) == 2
    line = autosteps.cost_line(5, 20, 10)
    assert line.startswith("steps auto: 5 leave-one-out folds x 20 steps") and "12x" in line


def test_calibration_interval_contains_the_estimate():
    """Fitted on a known linear relation plus noise: estimates in [0, 1], low <= estimate
    <= high, cross-validated coverage near 90 %, and the JSON round trip predicts the same."""
    rng = np.random.default_rng(0)
    agreement = rng.uniform(0, 1, 400)
    features = np.stack([agreement, rng.uniform(0, 1, 400), rng.uniform(0, 0.3, 400),
                         rng.uniform(0, 0.5, 400), rng.uniform(0, 0.7, 400)], 1)
    iou = np.clip(0.9 * agreement + rng.normal(0, 0.05, 400), 0, 1)
    value = quality.fit(features, iou)
    model = value["models"][quality.MASKS]
    assert 0.8 <= model["cross_validated"]["coverage"] <= 0.97
    assert model["cross_validated"]["spearman"] > 0.9
    estimate, low, high = quality.Calibration(value).estimate(features)
    assert np.all((0 <= low) & (low <= estimate) & (estimate <= high) & (high <= 1))
    assert np.mean((iou >= low) & (iou <= high)) > 0.8
