"""studies/learning_signal.py end to end on a tiny benchmark, and its input checks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import time_limit

pytestmark = pytest.mark.slow  # the tiny study meta-trains several runs (minutes)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "studies" / "learning_signal.py"
TINY = ("--synthetic_num_classes=12 --synthetic_image_size=32 --image_size=32 "
        "--inner-iters=2 --meta-batch=1 --eval-batch=2")


def _run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=time_limit(600), check=False)


def test_tiny_study_writes_table_json_and_plot(tmp_path):
    out = tmp_path / "out"
    result = _run(["--meta_iters=1", "--steps=2,1", "--inits=random,joint,reptile",
                   "--num_val_tasks=2", "--inner_learning_rates=0.01,0.1",
                   f"--out_dir={out}", f"--run_flags={TINY} --cache_dir={tmp_path / 'cache'}"],
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["learning_signal.png", "results.json", "results.md"]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["steps"] == [0, 1, 2]  # 0: before fine-tuning
    assert set(results["summary"]) == {"random", "joint", "reptile"}
    tasks = results["settings"]["num_test_tasks"]
    for init, by_step in results["summary"].items():
        assert set(by_step) == {"0", "1", "2"}
        assert all(0 <= v["mean"] <= 1 and v["n"] == tasks for v in by_step.values())
        assert len(results["per_task_curves"][init]) == tasks
        assert len(results["per_task_curves"][init][0]) == 3
    assert set(results["paired_vs_joint"]) == {"random", "reptile"}
    for chosen in results["learning_rates"].values():
        assert chosen["learning_rate"] in (0.01, 0.1)
        assert set(chosen["validation_mean_iou"]) == {"0.01", "0.1"}
    assert len(results["validation_classes"]) == 2
    assert not set(results["validation_classes"]) & set(results["test_classes"])
    assert results["budget"]["meta_images"] == 1 * 1 * 2 * 4
    assert {"commit", "command", "machine", "timestamp"} <= set(results["provenance"])
    assert results["runtime_s"] > 0
    text = (out / "results.md").read_text()
    assert "| Reptile |" in text and "learning_signal.py" in text
    assert (out / "learning_signal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--steps="], "--steps must be a non-empty list of positive step counts"),
    (["--steps=0,5"], "--steps must be a non-empty list of positive step counts"),
    (["--steps=-1"], "--steps must be a non-empty list of positive step counts"),
    (["--steps=two"], "--steps must be integers"),
    (["--meta_iters=0"], "--meta_iters must be positive, got 0"),
    (["--inits=random,magic"], "--inits must name some of random, joint, reptile, fomaml"),
    (["--run_flags=--no_such_flag"], "--run_flags: Unknown command line flag"),
    (["--inner_learning_rates=0.1,-1"], "--inner_learning_rates must be a non-empty list"),
    (["--num_val_tasks=0"], "--num_val_tasks must be positive, got 0"),
])
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "out"
    result = _run([*args, f"--out_dir={out}"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()
