"""SIGKILL a meta-training process mid-run; the resumed run ends bit-identical."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from metaseg import checkpoints
from tests.conftest import time_limit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(directory, pause="0"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-m", "tests.meta.train_tiny", str(directory), pause],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _final_values(directory):
    prefix = checkpoints.latest(str(directory))
    assert prefix.endswith("model.ckpt-8"), prefix
    return {name: tf.train.load_variable(prefix, name)
            for name, _ in tf.train.list_variables(prefix) if "VARIABLE_VALUE" in name}


@pytest.mark.slow  # three meta-training processes, one killed and resumed
def test_killed_and_resumed_process_matches_an_uninterrupted_one(tmp_path):
    full = _start(tmp_path / "full")
    killed = _start(tmp_path / "killed", pause="1.0")
    deadline = time.monotonic() + time_limit(120)
    while checkpoints.latest(str(tmp_path / "killed")) is None or \
            not checkpoints.latest(str(tmp_path / "killed")).endswith("-3"):
        assert killed.poll() is None, killed.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run never reached checkpoint 3"
        time.sleep(0.05)
    time.sleep(0.4)  # somewhere inside iteration 4, between checkpoints
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=time_limit(30))
    assert killed.returncode == -signal.SIGKILL
    assert full.wait(timeout=time_limit(180)) == 0, full.stderr.read().decode()[-2000:]

    resumed = _start(tmp_path / "killed")
    assert resumed.wait(timeout=time_limit(180)) == 0, resumed.stderr.read().decode()[-2000:]
    want, got = _final_values(tmp_path / "full"), _final_values(tmp_path / "killed")
    assert want.keys() == got.keys() and len(want) > 10
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
