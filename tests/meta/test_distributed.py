"""Meta-training under tf.distribute: replica-count independence, multi-worker, bad inputs.

Strategies that split the CPU or join a cluster must be set up before TensorFlow touches a
device, so those runs happen in fresh processes (``tests/meta/train_distributed.py``).
"""
import contextlib
import glob
import json
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from metaseg import distribute
from metaseg.config import DistributeConfig
from metaseg.errors import ConfigError
from tests.conftest import time_limit
from tests.meta.conftest import tiny_logits_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = [sys.executable, "-m", "tests.meta.train_distributed"]
TIMEOUT = time_limit(240)  # seconds any helper process may take before the test kills it


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _initial_weights():
    return [np.asarray(v.numpy()) for v in
            tiny_logits_model(seed=0, dropout=0.25, conv_bias=False).variables]


def _max_diff(results, a, b, count):
    return max(float(np.max(np.abs(results[f"{a}/{i}"].astype(np.float64)
                                   - results[f"{b}/{i}"].astype(np.float64))))
               for i in range(count))


@pytest.mark.parametrize("algorithm,optimizer", [("fomaml", "adam"), ("reptile", "sgd")])
def test_mirrored_over_two_cpu_devices_equals_one_device(tmp_path, algorithm, optimizer):
    out = tmp_path / "results.npz"
    subprocess.run(HELPER + ["compare", str(out), algorithm, optimizer], cwd=ROOT, env=_env(),
                   check=True, timeout=TIMEOUT, capture_output=True)
    results = np.load(out)
    initial = _initial_weights()
    count = len(initial)
    # Training moved the weights, so agreement below is not agreement of untouched values.
    moved = max(float(np.max(np.abs(results[f"single_reset/{i}"] - w)))
                for i, w in enumerate(initial) if w.dtype.kind == "f")
    assert moved > 1e-3
    # The meta-step on one device (default strategy) and on 1 or 2 mirrored replicas.
    assert _max_diff(results, "single_reset", "mirrored1_reset", count) < 1e-6
    assert _max_diff(results, "single_reset", "mirrored2_reset", count) < 1e-6
    # The default carry-over under a strategy (mean of the tasks' statistics and optimiser
    # slots): 1 and 2 replicas agree, and carrying the slots mattered.
    assert _max_diff(results, "mirrored1_carry", "mirrored2_carry", count) < 1e-6
    if optimizer == "adam":
        assert _max_diff(results, "mirrored2_reset", "mirrored2_carry", count) > 1e-5
    # Checkpoint and resume under the strategy: the same as not stopping.
    assert _max_diff(results, "mirrored2_carry", "mirrored2_resumed", count) < 1e-6
    # Evaluation spread over 2 replicas (5 tasks: the last round padded) scores every task
    # as one device does.
    np.testing.assert_allclose(results[f"mirrored2_reset/{count}"],
                               results[f"single_reset/{count}"], atol=1e-6)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


