"""studies/learning_signal.py end to end on a tiny benchmark, and its input checks."""
import json
import os
import statistics
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
                   "--num_val_tasks=2", "--inner_learning_rates=0.01,0.1", "--seeds=0,1",
                   "--joint_learning_rates=0.001,0.01", f"--work_dir={tmp_path / 'work'}",
                   f"--out_dir={out}", f"--run_flags={TINY} --cache_dir={tmp_path / 'cache'}"],
                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["learning_signal.png", "results.json", "results.md"]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["steps"] == [0, 1, 2]  # 0: before fine-tuning
    assert results["settings"]["seeds"] == [0, 1]
    assert set(results["per_seed"]) == {"0", "1"}
    tasks = results["settings"]["num_test_tasks"]
    curves = {}
    for seed, block in results["per_seed"].items():
        assert block["seed"] == int(seed)
        assert set(block["summary"]) == {"random", "joint", "reptile"}
        for init, by_step in block["summary"].items():
            assert set(by_step) == {"0", "1", "2"}
            assert all(0 <= v["mean"] <= 1 and v["n"] == tasks for v in by_step.values())
            assert len(block["per_task_curves"][init]) == tasks
            assert len(block["per_task_curves"][init][0]) == 3
            curves[seed, init] = block["per_task_curves"][init]
        assert set(block["paired_vs_joint"]) == {"random", "reptile"}
        for chosen in block["learning_rates"].values():
            assert chosen["learning_rate"] in (0.01, 0.1)
            assert set(chosen["validation_mean_iou"]) == {"0.01", "0.1"}
        sweep = block["joint_learning_rate_sweep"]
        assert set(sweep) == {"0.001", "0.01"}
        joint = block["learning_rates"]["joint"]
        assert joint["joint_learning_rate"] in (0.001, 0.01)
        assert sweep[str(joint["joint_learning_rate"])]["validation_mean_iou"] == max(
            c["validation_mean_iou"] for c in sweep.values())
        assert all(os.path.isdir(c["checkpoint"]) for c in sweep.values())
    # The seeds are replicates: different initial weights, so different random-init curves.
    assert curves["0", "random"] != curves["1", "random"]
    for key in ("summary", "paired_vs_joint"):
        assert set(results[key]) == ({"random", "joint", "reptile"} if key == "summary"
                                     else {"random", "reptile"})
        for init, by_step in results[key].items():
            for k, agg in by_step.items():
                means = [results["per_seed"][s][key][init][k]["mean"] for s in ("0", "1")]
                assert agg["n_seeds"] == 2
                assert agg["mean"] == pytest.approx(sum(means) / 2)
                assert agg["min"] == min(means) and agg["max"] == max(means)
                assert agg["min"] <= agg["mean"] <= agg["max"]
                assert agg["sd"] == pytest.approx(statistics.stdev(means))
                assert agg["per_seed"]["1"]["ci95"] == results["per_seed"]["1"][key][init][k][
                    "ci95"]
                assert agg["ci_excludes_zero_every_seed"] == all(
                    abs(results["per_seed"][s][key][init][k]["mean"])
                    > results["per_seed"][s][key][init][k]["ci95"] for s in ("0", "1"))
    assert len(results["validation_classes"]) == 2
    assert not set(results["validation_classes"]) & set(results["test_classes"])
    assert results["budget"]["meta_images"] == 1 * 1 * 2 * 4
    assert {"commit", "command", "machine", "timestamp"} <= set(results["provenance"])
    assert results["runtime_s"] > 0
    text = (out / "results.md").read_text()
    assert "| Reptile | all (2) |" in text and "learning_signal.py" in text
    assert "| Reptile - joint | 1 |" in text and "chosen joint Adam lr" in text
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
    (["--seeds="], "--seeds must be a non-empty list of distinct integers"),
    (["--seeds=0,x"], "--seeds must be integers"),
    (["--seeds=1,1"], "--seeds must be a non-empty list of distinct integers"),
    (["--joint_learning_rates=0.001,0"], "--joint_learning_rates (or --joint_learning_rate) "
                                         "must be distinct positive numbers"),
    (["--joint_learning_rates=-0.1"], "--joint_learning_rates (or --joint_learning_rate) must"),
    (["--joint_learning_rate=0"], "--joint_learning_rates (or --joint_learning_rate) must"),
])
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "out"
    result = _run([*args, f"--out_dir={out}"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()
