"""Tiny generated inputs for the end-to-end tests: shards, a test-class list, a TF1 checkpoint
of the published network, and a runner for ``run_metasegnet.py`` / ``run.sh`` subprocesses."""
import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest

from metaseg.data import SHARD_SUFFIX, write_shard
from tests.data.conftest import synthetic_pairs
from tests.conftest import time_limit
from tests.models import tf1_fixtures

REPO = pathlib.Path(__file__).resolve().parents[2]
NUM_CLASSES = 8
EXAMPLES = 12  # --shots 5 + 5 queries fit; --shots 8 does not
SIZE = 32
TEST_CLASSES = ("class_6", "class_7")

# TensorFlow 2.21's C++ start-up lines, printed before absl::InitializeLog whatever
# TF_CPP_MIN_LOG_LEVEL says; everything else on stderr must be metaseg's own.
TF_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR|I0000 [\d:. ]+\d+ \w+\.cc:\d+\] .*|To enable the following instructions: .*)$")


@dataclasses.dataclass(frozen=True)
class Shards:
    data_dir: pathlib.Path  # class_0 ... class_7, 12 examples of 32 px each
    test_classes: pathlib.Path  # class_6 and class_7, one per line


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    data_dir = root / "shards"
    data_dir.mkdir()
    for k in range(NUM_CLASSES):
        images, masks = synthetic_pairs(EXAMPLES, SIZE, seed=k, kind=k)
        write_shard(data_dir / f"class_{k}{SHARD_SUFFIX}", zip(images, masks))
    test_classes = root / "test_classes.txt"
    test_classes.write_text("\n".join(TEST_CLASSES) + "\n")
    return Shards(data_dir, test_classes)


@pytest.fixture(scope="session")
def tf1_weights():
    """{TF1 name: float32 array}: the published EfficientLab-B0 --rsd 2 4, random values."""
    return tf1_fixtures.random_weights(tf1_fixtures.read_tsv(), seed=0)


@pytest.fixture(scope="session")
def tf1_checkpoint(tmp_path_factory, tf1_weights):
    """A checkpoint directory in the authors' TF1 layout. Copy it before a run writes into it."""
    directory = tmp_path_factory.mktemp("tf1") / "EfficientLab-6-3_FOMAML-star_checkpoint"
    tf1_fixtures.save_tf1_checkpoint(directory, tf1_weights)
    return directory


def subprocess_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO), **extra)
    # run.sh calls `python`: make it this interpreter.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def run_script(args, *, cwd, env=None, timeout=300):
    """``python run_metasegnet.py ARGS`` (or ``bash run.sh`` when args[0] == 'run.sh');
    ``timeout`` is in idle-machine seconds, scaled by :func:`tests.conftest.time_limit`."""
    if args and args[0] == "run.sh":
        command = ["bash", str(REPO / "run.sh"), *args[1:]]
    else:
        command = [sys.executable, str(REPO / "run_metasegnet.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                          env=env or subprocess_env(), timeout=time_limit(timeout))


def own_stderr_lines(stderr):
    """stderr lines minus TensorFlow's C++ start-up noise."""
    return [line for line in stderr.splitlines() if not TF_STARTUP_NOISE.match(line)]