@contextlib.contextmanager
def _workers(tmp_path, meta_iters, die_after=None):
    """Start two workers of one multi_worker_mirrored run; always reap them."""
    ports = _free_ports(2)
    procs = []
    try:
        for index in range(2):
            extra = {"TF_CONFIG": _tf_config(ports, index)}
            if index == 1 and die_after is not None:
                extra["DIE_AFTER_STEPS"] = str(die_after)
            procs.append(subprocess.Popen(
                HELPER + ["worker", str(tmp_path / "ckpt"), str(tmp_path / f"w{index}.npz"),
                          str(meta_iters)],
                cwd=ROOT, env=_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_two_worker_multi_worker_mirrored_run_trains_and_writes_one_checkpoint(tmp_path):
    with _workers(tmp_path, meta_iters=2) as procs:
        codes = [proc.wait(timeout=TIMEOUT) for proc in procs]
    assert codes == [0, 0], [p.stderr.read() if p.stderr else "" for p in procs]
    prefixes = sorted(glob.glob(str(tmp_path / "ckpt" / "*.index")))
    assert [os.path.basename(p) for p in prefixes] == ["model.ckpt-2.index"]
    chief, other = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    initial = _initial_weights()
    for key, start in zip(chief.files, initial):
        np.testing.assert_array_equal(chief[key], other[key])  # one all-reduced update
    assert any(float(np.max(np.abs(chief[k] - w))) > 1e-3
               for k, w in zip(chief.files, initial) if w.dtype.kind == "f")
    # The checkpoint holds exactly the weights the workers ended with.
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt"))
    assert int(reader.get_tensor("iteration/.ATTRIBUTES/VARIABLE_VALUE")) == 2


def test_a_dead_worker_makes_the_chief_exit_with_one_line_and_a_sound_checkpoint(tmp_path):
    with _workers(tmp_path, meta_iters=6, die_after=3) as procs:
        dead = procs[1].wait(timeout=TIMEOUT)
        chief = procs[0].wait(timeout=time_limit(120))  # heartbeats notice a dead peer within ~30 s
        stderr = procs[0].stderr.read()
    assert dead == 17
    assert chief == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: meta-iteration 4: a worker of the multi-worker run failed")
    assert "restart every worker" in last
    # The last checkpoint (iteration 2) is complete and readable; nothing later was written.
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt"))
    assert int(reader.get_tensor("iteration/.ATTRIBUTES/VARIABLE_VALUE")) == 2
    assert not glob.glob(str(tmp_path / "ckpt" / "model.ckpt-[3-9]*"))


def test_meta_batch_must_be_a_multiple_of_the_replica_count():
    strategy = types.SimpleNamespace(num_replicas_in_sync=2)
    assert distribute.tasks_per_replica(4, strategy) == 2
    with pytest.raises(ConfigError, match=r"--meta-batch 5 is not a multiple of the 2 "
                                          r"replicas.*use --meta-batch 4 or 6"):
        distribute.tasks_per_replica(5, strategy)


@pytest.mark.parametrize("tf_config,message", [
    ("", "needs TF_CONFIG"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster" object'),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
     "must be a non-empty list"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     "host:port"),
    ('{"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}', 'no "worker"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "evaluator", "index": 0}}',
     '"task" must name'),
    ('{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}',
     "index 2 is not in 0...1"),
])
def test_malformed_tf_config_is_one_clear_error(tf_config, message):
    with pytest.raises(ConfigError, match=message) as error:
        distribute.read_tf_config({"TF_CONFIG": tf_config})
    assert "\n" not in str(error.value)


def test_a_well_formed_tf_config_is_accepted_and_the_chief_is_worker_zero():
    spec = distribute.read_tf_config({"TF_CONFIG": _tf_config([1234, 1235], 1)})
    assert spec["task"] == {"type": "worker", "index": 1}
    assert distribute.is_chief(None) and distribute.is_chief(tf.distribute.get_strategy())
    assert not distribute.is_distributed(tf.distribute.get_strategy())


def test_unknown_strategy_and_negative_device_count_are_rejected():
    with pytest.raises(ConfigError, match="--distribution_strategy must be one of"):
        DistributeConfig(strategy="gpu")
    with pytest.raises(ConfigError, match="--num_cpu_devices must be >= 0"):
        DistributeConfig(num_cpu_devices=-1)


def test_splitting_an_initialised_cpu_says_to_do_it_first():
    tf.constant(1.0)  # this process's devices are initialised by now
    with pytest.raises(ConfigError, match="--num_cpu_devices 3: TensorFlow already"):
        distribute.split_cpu(3)


CLI_BASE = [sys.executable, "run_metasegnet.py", "--dataset", "synthetic",
            "--synthetic_num_classes", "12", "--synthetic_image_size", "32", "--image_size",
            "32", "--meta-iters", "1", "--shots", "2", "--eval-batch", "2",
            "--train-shots", "4", "--inner-batch", "2"]


@pytest.mark.parametrize("extra,env,message", [
    (["--distribution_strategy", "mirrored", "--num_cpu_devices", "2", "--meta-batch", "3"], {},
     "--meta-batch 3 is not a multiple of the 2 replicas"),
    (["--distribution_strategy", "multi_worker_mirrored"], {"TF_CONFIG": "{oops"},
     "TF_CONFIG is not valid JSON"),
    (["--distribution_strategy", "tpu"], {}, "--distribution_strategy tpu: no TPU found"),
])
def test_cli_bad_distribution_inputs_end_in_one_line_and_write_nothing(tmp_path, extra, env,
                                                                       message):
    checkpoint = tmp_path / "run"
    proc = subprocess.run(CLI_BASE + ["--checkpoint", str(checkpoint), "--cache_dir",
                                      str(tmp_path / "cache")] + extra,
                          cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr[-2000:]
    assert not any(line.startswith("Traceback") for line in lines)
    assert not checkpoint.exists() and not (tmp_path / "cache").exists()


def test_cli_mirrored_run_meta_trains_evaluates_and_writes_results(tmp_path):
    checkpoint = tmp_path / "run"
    proc = subprocess.run(
        CLI_BASE + ["--checkpoint", str(checkpoint), "--cache_dir", str(tmp_path / "cache"),
                    "--distribution_strategy", "mirrored", "--num_cpu_devices", "2",
                    "--meta-batch", "2", "--meta-iters", "2", "--eval-iters", "2",
                    "--eval-samples", "1", "--serially_eval_all_test_tasks",
                    "--noeval_train_tasks", "--eval-interval", "100", "--rsd", "2", "4"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Mean IoU over all meta-test tasks:" in proc.stdout
    assert (checkpoint / "model.ckpt-2.index").exists()
    with open(checkpoint / "config.json", encoding="utf-8") as f:
        assert json.load(f)["distribute"] == {"strategy": "mirrored", "num_cpu_devices": 2,
                                              "tpu": ""}
    with open(checkpoint / "meta-test_results.json", encoding="utf-8") as f:
        scores = json.load(f)
    assert scores and all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in scores.values())
