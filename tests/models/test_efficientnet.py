"""The truncated EfficientNet encoder built from keras.applications."""
import keras
import numpy as np
import pytest

from metaseg.errors import ConfigError
from metaseg.models import efficientnet
from metaseg.models.efficientnet import build_encoder


@pytest.fixture(scope="module")
def b0():
    keras.utils.set_random_seed(0)
    return build_encoder("efficientnet-b0")


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def test_b0_reductions_by_name_at_64px(b0):
    out = b0(np.zeros((2, 64, 64, 3), np.float32), training=False)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "reduction_1": (2, 32, 32, 16), "reduction_2": (2, 16, 16, 24),
        "reduction_3": (2, 8, 8, 40), "reduction_4": (2, 4, 4, 112)}


def test_b0_keeps_only_the_stride_16_blocks(b0):
    # spec: 851,808 encoder parameters; 33 batch norms -> 66 moving statistics.
    assert _count(b0.trainable_weights) == 851_808
    assert len(b0.non_trainable_weights) == 66
    assert len(b0.weights) == 209
    paths = [v.path for v in b0.weights]
    assert not [p for p in paths if p.startswith(("block6", "block7", "top_"))]
    assert efficientnet.block_prefixes(b0.layers) == [
        "block1a_", "block2a_", "block2b_", "block3a_", "block3b_", "block4a_", "block4b_",
        "block4c_", "block5a_", "block5b_", "block5c_"]


def test_b0_stochastic_depth_scaled_by_blocks_kept(b0):
    rates = {l.name: l.rate for l in b0.layers if isinstance(l, keras.layers.Dropout)}
    # residual blocks 2, 4, 6, 7, 9, 10 of 11 drop at 0.2 * idx / 11
    expected = {"block2b_drop": 2, "block3b_drop": 4, "block4b_drop": 6, "block4c_drop": 7,
                "block5b_drop": 9, "block5c_drop": 10}
    assert rates.keys() == expected.keys()
    for name, idx in expected.items():
        assert rates[name] == pytest.approx(0.2 * idx / 11)


def test_b0_stochastic_depth_only_in_training(b0):
    x = np.random.default_rng(0).uniform(-2, 2, (8, 32, 32, 3)).astype(np.float32)
    infer = [b0(x, training=False)["reduction_4"] for _ in range(2)]
    np.testing.assert_array_equal(infer[0], infer[1])
    train = [np.asarray(b0(x, training=True)["reduction_4"]) for _ in range(3)]
    assert not (np.allclose(train[0], train[1]) and np.allclose(train[1], train[2]))


def test_b3_structure():
    encoder = build_encoder("efficientnet-b3")
    channels = {k: v.shape[-1] for k, v in encoder.output.items()}
    assert channels == {"reduction_1": 24, "reduction_2": 32, "reduction_3": 48,
                        "reduction_4": 136}
    prefixes = efficientnet.block_prefixes(encoder.layers)
    assert len(prefixes) == 18 and prefixes[-1] == "block5e_"
    assert encoder.get_layer("block5e_drop").rate == pytest.approx(0.2 * 17 / 18)
    out = encoder(np.zeros((1, 32, 32, 3), np.float32))
    assert tuple(out["reduction_4"].shape) == (1, 2, 2, 136)


def test_unknown_backbone_lists_choices():
    with pytest.raises(ConfigError, match="efficientnet-b0, efficientnet-b3"):
        build_encoder("efficientnet-b7")


def test_imagenet_weights_are_passed_to_keras_applications(monkeypatch):
    """The download path: weights='imagenet' reaches keras.applications (no network here)."""
    calls = []
    real = keras.applications.EfficientNetB0

    def recording(**kwargs):
        calls.append(kwargs)
        return real(**{**kwargs, "weights": None})

    monkeypatch.setattr(keras.applications, "EfficientNetB0", recording)
    encoder = build_encoder("efficientnet-b0", weights="imagenet")
    assert calls == [{"include_top": False, "weights": "imagenet",
                      "input_shape": (None, None, 3)}]
    assert encoder.output["reduction_4"].shape[-1] == 112


def test_unknown_weights_rejected():
    with pytest.raises(ConfigError, match="--backbone_weights"):
        build_encoder("efficientnet-b0", weights="/some/file.h5")
