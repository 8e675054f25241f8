"""Choosing and describing the ``tf.distribute`` strategy a run uses.

``--distribution_strategy`` picks TensorFlow's own strategy; nothing here moves data between
devices by hand. The meta-batch is the unit of parallelism: with R replicas each one adapts
to ``meta_batch / R`` tasks and the outer update averages all directions with one all-reduce
(``metaseg.meta.step``). This module only builds the strategy, checks the inputs that
decide whether it can work (``TF_CONFIG``, device counts, the meta-batch), and answers who
writes files (the chief).

Order matters: ``--num_cpu_devices`` and ``multi_worker_mirrored`` must be set up before
TensorFlow touches a device, so :func:`make_strategy` is the first thing a run does.
"""

from __future__ import annotations

import json
import os
import re
from typing import List, Optional

import tensorflow as tf
from absl import logging

from metaseg.config import DistributeConfig
from metaseg.errors import ConfigError, MetasegError


class DistributedError(MetasegError):
    """A peer of a multi-worker run failed or became unreachable."""


# Errors a collective raises when a peer dies or the cluster is torn down.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.AbortedError, tf.errors.CancelledError)


def split_cpu(num_devices: int) -> None:
    """Expose the CPU as ``num_devices`` logical devices (``--num_cpu_devices``)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == num_devices:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise ConfigError(
            f"--num_cpu_devices {num_devices}: TensorFlow already initialised {have} CPU "
            "device(s) in this process; set it before any TensorFlow work (in a library, call "
            "metaseg.distribute.split_cpu first)") from None


def read_tf_config(environ=None) -> dict:
    """``TF_CONFIG`` parsed and checked: a cluster with workers and this process's task."""
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "")
    hint = ('set TF_CONFIG to e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}} on every machine (see the README, Scaling)')
    if not raw.strip():
        raise ConfigError(f"--distribution_strategy multi_worker_mirrored needs TF_CONFIG; {hint}")
    try:
        spec = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}); {hint}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
        raise ConfigError(f"TF_CONFIG has no \"cluster\" object; {hint}")
    cluster = spec["cluster"]
    for job, addresses in cluster.items():
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit()
                           for a in addresses)):
            raise ConfigError(f"TF_CONFIG cluster job {job!r} must be a non-empty list of "
                              f"\"host:port\" strings, got {addresses!r}; {hint}")
    if not set(cluster) & {"worker", "chief"}:
        raise ConfigError(f"TF_CONFIG cluster names no \"worker\" or \"chief\" job "
                          f"(got {sorted(cluster)}); {hint}")
    task = spec.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ConfigError(f"TF_CONFIG \"task\" must name this process's job, one of "
                          f"{sorted(cluster)}, got {task!r}; {hint}")
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ConfigError(f"TF_CONFIG task index {index!r} is not in 0..."
                          f"{len(cluster[task['type']]) - 1} for job {task['type']!r}; {hint}")
    return spec


def make_strategy(config: DistributeConfig) -> tf.distribute.Strategy:
    """The strategy ``config`` names; call before any other TensorFlow work of the run."""
    if config.num_cpu_devices:
        split_cpu(config.num_cpu_devices)
    name = config.strategy
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "multi_worker_mirrored":
        read_tf_config()
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, RuntimeError) as e:
            raise ConfigError(f"--distribution_strategy multi_worker_mirrored could not start "
                              f"({' '.join(str(e).split())[:300]}); check TF_CONFIG") from None
    elif name == "tpu":
        strategy = _tpu_strategy(config.tpu)
    else:  # DistributeConfig already rejects other names
        raise ConfigError(f"unknown --distribution_strategy {name!r}")
    logging.info("%s: %d replica(s) in sync, chief=%s", type(strategy).__name__,
                 strategy.num_replicas_in_sync, is_chief(strategy))
    return strategy


def _tpu_strategy(address: str) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        where = f"--tpu {address}" if address else "this machine (no --tpu given)"
        raise ConfigError(f"--distribution_strategy tpu: no TPU found at {where} "
                          f"({' '.join(str(e).split())[:200]}); run on a TPU VM or pass "
                          "--tpu NAME") from None
    return tf.distribute.TPUStrategy(resolver)


def is_distributed(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """True for every strategy but the default one-device strategy."""
    return strategy is not None and type(strategy).__name__ != "_DefaultDistributionStrategy"


def is_multi_worker(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """True when the run spans several processes (``multi_worker_mirrored`` with peers)."""
    extended = getattr(strategy, "extended", None)
    return bool(extended is not None and getattr(extended, "_in_multi_worker_mode",
                                                 lambda: False)())


def is_chief(strategy: Optional[tf.distribute.Strategy]) -> bool:
    """Whether this process writes checkpoints and results (one process per run does)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def local_replica_ids(strategy: tf.distribute.Strategy) -> List[int]:
    """The global ids (0..R-1) of the replicas this process runs, in order."""
    ids = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(ctx.replica_id_in_sync_group))
    return [int(t) for t in strategy.experimental_local_results(ids)]


def tasks_per_replica(meta_batch: int, strategy: tf.distribute.Strategy) -> int:
    """``meta_batch / replicas``, or a ConfigError saying how to make it divide."""
    replicas = strategy.num_replicas_in_sync
    if meta_batch % replicas:
        raise ConfigError(
            f"--meta-batch {meta_batch} is not a multiple of the {replicas} replicas of "
            f"{type(strategy).__name__}; use --meta-batch {replicas * max(1, meta_batch // replicas)}"
            f" or {replicas * (meta_batch // replicas + 1)}, or fewer devices")
    return meta_batch // replicas


def peer_failure(error: Exception, what: str) -> DistributedError:
    """A one-line error for a collective that failed because a peer went away."""
    message = getattr(error, "message", str(error))
    unhealthy = re.search(r"unhealthy[^:]*:\s*(\S+)", message)
    aborted = re.search(r"aborted by:\s*(.+)", message)
    remote = re.search(r"from remote target (\S+)", message)
    if unhealthy:
        cause = f"{unhealthy.group(1)} stopped sending heartbeats"
    elif aborted:
        cause = aborted.group(1).strip()[:160] + (f" ({remote.group(1)})" if remote else "")
    else:
        cause = f"{type(error).__name__} in a collective"
    return DistributedError(f"{what}: a worker of the multi-worker run failed or became "
                            f"unreachable: {cause}; restart every worker with the same flags, "
                            "meta-training resumes from the last checkpoint")
