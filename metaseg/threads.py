"""TensorFlow's intra-/inter-op thread pools, sized by a rule measured on the inner step.

On 2 cores TensorFlow's own choice (2 intra-op + 2 inter-op threads) is the slowest of the
sensible settings for this network: with one intra-op thread per op and two ops running at
once, the compiled inner step was faster in every interleaved round of
``bench/bench_settings.py --rounds 3`` (1.07x at 64 px, 1.40x at 224 px, preliminary:
measured with other jobs on the machine; README "Making the inner step faster"). Many of
EfficientLab's ops (depthwise convolutions, squeeze-and-excitation, batch norm) are too
small to split across threads, and independent branches can run side by side instead.
Larger machines were not measured, so there TensorFlow keeps its defaults.

``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` override either count (0 =
TensorFlow's default).
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple

from absl import logging

from metaseg.errors import ConfigError

INTRA_ENV, INTER_ENV = "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"
SMALL_MACHINE_CORES = 2  # the largest core count the rule below was measured on
SMALL_MACHINE_THREADS = (1, 2)  # (intra-op, inter-op)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(cores: int) -> Tuple[int, int]:
    """(intra-op, inter-op) threads for ``cores`` usable cores; 0 = TensorFlow's default."""
    return SMALL_MACHINE_THREADS if cores <= SMALL_MACHINE_CORES else (0, 0)


def default_concurrent_tasks(cores: int) -> int:
    """Evaluation tasks adapted at once (``--concurrent_tasks 0``) on ``cores`` usable cores.

    Two on a 2-core machine, where each op gets one intra-op thread (the rule above) and
    two tasks keep both cores busy: 1.29x the tasks/hour at 64 px and 1.40x at 224 px on 2
    idle cores, every score identical (``bench/run_all.py``'s eval group). One elsewhere:
    on one core there is nothing to share, and larger machines were not measured (there
    each op already uses every core).
    """
    return 2 if cores == SMALL_MACHINE_CORES else 1


def _from_env(environ: Mapping[str, str], name: str) -> Optional[int]:
    value = environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ConfigError(f"{name}={environ[name]!r} is not a thread count: set it to a "
                          "whole number >= 0 (0 = TensorFlow's default) or unset it")
    return int(value)


def thread_counts(environ: Mapping[str, str], cores: int) -> Tuple[int, int]:
    """(intra-op, inter-op) threads: each from its environment variable if set, else the
    rule for ``cores``. Raises ConfigError for a value that is not a whole number."""
    rule = default_threads(cores)
    intra, inter = _from_env(environ, INTRA_ENV), _from_env(environ, INTER_ENV)
    return (rule[0] if intra is None else intra, rule[1] if inter is None else inter)


def configure(tf, environ: Mapping[str, str] = os.environ) -> Tuple[int, int]:
    """Size TensorFlow's thread pools before it starts; returns the (intra, inter) set.

    Must run before TensorFlow executes anything (the pools are fixed then); if it
    already has, the pools stay as they are and the counts in use are returned.
    """
    intra, inter = thread_counts(environ, usable_cores())
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(intra)
        threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow is running already (e.g. imported by a test)
        logging.warning("TensorFlow has started: its thread pools stay as they are "
                        "(wanted intra-op %d, inter-op %d)", intra, inter)
    used = (threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads())
    # Debug, not info: a user mistake must stay one line on stderr (--verbosity=1 shows it).
    logging.debug("TensorFlow threads: intra-op %d, inter-op %d (0 = TensorFlow's default; "
                 "%s / %s override)", *used, INTRA_ENV, INTER_ENV)
    return used
