"""build_model: the --model_name registry and backbone restoring."""
import numpy as np
import pytest

from metaseg.config import ModelConfig
from metaseg.errors import CheckpointError, ConfigError
from metaseg.models import EfficientLab, build_model
from tests.models import tf1_fixtures


def test_default_config_is_the_originals_default_no_rsd():
    model = build_model(ModelConfig())
    assert isinstance(model, EfficientLab)
    assert model.rsd == () and model.backbone == "efficientnet-b0"


def test_config_fields_reach_the_model():
    model = build_model(ModelConfig(rsd=(2, 4), final_layer_dropout_rate=0.5,
                                    rsd_residual=False))
    assert model.get_config()["rsd"] == [2, 4]
    assert model.get_layer("final_dropout").rate == 0.5
    assert not model.rsd_residual


def test_unknown_model_name_lists_known():
    with pytest.raises(ConfigError, match="--model_name 'unet'.*efficientlab"):
        build_model(ModelConfig(model_name="unet"))


def test_restore_efficient_net_weights_from_tf1_checkpoint(tmp_path, tf1_weights):
    encoder = {n: v for n, v in tf1_weights.items() if n.startswith("efficientnet-b0/")}
    tf1_fixtures.save_tf1_checkpoint(tmp_path / "b0", encoder)
    model = build_model(ModelConfig(rsd=(4,), restore_efficient_net_weights_from=str(
        tmp_path / "b0")))
    np.testing.assert_array_equal(
        model.encoder.get_layer("block5c_project_conv").kernel.numpy(),
        tf1_weights["efficientnet-b0/blocks_10/conv2d_1/kernel"])


def test_restore_efficient_net_weights_from_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="--restore_efficient_net_weights_from"):
        build_model(ModelConfig(restore_efficient_net_weights_from=str(tmp_path / "none")))
