"""bench/run_all.py end to end with tiny settings, and its report from a complete result."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import report  # noqa: E402  # bench/report.py
import run_all  # noqa: E402  # bench/run_all.py (defines its flags only when run)
from tests.conftest import time_limit  # noqa: E402

pytestmark = pytest.mark.slow  # the tiny benchmark suite runs for a minute or more


def test_tiny_suite_writes_json_and_markdown(tmp_path):
    output = tmp_path / "results.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run_all.py"), "--sizes=32", "--groups=eval",
         "--repeats=1", "--eval_steps=1", "--eval_tasks=1", "--throughput_tasks=3",
         "--throughput_steps=1", "--noaccuracy",
         f"--output={output}"], capture_output=True, text=True, env=env, timeout=time_limit(600),
        check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    prov = results["provenance"]
    assert {"commit", "command", "machine", "timestamp"} <= set(prov)
    assert {"cpu", "cores", "tensorflow", "keras"} <= set(prov["machine"])
    assert "run_all.py" in prov["command"]
    [group] = results["groups"]  # measured in its own process
    assert group["group"] == "eval" and group["image_size"] == 32 and "error" not in group
    assert group["eval_task_s"] > 0 and group["peak_rss_mb"] > 100
    assert len(group["eval_task_seconds"]) == len(group["eval_task_steps_seconds"]) == 1
    assert group["eval_task_overhead"] == pytest.approx(
        group["eval_task_seconds"][0] / group["eval_task_steps_seconds"][0])
    assert group["eval_tasks_per_hour_sequential"] > 0 and group["eval_concurrent_identical"]
    assert group["eval_concurrent_speedup"] == pytest.approx(
        group["eval_tasks_per_hour_concurrent"] / group["eval_tasks_per_hour_sequential"])
    assert group["eval_throughput_settings"]["concurrent_tasks"] == 2
    text = (tmp_path / "results.md").read_text()
    assert "## Step and iteration times" in text and "| 32 |" in text


def _complete_results():
    passes = [{"pass": p, "precision": q, "image_size": 64, "batch": 8, "seconds": 0.1,
               "images_per_s": 80.0, "gflop_per_step": 8.9, "gflop_per_s": 89.0}
              for q in ("fp32", "bf16") for p in ("forward", "forward+backward")]
    common = {"image_size": 64, "wall_s": 1.0, "peak_rss_mb": 900.0}
    groups = [
        {"group": "model", "passes": passes, "matmul": {
            "fp32": {"gflop_per_s": 200.0}, "bf16": {"gflop_per_s": 210.0}}, **common},
        {"group": "inner", "bare_keras_step_s": 0.11, "inner_step_fp32_s": 0.1,
         "inner_step_bf16_s": 0.12, "inner_step_unfused_bn_s": 0.125, **common},
        {"group": "meta", "reptile_iteration_s": 1.2, "fomaml_iteration_s": 1.3, **common},
        {"group": "eval", "eval_task_s": 7.0, "eval_steps": 59, "eval_task_overhead": 1.04,
         "eval_tasks_per_hour_sequential": 2000.0, "eval_tasks_per_hour_concurrent": 2700.0,
         "eval_concurrent_speedup": 1.35, "eval_concurrent_identical": True,
         "eval_throughput_settings": {"tasks": 24, "steps": 10, "concurrent_tasks": 2,
                                      "threads_intra_inter": [1, 2], "cores": 2},
         "eval_throughput_load_sequential": [[2.0, 1.0, 1.0], [2.5, 1.0, 1.0]],
         "eval_throughput_load_concurrent": [[2.5, 1.0, 1.0], [3.0, 1.0, 1.0]], **common},
        {"group": "data", "pipeline_share": 0.02, **common}]
    runs = [{"precision": "fp32", "mean_iou": 0.56, "ci95": 0.05, "wall_s": 200.0},
            {"precision": "bf16", "mean_iou": 0.555, "ci95": 0.05, "wall_s": 220.0}]
    return {"provenance": {"commit": "abc", "command": "python bench/run_all.py",
                           "timestamp": "t", "machine": {
                               "cpu": "CPU", "cores": 2, "memory_gb": 24, "cpu_features": [],
                               "python": "3", "tensorflow": "2", "keras": "3",
                               "onednn_opts": "on"}},
            "sizes": [64], "options": {"repeats": 3}, "groups": groups,
            "mixed_precision": {"runs": runs, "decision": run_all.decide(runs, groups)}}


def test_report_has_every_table_and_the_bf16_decision():
    results = _complete_results()
    text = report.markdown(results)
    assert "| 64 | 0.100 | 0.120 | 0.110 | 1.20 | 1.30 | 7.00 | 1.04 | 2.0 % |" in text
    assert "| 64 | bf16 | forward+backward | 0.100 | 8.90 | 89.0 | 200 | 210 |" in text
    assert "| eval | 64 | 900 |" in text
    assert ("| 64 | 0.100 | 0.125 | 0.80 | 2000 | 2700 | 1.35 | yes | 24 x 10, 2, (1, 2) "
            "| 2.0 -> 2.5 | 2.5 -> 3.0 |") in text
    decision = results["mixed_precision"]["decision"]
    assert "-0.5 points (within" in decision and "not recommended" in decision


def test_render_readme_replaces_marked_blocks(tmp_path):
    import render_readme  # noqa: E402  # bench/render_readme.py
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.md").write_text("# Title\n\nintro\n\n## Table\n\n| a |\n")
    readme = ("before\n<!-- BEGIN bench/results.md -->\nold\n<!-- END bench/results.md -->\n"
              "<!-- BEGIN missing.md -->\nkept\n<!-- END missing.md -->\nafter\n")
    assert render_readme.render(readme, str(tmp_path)) == (
        "before\n<!-- BEGIN bench/results.md -->\nintro\n\n#### Table\n\n| a |\n"
        "<!-- END bench/results.md -->\n<!-- BEGIN missing.md -->\nkept\n"
        "<!-- END missing.md -->\nafter\n")
