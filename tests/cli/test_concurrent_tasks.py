"""--concurrent_tasks through run_metasegnet.py on the embedded synthetic benchmark: the same
meta-test_results.json (every per-task score, bit for bit), summary and fine-tuned
checkpoints as one task at a time under the same thread settings, each checkpoint written
once; a bad value ends in one line and exit 2."""
import json
import os

import pytest

from tests.cli.conftest import own_stderr_lines, run_script, subprocess_env

TINY = ("--dataset synthetic --synthetic_num_classes 12 --synthetic_examples_per_class 10 "
        "--synthetic_image_size 32 --image_size 32 --meta-iters 1 --meta-batch 1 "
        "--inner-iters 1 --inner-batch 2 --train-shots 4 --sgd --learning-rate 0.1 "
        "--loss_name bce_dice --shots 5 --eval-batch 2 --eval-iters 2 --eval-samples 2 "
        "--serially_eval_all_test_tasks --noeval_train_tasks --eval-interval 100").split()
# The thread settings both runs share: identical results are promised for equal settings.
THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}


def _run(tmp_path, name, concurrent):
    checkpoint, fine_tuned = tmp_path / name, tmp_path / f"{name}_fine_tuned"
    words = [*TINY, "--cache_dir", str(tmp_path / "cache"), "--checkpoint", str(checkpoint),
             "--save_fine_tuned_checkpoints", "--save_fine_tuned_checkpoints_dir",
             str(fine_tuned), "--concurrent_tasks", str(concurrent)]
    result = run_script(words, cwd=tmp_path, env=subprocess_env(**THREADS))
    assert result.returncode == 0, result.stderr[-3000:]
    return result, checkpoint, fine_tuned


def _files(root):
    """{relative path: bytes} of every file under ``root``."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.mark.slow  # two meta-train-and-evaluate runs
def test_concurrent_evaluation_equals_sequential(tmp_path):
    seq, seq_dir, seq_tuned = _run(tmp_path, "sequential", 1)
    con, con_dir, con_tuned = _run(tmp_path, "concurrent", 3)  # more threads than tasks too
    for name in ("meta-test_results.json", "meta-test_results_summary.json"):
        assert (seq_dir / name).read_bytes() == (con_dir / name).read_bytes(), name
    scores = json.loads((con_dir / "meta-test_results.json").read_text())
    assert len(scores) >= 2 and all(len(v) == 2 for v in scores.values()), scores
    assert seq.stdout.splitlines()[-1] == con.stdout.splitlines()[-1]
    # one folder per (task, repetition), nothing half-written, the same bytes
    seq_files, con_files = _files(seq_tuned), _files(con_tuned)
    folders = {os.path.dirname(path) for path in con_files}
    assert folders == {os.path.join(task, str(s)) for task in scores for s in (0, 1)}
    assert not any(path.endswith(".tmp") for path in con_files)
    assert seq_files.keys() == con_files.keys()
    assert all(seq_files[p] == con_files[p] for p in seq_files
               if not p.endswith("config.json")), [
        p for p in seq_files if seq_files[p] != con_files[p]]
    for path in (p for p in seq_files if p.endswith("config.json")):  # the run's config
        configs = [_run_config_but_paths(files[path]) for files in (seq_files, con_files)]
        assert configs[0] == configs[1], path


def _run_config_but_paths(text):
    """A saved run config without what differs on purpose: directories, --concurrent_tasks."""
    config = json.loads(text)
    del config["checkpoint"], config["eval"]["save_fine_tuned_checkpoints_dir"]
    del config["eval"]["concurrent_tasks"]
    return config


@pytest.mark.parametrize("value", ["-1", "-3"])
def test_bad_concurrent_tasks_is_one_line_and_exit_2(tmp_path, value):
    checkpoint = tmp_path / "run"
    result = run_script([*TINY, "--cache_dir", str(tmp_path / "cache"), "--checkpoint",
                         str(checkpoint), f"--concurrent_tasks={value}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = own_stderr_lines(result.stderr)
    assert len(lines) == 1 and "--concurrent_tasks must be a whole number >= 0" in lines[0] \
        and value in lines[0], result.stderr
    assert not checkpoint.exists() and not (tmp_path / "cache").exists()
