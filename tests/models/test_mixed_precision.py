"""ModelConfig(mixed_precision="bf16"): Keras's mixed_bfloat16 policy, float32 where it matters.

It is a library and benchmark option, not a command-line flag (README, Mixed precision)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.config import InnerConfig, ModelConfig
from metaseg.errors import ConfigError
from metaseg.meta.adapt import Adapter
from metaseg.models import build_model

SIZE = 32


def _model(precision):
    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(rsd=(2, 4), mixed_precision=precision))


def _batches(steps=2, batch=2):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (steps, batch, SIZE, SIZE, 3)).astype(np.float32)
    fg = (rng.uniform(size=(steps, batch, SIZE, SIZE)) > 0.6).astype(np.float32)
    return tf.constant(x), tf.constant(np.stack([1 - fg, fg], -1))


@pytest.fixture(scope="module")
def models():
    return {p: _model(p) for p in ("fp32", "bf16")}


def test_policy_is_per_model_and_restored(models):
    assert keras.config.dtype_policy().name == "float32"
    bf16 = models["bf16"]
    assert {v.dtype for v in bf16.weights} == {"float32"}  # variables stay float32
    compute = {layer.dtype_policy.compute_dtype for layer in bf16.logits_model.layers
               if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}
    assert "bfloat16" in compute
    assert bf16.logits_model.get_layer("logits").dtype_policy.compute_dtype == "float32"
    assert {layer.dtype_policy.compute_dtype for layer in models["fp32"].layers} == {"float32"}


def test_same_initial_weights(models):
    for a, b in zip(models["fp32"].weights, models["bf16"].weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bf16_adaptation_runs_with_finite_float32_losses(models):
    adapter = Adapter(models["bf16"], InnerConfig(sgd=True, learning_rate=0.01,
                                                  loss_name="bce_dice"))
    x, y = _batches()
    state, losses = adapter.adapt(adapter.initial_state(), x, y, tf.constant(0.01),
                                  tf.constant(0), tf.constant(2))
    assert losses.dtype == tf.float32 and losses.shape == (2,)
    assert np.all(np.isfinite(losses.numpy()))
    assert all(t.dtype == tf.float32 for t in state.trainable)
    probs = adapter.predict(state, x[0])
    assert probs.dtype == tf.float32 and np.all(np.isfinite(probs.numpy()))


def test_bf16_probabilities_close_to_but_not_equal_fp32(models):
    x, _ = _batches()
    fp32, bf16 = (models[p](x[0], training=False).numpy() for p in ("fp32", "bf16"))
    assert bf16.dtype == np.float32
    difference = np.abs(fp32 - bf16)
    assert difference.max() > 0  # really computed in bfloat16
    assert difference.mean() < 0.02 and difference.max() < 0.15, (difference.mean(),
                                                                   difference.max())


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="ModelConfig.mixed_precision must be one of fp32, bf16"):
        ModelConfig(mixed_precision="fp16x")


def test_it_is_not_a_command_line_flag(tmp_path):
    from tests.cli.conftest import own_stderr_lines, run_script  # pylint: disable=import-outside-toplevel
    result = run_script(["--mixed_precision", "bf16", "--dataset", "synthetic"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = own_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "mixed_precision" in lines[0]
    assert list(tmp_path.iterdir()) == []
