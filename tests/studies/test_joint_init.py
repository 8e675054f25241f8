"""studies/joint_init.py: a joint-training checkpoint copied as an initialisation that
fine-tunes with SGD at the given step size, its weights unchanged; bad input is one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from metaseg.data import SHARD_SUFFIX, write_shard
from tests.cli.conftest import REPO, subprocess_env
from tests.conftest import time_limit
from tests.data.conftest import synthetic_pairs

SCRIPT = str(REPO / "studies" / "joint_init.py")


def run(*args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=subprocess_env(), timeout=time_limit(300))


@pytest.fixture(scope="module")
def joint_checkpoint(tmp_path_factory):
    """A real 1-epoch joint training run (python -m metaseg.joint_train), 32 px, Adam."""
    root = tmp_path_factory.mktemp("joint_init")
    (root / "shards").mkdir()
    for kind, name in enumerate(("a", "b", "c", "d")):
        images, masks = synthetic_pairs(8, 32, seed=kind, kind=kind)
        write_shard(root / "shards" / f"{name}{SHARD_SUFFIX}", zip(images, masks))
    (root / "test.txt").write_text("d\n")
    result = subprocess.run(
        [sys.executable, "-m", "metaseg.joint_train", "--data-dir", str(root / "shards"),
         "--test_tasks_file", str(root / "test.txt"), "--image_size", "32", "--rsd", "2", "4",
         "--epochs", "1", "--batch_size", "8", "--learning_rate", "0.001", "--nosgd",
         "--checkpoint", str(root / "joint")],
        capture_output=True, text=True, cwd=root, env=subprocess_env(),
        timeout=time_limit(600))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "joint"


def test_copies_the_weights_and_sets_sgd_fine_tuning(joint_checkpoint, tmp_path):
    out = tmp_path / "init"
    result = run("--checkpoint", joint_checkpoint, "--learning_rate", "0.01", "--output", out,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    source = json.loads((joint_checkpoint / "config.json").read_text())
    copied = json.loads((out / "config.json").read_text())
    assert source["inner"]["sgd"] is False and source["inner"]["learning_rate"] == 0.001
    assert copied["inner"]["sgd"] is True and copied["inner"]["learning_rate"] == 0.01
    assert {k: v for k, v in copied.items() if k != "inner"} == \
        {k: v for k, v in source.items() if k != "inner"}
    old = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(joint_checkpoint)))
    new = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    names = old.get_variable_to_shape_map()
    assert set(new.get_variable_to_shape_map()) == set(names) and len(names) > 100
    for name in names:
        np.testing.assert_array_equal(new.get_tensor(name), old.get_tensor(name))
    assert [p for p in os.listdir(tmp_path) if p.startswith(".joint_init")] == []


@pytest.mark.parametrize("case", ["exists", "no_checkpoint", "bad_rate"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(joint_checkpoint, tmp_path, case):
    out = tmp_path / "init"
    checkpoint, rate = joint_checkpoint, "0.01"
    if case == "exists":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    elif case == "no_checkpoint":
        checkpoint = tmp_path / "empty"
        checkpoint.mkdir()
    else:
        rate = "0"
    result = run("--checkpoint", checkpoint, "--learning_rate", rate, "--output", out,
                 cwd=tmp_path)
    assert result.returncode == 2
    expected = {"exists": f"error: --output {out} exists; choose a new folder",
                "no_checkpoint": f"error: --checkpoint {checkpoint} holds no metaseg "
                                 "checkpoint with a config.json; give a joint-training folder "
                                 "of learning_signal.py",
                "bad_rate": "error: --learning_rate must be positive, got 0.0"}[case]
    assert result.stderr.splitlines() == [expected]
    if case == "exists":
        assert os.listdir(out) == ["mine.txt"]
    else:
        assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".joint_init")] == []
