"""Loss and regularisers (REFERENCE.md section 4) against numpy written from the formulas."""
import numpy as np
import pytest
import tensorflow as tf

from metaseg.errors import ConfigError
from metaseg.models import losses


def _batch(seed=0, n=3, size=8):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, size, size, 2)).astype(np.float32)
    fg = (rng.uniform(size=(n, size, size)) > 0.6).astype(np.float32)
    labels = np.stack([1 - fg, fg], axis=-1)
    return logits, labels


def _numpy_ce(logits, labels, smoothing=0.0):
    labels = labels * (1 - smoothing) + smoothing / 2
    z = logits - logits.max(-1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(np.mean(-(labels * log_softmax).sum(-1)))


def _numpy_iou(logits, labels):
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p, y = p[..., 1].reshape(len(p), -1), labels[..., 1].reshape(len(p), -1)
    inter = (p * y).sum(1)
    return float(np.mean((inter + 1e-7) / (p.sum(1) + y.sum(1) - inter + 1e-7)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(smoothing):
    logits, labels = _batch()
    got = losses.segmentation_loss(logits, labels, loss_name="cross_entropy",
                                   label_smoothing=smoothing)
    assert float(got) == pytest.approx(_numpy_ce(logits, labels, smoothing), rel=1e-5)


def test_dice_adds_minus_log_dice_of_mean_iou():
    logits, labels = _batch(1)
    iou = _numpy_iou(logits, labels)
    expected = _numpy_ce(logits, labels, 0.1) - np.log(2 * iou / (iou + 1))
    got = losses.segmentation_loss(logits, labels, loss_name="bce_dice", label_smoothing=0.1)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_perfect_prediction_has_near_zero_dice_term():
    _, labels = _batch(2)
    logits = (labels * 2 - 1) * 30.0
    assert float(losses.segmentation_loss(logits, labels, loss_name="dice")) < 1e-5


def test_empty_masks_score_iou_one():
    labels = np.zeros((2, 4, 4, 2), np.float32)
    labels[..., 0] = 1
    logits = np.zeros((2, 4, 4, 2), np.float32)
    logits[..., 0] = 40.0
    assert float(losses.soft_iou(tf.nn.softmax(logits), labels)) == pytest.approx(1.0)


def test_unknown_loss_name():
    logits, labels = _batch()
    with pytest.raises(ConfigError, match="--loss_name"):
        losses.segmentation_loss(logits, labels, loss_name="focal")


def test_regularized_mask_excludes_batch_norm_gamma_beta(published_model):
    mask = losses.regularized_mask(published_model)
    variables = published_model.trainable_variables
    assert len(mask) == len(variables) == 169
    excluded = [v.path for v, keep in zip(variables, mask) if not keep]
    assert len(excluded) == 78  # gamma and beta of 39 batch norms
    assert all(p.endswith(("/gamma", "/beta")) for p in excluded)
    kept = [v.path for v, keep in zip(variables, mask) if keep]
    assert all(p.endswith(("/kernel", "/bias")) for p in kept)
    assert "final_layer_weights/bias" in kept and "block1a_se_reduce/bias" in kept


def test_regularization_terms():
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=s).astype(np.float32) for s in [(3, 3), (4,), (2, 2, 2)]]
    mask = [True, False, True]
    logits = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    kept = [weights[0], weights[2]]
    l2 = 0.0005 * sum(float((w ** 2).sum()) / 2 for w in kept)
    l1 = 0.0005 * sum(float(np.abs(w).sum()) for w in kept)
    darc1 = 0.0005 * float(np.abs(logits).sum(axis=0).max())
    tensors = [tf.constant(w) for w in weights]
    check = lambda expected, **kw: pytest.approx(expected, rel=1e-5) == float(
        losses.regularization_loss(tensors, mask, logits, **kw))
    assert check(l2, l2=True) and check(l1, l1=True) and check(darc1, darc1=True)
    assert check(l2 + l1 + darc1, l2=True, l1=True, darc1=True)
    assert float(losses.regularization_loss(tensors, mask, logits)) == 0.0


def test_losses_compile_in_tf_function_and_differentiate():
    logits, labels = _batch(4)
    w = tf.Variable(np.ones((3,), np.float32))

    @tf.function
    def total(x, y):
        with tf.GradientTape() as tape:
            scaled = x * w[0]
            loss = (losses.segmentation_loss(scaled, y, loss_name="bce_dice",
                                             label_smoothing=0.1)
                    + losses.regularization_loss([w], [True], scaled, l2=True, darc1=True))
        return loss, tape.gradient(loss, w)

    loss, grad = total(tf.constant(logits), tf.constant(labels))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad.numpy()))
    assert float(grad[0]) != 0.0
