"""``checkpoints.Saver`` writes the ``checkpoint`` index last: an exception or a SIGKILL
between the tensor write and the index write leaves the checkpoints listed before loadable,
lists nothing half-written, and the next save clears what the interrupted one left."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from metaseg import checkpoints
from metaseg.checkpoints import writer
from metaseg.errors import CheckpointError
from tests.cli.conftest import REPO, subprocess_env
from tests.conftest import time_limit
from tests.meta.conftest import tiny_logits_model


def saver_of(model, directory, keep=2):
    state = checkpoints.MetaState(model)
    return state, checkpoints.Saver(state.checkpoint, str(directory), keep)


def save(state, saver, iteration, loss=1.0):
    state.iteration.assign(iteration)
    return saver.save(iteration, loss, beside={checkpoints.CONFIG_FILE: {"n": iteration}})


def weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def assert_only_first_is_there(directory, first_weights):
    """Checkpoint 1 is the one listed, loads, and matches; nothing of checkpoint 2 is listed."""
    assert [s.iteration for s in checkpoints.listed(str(directory))] == [1]
    assert checkpoints.latest(str(directory)) == str(directory / "model.ckpt-1")
    found = checkpoints.detect(directory)
    assert found.prefix == str(directory / "model.ckpt-1")
    fresh = tiny_logits_model(seed=9)
    assert checkpoints.restore_weights(fresh, str(directory)) == 1
    for value, expected in zip(weights(fresh), first_weights):
        np.testing.assert_array_equal(value, expected)


@pytest.mark.parametrize("stage", ["publish", "beside", "index"])
def test_an_exception_before_the_index_leaves_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                      stage):
    model = tiny_logits_model(seed=0)
    state, saver = saver_of(model, tmp_path)
    save(state, saver, 1)
    first = weights(model)
    for var in model.trainable_variables:
        var.assign(var + 1.0)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C: re-raised as it is, after cleaning up

    if stage == "publish":  # the tensors are staged, not yet renamed into place
        monkeypatch.setattr(writer, "_publish", interrupted)
    elif stage == "beside":  # model.ckpt-2 in place, config.json not yet written
        monkeypatch.setattr(writer, "write_json", interrupted)
    else:  # everything written but the index
        write_text = writer.write_text_atomic

        def index_interrupted(path, *args, **kwargs):
            if os.path.basename(path) == checkpoints.INDEX_FILE:
                interrupted()
            write_text(path, *args, **kwargs)

        monkeypatch.setattr(writer, "write_text_atomic", index_interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(state, saver, 2)
    assert_only_first_is_there(tmp_path, first)
    assert not any(n.startswith("model.ckpt-2") for n in os.listdir(tmp_path))
    assert checkpoints.stale_files(str(tmp_path)) == []
    assert checkpoints.read_config(str(tmp_path)) == {"n": 1}


def test_a_full_disk_at_the_index_is_one_line_and_leaves_the_previous(tmp_path, monkeypatch):
    model = tiny_logits_model(seed=0)
    state, saver = saver_of(model, tmp_path)
    save(state, saver, 1, loss=0.5)
    first = weights(model)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # every atomic text write fails
    with pytest.raises(CheckpointError) as info:
        save(state, saver, 2)
    message = str(info.value)
    assert message.startswith(f"could not write checkpoint {tmp_path}/model.ckpt-2: No space "
                              "left on device; nothing of it was left behind; the newest "
                              f"complete checkpoint is {tmp_path}/model.ckpt-1 (meta-iteration "
                              "1, mean training loss 0.5)")
    monkeypatch.undo()
    assert_only_first_is_there(tmp_path, first)
    assert checkpoints.stale_files(str(tmp_path)) == []


# Saves checkpoint 1, then checkpoint 2 with SIGKILL at the stage named by argv[2].
KILLED = textwrap.dedent("""
    import os, signal, sys
    from metaseg import checkpoints
    from metaseg.checkpoints import writer
    from tests.checkpoints.test_atomic_save import save, saver_of
    from tests.meta.conftest import tiny_logits_model

    model = tiny_logits_model(seed=0)
    state, saver = saver_of(model, sys.argv[1])
    save(state, saver, 1)
    for var in model.trainable_variables:
        var.assign(var + 1.0)
    kill = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    if sys.argv[2] == "publish":
        writer._publish = kill
    else:
        writer.Saver._write_index = kill
    save(state, saver, 2)
""")


@pytest.mark.parametrize("stage", ["publish", "index"])
def test_a_sigkill_before_the_index_leaves_the_previous_checkpoint(tmp_path, stage):
    directory = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", KILLED, str(directory), stage], cwd=REPO,
                            env=subprocess_env(), capture_output=True, text=True,
                            timeout=time_limit(300))
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    first = weights(tiny_logits_model(seed=0))
    assert_only_first_is_there(directory, first)
    left = set(os.listdir(directory))
    if stage == "publish":  # the staged tensors are there, under a name nothing reads
        assert checkpoints.stale_files(str(directory))
        assert not any(n.startswith("model.ckpt-2") for n in left)
    else:  # complete files, not listed
        assert "model.ckpt-2.index" in left
    # the next save (a resumed run) lists itself and clears what the killed one left
    model = tiny_logits_model(seed=0)
    state, saver = saver_of(model, directory)
    save(state, saver, 2)
    assert [s.iteration for s in checkpoints.listed(str(directory))] == [1, 2]
    assert checkpoints.stale_files(str(directory)) == []
    with open(directory / checkpoints.LOSSES_FILE, encoding="utf-8") as f:
        assert json.load(f) == {"model.ckpt-1": 1.0, "model.ckpt-2": 1.0}


def test_saving_the_listed_iteration_again_replaces_it(tmp_path):
    """Re-evaluating into the same --save_fine_tuned_checkpoints folder: one checkpoint."""
    snapshot = checkpoints.Snapshot()
    model = tiny_logits_model(seed=0)
    values = [tf.constant(v.numpy()) for v in model.trainable_variables]
    others = [tf.constant(v.numpy()) for v in model.non_trainable_variables]
    snapshot.save(str(tmp_path), values, others, 4, config={"a": 1})
    snapshot.save(str(tmp_path), [v + 1.0 for v in values], others, 4, config={"a": 2})
    assert [s.iteration for s in checkpoints.listed(str(tmp_path))] == [4]
    assert checkpoints.read_config(str(tmp_path)) == {"a": 2}
    fresh = tiny_logits_model(seed=3)
    assert checkpoints.restore_weights(fresh, str(tmp_path)) == 4
    for value, expected in zip(weights(fresh), values):
        np.testing.assert_array_equal(value, expected.numpy() + 1.0)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "config.json", "model.ckpt-4.data-"
                                            "00000-of-00001", "model.ckpt-4.index"]
