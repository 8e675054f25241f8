"""The one meta-step gives exactly the weights of the code it replaced (one device).

``data/meta_step_reference.npz`` holds the final variables of the tiny runs of
``step_reference.py`` as the former one-device loop (one compiled adaptation and one host
read per task, then eager assignments) computed them, at the commit its ``provenance`` names.
The compiled meta-step, with the default carry-over policy (sequential) and with
``--reset_state_per_task``, must give the same bits: trainable weights, batch-norm
statistics, dropout seed state and optimiser slots. The runs are repeated in a fresh process
with the thread pools the data was written with (see ``step_reference.py``).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import time_limit
from tests.meta import step_reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = np.load(step_reference.DATA)


@pytest.fixture(scope="module")
def today(tmp_path_factory):
    out = tmp_path_factory.mktemp("step_reference") / "today.npz"
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    subprocess.run([sys.executable, "-m", "tests.meta.step_reference", str(out)], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=time_limit(120))
    return np.load(out)


def test_the_reference_says_where_it_comes_from():
    assert str(REFERENCE["provenance"]).startswith(
        "written by tests/meta/step_reference.py at metaseg commit ")


@pytest.mark.parametrize("name", sorted(step_reference.RUNS))
def test_one_device_meta_training_is_bit_identical_to_the_reference(today, name):
    keys = sorted(k for k in REFERENCE.files if k.startswith(f"{name}/"))
    assert keys and keys == sorted(k for k in today.files if k.startswith(f"{name}/"))
    differ = {k: float(np.max(np.abs(today[k].astype(np.float64) - REFERENCE[k])))
              for k in keys if not np.array_equal(today[k], REFERENCE[k])}
    if _cpu_model() in str(REFERENCE["provenance"]):
        assert not differ, differ
    else:  # oneDNN picks kernels by instruction set: on another CPU only close, not equal
        for k in keys:
            np.testing.assert_allclose(today[k], REFERENCE[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
