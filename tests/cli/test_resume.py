"""The life of a meta-training run through ``run_metasegnet.py`` itself, with the flags of
flags/quickstart.flags (``--rsd 2 4`` on the command line) at tiny sizes: rerunning,
resuming after a larger --meta-iters, --continue_training_from_checkpoint, SIGKILL and
rerun, two runs into one --checkpoint, Ctrl-C, a full disk, runs that fail early, and
--pretrained with --compare_random_init."""
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from metaseg import checkpoints
from tests.cli.conftest import REPO, own_stderr_lines, run_script, subprocess_env

pytestmark = pytest.mark.slow  # meta-training runs killed, resumed and rerun (minutes)

# flags/quickstart.flags, shrunk: 32 px, one task per meta-batch, one inner step.
QUICKSTART = ("--image_size=32 --rsd 2 4 --train-shots 4 --inner-batch 2 --inner-iters 1 "
              "--sgd --learning-rate 0.1 --meta-batch 1 --meta-iters 2 --meta-step 1.0 "
              "--meta-step-final 0.1 --eval-interval 50 --loss_name bce_dice --shots 5 "
              "--eval-batch 5 --eval-iters 1 --eval-samples 1 --serially_eval_all_test_tasks "
              "--transductive --noeval_train_tasks --checkpoint_every 1").split()
TIMEOUT = 900  # seconds per run: generous, the machine may be loaded
ERROR = re.compile(r"^error: ")


def words(shards, checkpoint, *extra):
    return ["--data-dir", str(shards.data_dir), "--test_tasks_file", str(shards.test_classes),
            *QUICKSTART, "--checkpoint", str(checkpoint), *extra]


