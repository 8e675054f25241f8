"""Thread-pool defaults: the measured rule, the environment overrides, through the command."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaseg import threads
from metaseg.errors import ConfigError
from tests.conftest import time_limit

ROOT = Path(__file__).resolve().parents[1]


def test_rule_is_one_intra_op_and_two_inter_op_threads_on_small_machines_only():
    assert threads.default_threads(1) == (1, 2)
    assert threads.default_threads(2) == (1, 2)
    assert threads.default_threads(16) == (0, 0)  # not measured: TensorFlow's defaults


def test_two_evaluation_tasks_at_once_on_two_cores_only():
    assert threads.default_concurrent_tasks(1) == 1
    assert threads.default_concurrent_tasks(2) == 2
    assert threads.default_concurrent_tasks(16) == 1  # not measured: one task, every core


@pytest.mark.parametrize("environ,expected", [
    ({}, (1, 2)),
    ({"TF_NUM_INTRAOP_THREADS": "2"}, (2, 2)),
    ({"TF_NUM_INTEROP_THREADS": " 1 "}, (1, 1)),
    ({"TF_NUM_INTRAOP_THREADS": "0", "TF_NUM_INTEROP_THREADS": "0"}, (0, 0)),
    ({"TF_NUM_INTRAOP_THREADS": ""}, (1, 2)),
])
def test_environment_overrides_each_count(environ, expected):
    assert threads.thread_counts(environ, cores=2) == expected


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_bad_value_is_a_config_error_naming_the_variable(value):
    with pytest.raises(ConfigError, match=f"TF_NUM_INTEROP_THREADS='{value}' is not a thread"):
        threads.thread_counts({"TF_NUM_INTEROP_THREADS": value}, cores=2)


def _run(env_extra, verbosity=0):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    env.update(env_extra, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "run_metasegnet.py", f"--verbosity={verbosity}", "--data-dir",
         str(ROOT / "no_such_folder")], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=time_limit(300), check=False)


def test_run_metasegnet_sizes_the_pools_by_the_rule_and_the_environment():
    rule = threads.default_threads(threads.usable_cores())
    proc = _run({}, verbosity=1)  # the thread line is a debug line
    assert f"TensorFlow threads: intra-op {rule[0]}, inter-op {rule[1]}" in proc.stderr
    proc = _run({"TF_NUM_INTRAOP_THREADS": "3"}, verbosity=1)
    assert f"TensorFlow threads: intra-op 3, inter-op {rule[1]}" in proc.stderr


def test_run_metasegnet_bad_thread_count_is_one_line_and_exit_2():
    proc = _run({"TF_NUM_INTRAOP_THREADS": "many"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: TF_NUM_INTRAOP_THREADS='many' is not a thread count: set it to a whole "
        "number >= 0 (0 = TensorFlow's default) or unset it"]
