"""data_tools/convert_tf1_checkpoint.py: TF1 checkpoint -> Keras weights file."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from data_tools import convert_tf1_checkpoint as convert_script
from metaseg.config import ModelConfig
from metaseg.errors import ConfigError
from metaseg.models import EfficientLab
from tests.models import tf1_reference
from tests.conftest import time_limit

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "data_tools" / "convert_tf1_checkpoint.py"


def test_converted_weights_reproduce_the_original(tmp_path, tf1_checkpoint_dir, tf1_weights):
    output = str(tmp_path / "published.weights.h5")
    count = convert_script.convert(str(tf1_checkpoint_dir), output, ModelConfig(rsd=(2, 4)))
    assert count == 247 and os.path.getsize(output) > 8_000_000  # 2.07M float32 + stats
    model = EfficientLab(rsd=(2, 4))
    model.load_weights(output)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    _, expected = tf1_reference.efficientlab(x, tf1_weights)
    assert np.max(np.abs(model(x, training=False).numpy() - expected.numpy())) < 1e-4


def test_output_name_must_be_a_keras_weights_file(tmp_path, tf1_checkpoint_dir):
    with pytest.raises(ConfigError, match=r"\.weights\.h5"):
        convert_script.convert(str(tf1_checkpoint_dir), str(tmp_path / "x.h5"), ModelConfig())


def test_command_line_bad_input_is_one_line_exit_2(tmp_path, tf1_checkpoint_dir):
    """Space-separated --rsd as the original wrote it; the wrong --rsd is reported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tf1_checkpoint", str(tf1_checkpoint_dir),
         "--output", str(tmp_path / "m.weights.h5"), "--rsd", "4"],
        capture_output=True, text=True, env=env, timeout=time_limit(120))
    assert result.returncode == 2
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "--rsd" in errors[0] and "not in the model: 18" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.weights.h5").exists()
