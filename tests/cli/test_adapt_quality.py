"""``metaseg adapt --steps auto``, ``scores.csv`` and ``--suggest`` through the real command
line: a subprocess per run on 3 generated 64 px support pairs, 2 steps at most."""
import csv
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from metaseg.__main__ import main
from metaseg.app import review
from metaseg.cli import scores as cli_scores
from metaseg.evaluation import quality
from tests.cli.conftest import own_stderr_lines, subprocess_env
from tests.cli.test_metaseg_cli import QUERIES, save_initialisation, write_queries, write_support
from tests.conftest import time_limit

HEADER = ["file", "estimated_iou", "low", "high"]


def metaseg(args, cwd):
    return subprocess.run([sys.executable, "-m", "metaseg", *map(str, args)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=cwd,
                          timeout=time_limit(300))


def calibration():
    """A quality.json fitted on a known relation (IoU = agreement), both models."""
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 1, (60, len(quality.MASK_FEATURES)))
    iou = np.clip(features[:, 0] + rng.normal(0, 0.05, 60), 0, 1)
    return quality.fit(features, iou, rng.uniform(0.3, 0.9, 60))


def read_scores(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], {r[0]: [float(v) for v in r[1:]] for r in rows[1:]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_quality")
    init = save_initialisation(root / "init")
    return root, init, write_support(root / "support"), write_queries(root / "query")


def test_steps_auto_with_scores_and_suggestions(inputs, tmp_path):
    root, init, support, query = inputs
    calibrated = tmp_path / "calibrated_init"
    shutil.copytree(init, calibrated)
    quality.write(str(calibrated), calibration())
    out = tmp_path / "out"
    result = metaseg(["adapt", "--init", calibrated, "--support", support, "--query", query,
                      "--output", out, "--steps", "auto", "--auto_max_steps", "2",
                      "--suggest", "2"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps auto: 3 leave-one-out folds x 2 steps" in result.stderr  # the cost, up front
    assert result.stderr.index("steps auto: 3") < result.stderr.index("Adapting")
    record = json.loads((out / "model" / "adaptation.json").read_text())
    auto = record["auto_steps"]
    assert auto["chosen_steps"] in (1, 2) and record["steps"] == auto["chosen_steps"]
    assert auto["folds"] == [["a.jpg"], ["b.jpg"], ["c.jpg"]]
    assert len(auto["held_out_curve"]) == 2 and len(auto["fold_curves"]) == 3
    assert np.argmax(auto["held_out_curve"]) + 1 == auto["chosen_steps"]
    np.testing.assert_allclose(auto["held_out_curve"], np.mean(auto["fold_curves"], 0),
                               atol=1e-6)
    assert record["hyperparameters_from"].startswith("steps from --steps auto")
    header, scores = read_scores(out / "scores.csv")
    assert header == HEADER and sorted(scores) == sorted(n for n, _, _ in QUERIES)
    assert list(cli_scores.HEADER) == HEADER and review.SCORES_FILE == cli_scores.SCORES_FILE
    # the app's review order reads the file through the same owner that wrote it
    read_back = review.read_scores(str(out / cli_scores.SCORES_FILE))
    for name, (estimate, _, _) in scores.items():
        assert read_back[name] == pytest.approx(estimate)
        assert read_back[name.rsplit(".", 1)[0]] == pytest.approx(estimate)
    for estimate, low, high in scores.values():
        assert 0 <= low <= estimate <= high <= 1
    summary = record["query_quality"]
    assert summary["masks"] == 3 and summary["support_iou"] == pytest.approx(
        auto["held_out_iou"])
    assert summary["mean_estimated_iou"] == pytest.approx(
        np.mean([v[0] for v in scores.values()]), abs=1e-3)
    assert quality.WITH_SUPPORT in summary["estimate"]
    suggested = (out / "suggested.txt").read_text().splitlines()
    ranked = sorted(scores, key=lambda n: scores[n][0])
    assert suggested == ranked[:2]  # lowest estimated IoU first
    assert result.stdout.splitlines()[-2:] == suggested
    # the calibration travels with the adapted model: predict scores as adapt did
    assert (out / "model" / quality.QUALITY_FILE).exists()
    predicted = tmp_path / "predicted"
    assert main(["predict", "--model", str(out), "--input", str(query),
                 "--output", str(predicted)]) == 0
    header, again = read_scores(predicted / "scores.csv")
    assert header == HEADER
    for name, row in again.items():
        np.testing.assert_allclose(row, scores[name], atol=2e-3)


def test_steps_auto_needs_two_support_pairs(inputs, tmp_path):
    root, init, _, query = inputs
    single = tmp_path / "single"
    single.mkdir()
    for suffix in (".jpg", ".png"):
        shutil.copy(root / "support" / f"a{suffix}", single / f"a{suffix}")
    out = tmp_path / "out"
    result = metaseg(["adapt", "-q", "--init", init, "--support", single, "--query", query,
                      "--output", out, "--steps", "auto"], root)
    assert result.returncode == 2
    assert own_stderr_lines(result.stderr) == [
        f"error: --steps auto needs at least two support pairs (one to adapt on, one to "
        f"score), --support {single} has 1; add a labelled image, pass --steps N, or add "
        "--auto_fallback N to adapt for N steps then"]
    assert not out.exists()  # nothing written
    # asked for: --auto_fallback N adapts for N steps after one warning line saying why
    result = metaseg(["adapt", "--init", init, "--support", single, "--query", query,
                      "--output", out, "--steps", "auto", "--auto_fallback", "1"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [line for line in own_stderr_lines(result.stderr) if "needs at least two" in line]
    assert len(warned) == 1 and warned[0].startswith("WARNING"), warned
    assert f"--support {single} has 1" in warned[0] and "adapting for --auto_fallback 1" \
        in warned[0]
    record = json.loads((out / "model" / "adaptation.json").read_text())
    assert record["steps"] == 1 and "auto_steps" not in record
    assert record["hyperparameters_from"].startswith("steps from --auto_fallback")


def test_missing_calibration_warns_and_writes_uncalibrated_scores(inputs, tmp_path):
    root, init, support, query = inputs
    out = tmp_path / "out"
    result = metaseg(["adapt", "--init", init, "--support", support, "--query", query,
                      "--output", out, "--steps", "1", "--suggest", "1"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [l for l in result.stderr.splitlines() if "has no quality.json" in l]
    assert len(warned) == 1 and "raw flip agreement" in warned[0]
    header, scores = read_scores(out / "scores.csv")
    assert header == HEADER and len(scores) == len(QUERIES)
    for estimate, low, high in scores.values():
        assert 0 <= estimate <= 1 and math.isnan(low) and math.isnan(high)
    assert "uncalibrated" in json.loads(
        (out / "model" / "adaptation.json").read_text())["query_quality"]["estimate"]
    assert len((out / "suggested.txt").read_text().splitlines()) == 1
    # the adapted model has no calibration either: predict says so once, and still scores
    assert not (out / "model" / quality.QUALITY_FILE).exists()
    predicted = tmp_path / "predicted"
    result = metaseg(["predict", "--model", out, "--input", query, "--output", predicted],
                     root)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [l for l in own_stderr_lines(result.stderr) if "has no quality.json" in l]
    assert len(warned) == 1 and "raw flip agreement" in warned[0], warned
    header, again = read_scores(predicted / "scores.csv")
    assert header == HEADER and sorted(again) == sorted(scores)
    assert all(math.isnan(low) and math.isnan(high) for _, low, high in again.values())


def test_bad_suggest_and_steps_values(inputs, tmp_path):
    root, init, support, query = inputs
    for flags, expected in ((["--suggest", "0"], "--suggest must be a positive number"),
                            (["--steps", "many"], "expected a whole number of steps or 'auto'")):
        result = metaseg(["adapt", "-q", "--init", init, "--support", support, "--query",
                          query, "--output", tmp_path / "out", *flags], root)
        assert result.returncode == 2
        lines = own_stderr_lines(result.stderr)
        assert len(lines) == 1 and expected in lines[0], lines
        assert not (tmp_path / "out").exists()
