"""studies/adaptation_evidence.py end to end with the tiniest settings, and a bad flag."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import time_limit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "studies" / "adaptation_evidence.py"


def _run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=time_limit(600), check=False)


def _in_unit(value):
    return 0.0 <= value <= 1.0


@pytest.mark.slow  # two tasks, three policies and eight adaptations each (about 2 minutes)
def test_tiny_study_writes_json_table_plot_and_reuses_its_cache(tmp_path):
    out = tmp_path / "out"
    args = ["--test_tasks=1", "--photo_tasks=1", "--uho_val_tasks=2", "--random_draws=1",
            "--steps=2", "--auto_max_steps=3", f"--out_dir={out}"]
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["cache", "reliability.png", "results.json", "results.md"]
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert settings["steps"] == 2 and settings["auto_max_steps"] == 3
    assert 1 <= settings["uho"]["0"]["steps"] <= 3
    assert set(results["summary"]) == {"synthetic", "photo", "all"}
    for group, g in results["summary"].items():
        assert g["tasks"] == (2 if group == "all" else 1)
        for policy in ("fixed", "auto", "uho"):
            assert _in_unit(g["policies"][policy]["mean"]), (group, policy)
        assert 1 <= g["auto_steps"]["mean"] <= 3
        assert set(g["calibration"]) == {"masks", "masks+support", "masks (auto steps)",
                                         "all masks"}
        for c in g["calibration"].values():
            assert -1.0 <= c["spearman"] <= 1.0 or c["spearman"] != c["spearman"]
            assert _in_unit(c["coverage"]) and _in_unit(c["mean_width"])
            assert c["masks"] in (15 * g["tasks"], 30 * g["tasks"])
        for k in ("1", "2", "5"):
            assert _in_unit(g["suggestion"][k]["suggested"]["mean"])
            assert _in_unit(g["suggestion"][k]["random"]["mean"])
    for record in results["tasks"]:
        r = record["result"]
        assert len(r["fixed"]["iou"]) == len(r["auto"]["iou"]) == len(r["uho"]["iou"]) == 15
        for key in ("fixed", "auto"):
            assert all(lo <= e <= hi for lo, e, hi in
                       zip(r[key]["low"], r[key]["estimate"], r[key]["high"]))
        assert all(lo <= e <= hi for lo, e, hi in zip(
            r["auto"]["masks_low"], r["auto"]["masks_estimate"], r["auto"]["masks_high"]))
        assert sorted(r["suggestion"]["ranked"]) == list(range(10))
    table = (out / "results.md").read_text()
    assert "| synthetic | 1 |" in table and "| photo |" in table and "Spearman" in table
    cached = sorted(os.listdir(out / "cache"))
    assert len(cached) == 3  # UHO's choice and the two tasks

    again = _run(args, tmp_path)  # everything from the cache: the same results
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(os.listdir(out / "cache")) == cached
    assert json.loads((out / "results.json").read_text())["summary"] == results["summary"]


def test_bad_seeds_is_one_line_and_exit_2(tmp_path):
    result = _run(["--seeds=zero", f"--out_dir={tmp_path / 'out'}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--seeds must be integers" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
