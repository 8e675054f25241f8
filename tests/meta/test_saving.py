"""Checkpoint rotation that keeps the lowest-loss checkpoint of a slowly diverging run,
stale staging folders removed, --continue_training_from_checkpoint with one model.ckpt-N,
and config.json writes that fail on a full disk."""
import errno
import json
import os

import numpy as np
import pytest

from metaseg.config import InnerConfig, MetaConfig
from metaseg.errors import CheckpointError
from metaseg import checkpoints
from metaseg.meta.step import StepResult
from metaseg.meta.trainer import MetaTrainer, NonFiniteLossError
from tests.meta.conftest import tiny_logits_model, tiny_store

META = MetaConfig(algorithm="reptile", meta_iters=6, meta_batch=1, meta_step=0.5,
                  meta_step_final=0.5, train_shots=4, inner_batch=3, inner_iters=1,
                  eval_interval=100, checkpoint_every=1, keep_checkpoints=2, seed=3)
INNER = InnerConfig(sgd=True, learning_rate=0.05)
# The loss of each meta-iteration of a run that diverges slowly: healthy at 2, then rising
# until it is NaN at iteration 6.
LOSSES = {1: 1.0, 2: 0.5, 3: 2.0, 4: 40.0, 5: 900.0}


def trainer(directory, meta=META):
    return MetaTrainer(tiny_logits_model(seed=0), tiny_store(), meta=meta, inner=INNER,
                       checkpoint_dir=str(directory), total_inner_steps=1,
                       config={"model": {"name": "tiny", "rsd": (2, 4)}})


def diverging(run):
    """``run`` whose meta-steps report LOSSES and turn non-finite at iteration 6."""
    step = run._meta_step  # pylint: disable=protected-access

    def reported(stream, iteration, epsilon):
        step(stream, iteration, epsilon)
        if iteration + 1 not in LOSSES:
            result = StepResult(float("nan"), np.array([np.nan], np.float32), np.array([0]),
                                False)
            run._non_finite(iteration, result)  # pylint: disable=protected-access
        return LOSSES[iteration + 1]

    run._meta_step = reported  # pylint: disable=protected-access
    return run


def index_files(directory):
    return sorted(int(n[len("model.ckpt-"):-len(".index")]) for n in os.listdir(directory)
                  if n.endswith(".index"))


def test_a_slowly_diverging_run_keeps_its_lowest_loss_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as info:
        diverging(trainer(tmp_path)).train()
    assert index_files(tmp_path) == [2, 4, 5]  # the newest 2, and the lowest-loss one
    assert [s.iteration for s in checkpoints.listed(str(tmp_path))] == [2, 4, 5]
    message = str(info.value)
    assert "last good" not in message
    assert (f"newest checkpoint: {tmp_path}/model.ckpt-5 (meta-iteration 5, mean training "
            "loss 900)") in message
    assert (f"lowest-loss checkpoint (kept out of rotation): {tmp_path}/model.ckpt-2 "
            "(meta-iteration 2, mean training loss 0.5), to continue from it pass "
            f"--continue_training_from_checkpoint {tmp_path}/model.ckpt-2 with a new "
            "--checkpoint directory") in message
    assert checkpoints.latest(str(tmp_path)).endswith("model.ckpt-5")  # resume: the newest

    # ... and that checkpoint is a working starting point of a new run
    again = trainer(tmp_path / "again")
    assert again.restore(f"{tmp_path}/model.ckpt-2") == 2
    assert again.train(resume_from=f"{tmp_path}/model.ckpt-2") == 6
    kept = index_files(tmp_path / "again")
    assert kept[-2:] == [5, 6] and kept[0] > 2  # iterations 3-6, written by this run


def test_rotation_keeps_only_the_newest_while_the_loss_falls(tmp_path):
    run = trainer(tmp_path)
    step = run._meta_step  # pylint: disable=protected-access

    def falling(stream, iteration, epsilon):
        step(stream, iteration, epsilon)
        return 10.0 - iteration

    run._meta_step = falling  # pylint: disable=protected-access
    run.train()
    assert index_files(tmp_path) == [5, 6]
    with open(tmp_path / checkpoints.LOSSES_FILE, encoding="utf-8") as f:
        assert json.load(f) == {"model.ckpt-5": 6.0, "model.ckpt-6": 5.0}


def test_staging_folders_of_killed_runs_are_removed(tmp_path):
    """model.ckpt-N_temp/ (a save cut short) and checkpoint.tmp* go, at the start of a run
    and after each save, also those of iterations the run has passed."""
    for stale in ("model.ckpt-1_temp", "model.ckpt-40_temp"):
        (tmp_path / stale).mkdir(parents=True)
        (tmp_path / stale / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 10)
    (tmp_path / "checkpoint.tmp0123abcd").write_text("half")
    (tmp_path / "config.json.tmp").write_text("{")
    trainer(tmp_path, meta=MetaConfig(**{**META.__dict__, "meta_iters": 2})).train()
    assert checkpoints.stale_files(str(tmp_path)) == []
    assert index_files(tmp_path) == [1, 2]


def test_continue_training_from_a_directory_without_checkpoints_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"^--continue_training_from_checkpoint \S+ holds "
                                              "no metaseg checkpoint; "):
        trainer(tmp_path / "run").train(resume_from=str(tmp_path / "empty"))


def test_resuming_compares_a_tuple_setting_with_the_list_read_back(tmp_path):
    trainer(tmp_path, meta=MetaConfig(**{**META.__dict__, "meta_iters": 2})).train()
    # config.json stores rsd as [2, 4]; the live config has the tuple (2, 4)
    assert checkpoints.read_config(str(tmp_path))["model"]["rsd"] == [2, 4]
    assert trainer(tmp_path, meta=MetaConfig(**{**META.__dict__, "meta_iters": 3})).train() == 3


def test_config_json_on_a_full_disk_leaves_no_tmp_file(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the temporary file was written
    with pytest.raises(CheckpointError, match=r"could not write \S+config\.json: No space "
                                              "left on device; free some space"):
        checkpoints.write_config(str(tmp_path), {"model": {}})
    assert os.listdir(tmp_path) == []


def test_restore_weights_names_a_truncated_checkpoint(tmp_path):
    trainer(tmp_path, meta=MetaConfig(**{**META.__dict__, "meta_iters": 1})).train()
    (data,) = [n for n in os.listdir(tmp_path) if ".data-" in n]
    os.truncate(tmp_path / data, os.path.getsize(tmp_path / data) - 8)
    with pytest.raises(CheckpointError, match=r"model\.ckpt-1 is incomplete or damaged"):
        checkpoints.restore_weights(tiny_logits_model(seed=1), str(tmp_path))
    with pytest.raises(CheckpointError, match=r"model\.ckpt-1 is incomplete or damaged"):
        trainer(tmp_path, meta=MetaConfig(**{**META.__dict__, "meta_iters": 2})).train()