def start(args, cwd):
    """``python run_metasegnet.py ARGS`` in the background, SIGINT delivered as Python's
    KeyboardInterrupt even if the test runner was started with SIGINT ignored."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "run_metasegnet.py"), *args], cwd=cwd, env=subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_checkpoint(process, directory, iteration, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        prefix = checkpoints.latest(str(directory))
        if prefix is not None and int(prefix.rsplit("-", 1)[1]) >= iteration:
            return prefix
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no checkpoint {iteration} in {directory}"
        time.sleep(0.05)


def values(directory):
    """{name: value} of every variable in the newest checkpoint of ``directory``."""
    prefix = checkpoints.latest(str(directory))
    return prefix, {name: tf.train.load_variable(prefix, name)
                    for name, _ in tf.train.list_variables(prefix) if "VARIABLE_VALUE" in name}


def one_error_line(result_or_stderr):
    stderr = getattr(result_or_stderr, "stderr", result_or_stderr)
    lines = own_stderr_lines(stderr)
    errors = [line for line in lines if ERROR.match(line)]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def leftovers(directory):
    """Staging folders and temporary files a failed or killed write leaves behind."""
    return [n for n in os.listdir(directory) if n.endswith("_temp") or ".tmp" in n]


@pytest.fixture(scope="module")
def finished(shards, tmp_path_factory):
    """A finished 2-iteration run: (its checkpoint directory, its stdout)."""
    checkpoint = tmp_path_factory.mktemp("finished") / "quickstart"
    result = run_script(words(shards, checkpoint), cwd=checkpoint.parent, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return checkpoint, result.stdout


def copy_of(finished, tmp_path):
    target = tmp_path / "quickstart"
    shutil.copytree(finished[0], target)
    return target


# --- item 1: resuming ----------------------------------------------------------------------

def test_rerunning_a_finished_run_evaluates_it_again_without_training(shards, finished,
                                                                      tmp_path):
    checkpoint = copy_of(finished, tmp_path)
    prefix, before = values(checkpoint)
    result = run_script(words(shards, checkpoint), cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already at iteration 2 of 2; nothing to train" in result.stderr
    after_prefix, after = values(checkpoint)
    assert after_prefix == prefix and after.keys() == before.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    # the same seeded evaluation of the same weights
    assert result.stdout.splitlines()[-1] == finished[1].splitlines()[-1]


def test_a_larger_meta_iters_resumes_the_finished_run(shards, finished, tmp_path):
    checkpoint = copy_of(finished, tmp_path)
    result = run_script(words(shards, checkpoint, "--meta-iters", "3"), cwd=tmp_path,
                        timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"Resumed meta-training from \S+model\.ckpt-2 at iteration 2",
                     result.stderr), result.stderr[-3000:]
    assert checkpoints.latest(str(checkpoint)).endswith("model.ckpt-3")
    assert checkpoints.read_config(str(checkpoint))["meta"]["meta_iters"] == 3


def test_continue_training_from_checkpoint_goes_on_from_its_newest(shards, finished, tmp_path):
    source = copy_of(finished, tmp_path)
    checkpoint = tmp_path / "continued"
    result = run_script(words(shards, checkpoint, "--meta-iters", "3",
                              "--continue_training_from_checkpoint", str(source)),
                        cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"Resumed meta-training from {re.escape(str(source))}/model\.ckpt-2 at "
                     "iteration 2", result.stderr), result.stderr[-3000:]
    kept = sorted(n for n in os.listdir(checkpoint) if n.endswith(".index"))
    assert kept == ["model.ckpt-3.index"]  # iteration 3 only: 1 and 2 were the source's


def test_sigkill_then_the_same_command_matches_an_uninterrupted_run(shards, tmp_path):
    """Also: the lock a killed run leaves behind does not block its resume."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["--meta-iters", "10"]
    uninterrupted = start(words(shards, full, *args), cwd=tmp_path)
    victim = start(words(shards, killed, *args), cwd=tmp_path)
    wait_for_checkpoint(victim, killed, 2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not checkpoints.latest(str(killed)).endswith("-10")  # killed mid-run
    assert os.path.exists(killed / ".metaseg.lock")  # what a dead run leaves
    _, err = uninterrupted.communicate(timeout=TIMEOUT)
    assert uninterrupted.returncode == 0, err[-3000:]

    resumed = run_script(words(shards, killed, *args), cwd=tmp_path, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed meta-training from" in resumed.stderr
    (want_prefix, want), (got_prefix, got) = values(full), values(killed)
    assert want_prefix.endswith("-10") and got_prefix.endswith("-10")
    assert want.keys() == got.keys() and len(want) > 100
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert leftovers(killed) == [] and not os.path.exists(killed / ".metaseg.lock")


# --- item 7: two runs into one --checkpoint --------------------------------------------------

def test_a_second_run_into_the_same_checkpoint_directory_is_refused(shards, tmp_path):
    checkpoint = tmp_path / "shared"
    first = start(words(shards, checkpoint, "--meta-iters", "100000"), cwd=tmp_path)
    try:
        wait_for_checkpoint(first, checkpoint, 1)
        second = run_script(words(shards, checkpoint), cwd=tmp_path, timeout=TIMEOUT)
        assert second.returncode == 2 and second.stdout == ""
        line = one_error_line(second)
        assert line.startswith(f"error: --checkpoint directory {checkpoint} is in use by "
                               f"another run (process {first.pid} on "), line
        assert first.poll() is None  # the first run goes on, undisturbed
    finally:
        first.kill()
        first.communicate(timeout=60)


# --- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_during_meta_training_says_where_the_checkpoint_is_and_how_to_resume(
        shards, tmp_path):
    checkpoint = tmp_path / "run"
    args = words(shards, checkpoint, "--meta-iters", "100000")
    process = start(args, cwd=tmp_path)
    wait_for_checkpoint(process, checkpoint, 2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    line = one_error_line(err)
    match = re.match(r"^error: interrupted during meta-training; the last checkpoint is "
                     rf"{re.escape(str(checkpoint))}/model\.ckpt-(\d+) \(meta-iteration (\d+) "
                     r"of 100000\); rerunning resumes from it; to go on, run the same command "
                     r"again: python (.*)$", line)
    assert match, line
    assert match.group(1) == match.group(2) and int(match.group(1)) >= 2
    assert match.group(3) == " ".join([str(REPO / "run_metasegnet.py"), *args])
    assert checkpoints.latest(str(checkpoint)).endswith(f"model.ckpt-{match.group(1)}")
    assert leftovers(checkpoint) == [] and "Mean IoU" not in out


# --- a full disk while checkpointing ------------------------------------------------------------

def _file_size_limit(max_bytes):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past it fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return limit


def test_a_checkpoint_that_cannot_be_written_leaves_nothing_half_written(shards, finished,
                                                                          tmp_path):
    """The disk fills (here: a file-size limit, no file may grow past 1 MB) while the
    resumed run writes model.ckpt-3; model.ckpt-2 stays the newest and whole."""
    checkpoint = copy_of(finished, tmp_path)
    result = subprocess.run(
        [sys.executable, str(REPO / "run_metasegnet.py"),
         *words(shards, checkpoint, "--meta-iters", "3")],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT,
        preexec_fn=_file_size_limit(1 << 20))
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result)
    assert line.startswith(f"error: could not write checkpoint {checkpoint}/model.ckpt-3: "), line
    assert f"the newest complete checkpoint is {checkpoint}/model.ckpt-2 " in line, line
    assert "rerun the same command to resume" in line
    assert leftovers(checkpoint) == []
    assert not [n for n in os.listdir(checkpoint) if n.startswith("model.ckpt-3")]
    assert checkpoints.latest(str(checkpoint)).endswith("model.ckpt-2")
    values(checkpoint)  # still complete and readable


# --- runs that fail early leave no folder ----------------------------------------------------

@pytest.mark.parametrize("flag", ["--learning-rate", "--meta-step", "--weight-decay"])
def test_an_infinite_float_flag_is_refused_up_front(shards, tmp_path, flag):
    checkpoint = tmp_path / "run"
    result = run_script(words(shards, checkpoint, flag, "inf"), cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 2 and result.stdout == ""
    assert one_error_line(result) == f"error: {flag} must be a finite number, got inf"
    assert os.listdir(tmp_path) == []


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_no_folder(shards, tmp_path):
    checkpoint = tmp_path / "run"
    result = run_script(words(shards, checkpoint, "--learning-rate", "1e30",
                              "--checkpoint_every", "100"), cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("error: non-finite loss at meta-iteration "), line
    assert f"no checkpoint was written to {checkpoint} yet" in line
    assert os.listdir(tmp_path) == []  # not a folder holding only config.json


# --- item 9: --pretrained --compare_random_init ------------------------------------------------

def _table(stdout):
    return {row.split("|")[1].strip(): row for row in stdout.splitlines()
            if row.startswith("| ") and not row.startswith("| initialisation |")}


def test_pretrained_with_compare_random_init_evaluates_both(shards, finished, tmp_path):
    checkpoint = copy_of(finished, tmp_path)
    result = run_script(words(shards, checkpoint, "--pretrained", "--compare_random_init"),
                        cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _table(result.stdout)
    assert list(rows) == ["pretrained checkpoint", "random (same architecture, --seed 0)"]
    assert "random-init evaluation" in result.stderr
    # the checkpoint's row is what a --pretrained run without the comparison reports
    alone = run_script(words(shards, checkpoint, "--pretrained"), cwd=tmp_path,
                       timeout=TIMEOUT)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert list(_table(alone.stdout)) == ["pretrained checkpoint"]
    assert _table(alone.stdout)["pretrained checkpoint"] == rows["pretrained checkpoint"]
