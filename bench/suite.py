"""The measurement groups of ``bench/run_all.py``, each a function of (size, options) -> dict.

Every group builds its own model and data, so ``run_all.py`` can run each in a fresh
process and report that process's peak resident memory (``ru_maxrss``) beside its numbers.
The network is the published EfficientLab-B0 (``--rsd 2 4``) with random weights, batch 8,
SGD, ``bce_dice``; inputs are random images and masks (speed does not depend on content).
The measuring functions live in ``bench_model.py``, ``bench_meta.py`` and ``bench_data.py``.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
import traceback
from typing import Callable, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE, os.path.dirname(HERE)) if p not in sys.path]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bench_data  # noqa: E402
import bench_fused_bn  # noqa: E402
import bench_meta  # noqa: E402
import bench_model  # noqa: E402
from metaseg.config import EvalConfig, ModelConfig  # noqa: E402
from metaseg.data.tasks import TaskStore  # noqa: E402
from metaseg.evaluation.evaluate import Evaluator  # noqa: E402
from metaseg.models import build_model  # noqa: E402
from metaseg.threads import usable_cores  # noqa: E402

PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class Options:
    """How much to measure. Defaults are the published shapes; tests shrink them."""

    repeats: int = 3
    eval_steps: int = 59  # the published evaluation: 5 shots, 59 steps (REFERENCE.md s. 10)
    eval_tasks: int = 3  # tasks timed per evaluation measurement
    prefetch_episodes: int = 3  # episodes per run of the pipeline-share measurement
    matmul_n: int = 2048
    # Evaluation throughput, sequential vs --concurrent_tasks (issue 16 item 3): 24 test tasks
    # as the benchmark's test split, each with throughput_steps steps.
    throughput_tasks: int = 24
    throughput_steps: int = 10
    concurrent_tasks: int = 2


def _model_config(precision: str) -> ModelConfig:
    return ModelConfig(rsd=(2, 4), mixed_precision=precision)


def random_store(size: int, tasks: int, examples: int = 10, seed: int = 0) -> TaskStore:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (examples, size, size, 3), dtype=np.uint8)
              for _ in range(tasks)]
    masks = [(rng.uniform(size=(examples, size, size)) > 0.7).astype(np.uint8) * 255
             for _ in range(tasks)]
    return TaskStore.from_arrays([f"t{i}" for i in range(tasks)], images, masks)


def model_group(size: int, opts: Options) -> Dict:
    """Forward and forward+backward time, FLOPs and GFLOP/s (fp32 and bf16), matmul rates."""
    rows = []
    for precision in PRECISIONS:
        model = build_model(_model_config(precision))
        for row in bench_model.bench_size(model, size, bench_meta.BATCH, opts.repeats):
            rows.append({**row, "precision": precision})
    matmul = {name: bench_model.bench_matmul(opts.matmul_n, opts.repeats, dtype)
              for name, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16))}
    return {"passes": rows, "matmul": matmul}


def inner_group(size: int, opts: Options) -> Dict:
    """Seconds per compiled inner step (fp32, bf16) next to a bare Keras train step, and
    the fp32 step with today's unfused batch norm (``inner_step_unfused_bn_s``): the two
    fp32 variants timed alternately in this process (``bench_fused_bn.measure``), each the
    best of its ``repeats`` calls, so load from other processes hits both alike."""
    out = {"bare_keras_step_s": bench_meta.bare_keras_step(size, opts.repeats),
           "inner_step_bf16_s": bench_meta.compiled_inner_step(size, opts.repeats,
                                                               _model_config("bf16"))}
    pair = bench_fused_bn.measure(size, opts.repeats)
    out["inner_step_fp32_s"] = min(pair["seconds"]["fused"])
    out["inner_step_unfused_bn_s"] = min(pair["seconds"]["unfused"])
    out["fused_over_unfused_pairs"] = pair["pair_ratios"]
    return out


def meta_group(size: int, opts: Options) -> Dict:
    """Seconds per meta-iteration (meta-batch 2 x 5 inner steps) of Reptile and FOMAML."""
    return {f"{algorithm}_iteration_s": bench_meta.meta_iteration(size, algorithm, opts.repeats)
            for algorithm in ("reptile", "fomaml")}


def eval_group(size: int, opts: Options) -> Dict:
    """Seconds per evaluated 5-shot task (episode, ``eval_steps`` steps, query prediction and
    scoring: ``Evaluator.evaluate`` of that one task) and, interleaved with it in this process,
    the adaptation of the same episode alone (its steps, ``eval_task_steps_s``); their
    per-task ratio is what an evaluation adds around its steps (``eval_task_overhead``, the
    median over ``eval_tasks`` tasks). Comparing with ``inner_step_fp32_s`` x steps instead
    would set one pass against another process's best of several."""
    store = random_store(size, opts.eval_tasks)
    config = EvalConfig(shots=5, eval_batch=bench_meta.BATCH, eval_iters=opts.eval_steps,
                        eval_samples=1, serially_eval_all_test_tasks=True, transductive=True,
                        concurrent_tasks=1)  # one task at a time (0 would choose by cores)
    evaluator = Evaluator(build_model(_model_config("fp32")), bench_meta.INNER, config)
    # Warm-up: one whole task at the timed step count (a warm-up of 1 step left a trace of
    # the timed count's episode and scoring path in the first timed task), untimed.
    evaluator.evaluate(store, task_indices=[0], num_samples=1, serial=True)
    episodes = list(evaluator._episodes(store, range(opts.eval_tasks), opts.eval_steps, 0))  # pylint: disable=protected-access
    start, lr = evaluator.adapter.initial_state(), tf.constant(bench_meta.INNER.learning_rate)
    # ... and the bare adaptation (a fixed signature: one step traces it for any count).
    evaluator.adapter.adapt(start, episodes[0]["x"][:1], episodes[0]["y"][:1], lr,
                            tf.constant(0), tf.constant(1))
    tasks, steps = [], []
    for task, episode in enumerate(episodes):  # one pass each: 59 steps at 224 px take ~1 min
        tic = time.perf_counter()
        evaluator.evaluate(store, task_indices=[task], num_samples=1, serial=True)
        tasks.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        end, _ = evaluator.adapter.adapt(start, episode["x"], episode["y"], lr, tf.constant(0),
                                         tf.constant(opts.eval_steps))
        tf.nest.map_structure(lambda v: v.numpy(), end)  # wait for every last update
        steps.append(time.perf_counter() - tic)
    return {"eval_task_s": float(np.median(tasks)), "eval_task_steps_s": float(np.median(steps)),
            "eval_task_overhead": float(np.median(np.divide(tasks, steps))),
            "eval_task_seconds": tasks, "eval_task_steps_seconds": steps,
            "eval_steps": opts.eval_steps, "eval_tasks": opts.eval_tasks, "shots": 5,
            **eval_throughput(size, opts, evaluator)}


def eval_throughput(size: int, opts: Options, sequential: Evaluator) -> Dict:
    """Tasks per hour evaluating ``throughput_tasks`` 5-shot tasks of ``throughput_steps``
    steps one at a time and ``concurrent_tasks`` at once (``--concurrent_tasks``), the same
    thread pools, one pass each after warm-up; whether every task's score is identical; the
    load average before and after each pass (the machine may be shared)."""
    store = random_store(size, opts.throughput_tasks, seed=1)
    config = dataclasses.replace(sequential.config, eval_iters=opts.throughput_steps)
    evaluators = {"sequential": Evaluator(sequential.model, bench_meta.INNER, config,
                                          adapter=sequential.adapter),
                  "concurrent": Evaluator(sequential.model, bench_meta.INNER,
                                          dataclasses.replace(
                                              config, concurrent_tasks=opts.concurrent_tasks),
                                          adapter=sequential.adapter)}
    # Warm-up: both ways of adapting at the timed step count (as concurrently as the timed
    # pass), untimed, so neither timed pass pays a trace.
    warm = list(range(min(opts.concurrent_tasks, len(store))))
    for evaluator in evaluators.values():
        evaluator.evaluate(store, task_indices=warm, num_samples=1, serial=True)
    out, scores = {}, {}
    for name, evaluator in evaluators.items():
        load_before = os.getloadavg()
        tic = time.perf_counter()
        scores[name] = evaluator.evaluate(store, num_samples=1, serial=True).task_scores
        seconds = time.perf_counter() - tic
        out[f"eval_tasks_per_hour_{name}"] = 3600.0 * opts.throughput_tasks / seconds
        out[f"eval_throughput_load_{name}"] = [list(load_before), list(os.getloadavg())]
    out["eval_concurrent_speedup"] = (out["eval_tasks_per_hour_concurrent"]
                                      / out["eval_tasks_per_hour_sequential"])
    out["eval_concurrent_identical"] = scores["sequential"] == scores["concurrent"]
    out["eval_throughput_settings"] = {
        "tasks": opts.throughput_tasks, "steps": opts.throughput_steps, "shots": 5,
        "concurrent_tasks": opts.concurrent_tasks, "threads_intra_inter": [
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads()],
        "cores": usable_cores()}
    return out


def data_group(size: int, opts: Options) -> Dict:
    """Share of an EfficientLab inner step the prefetched episode pipeline adds."""
    store = random_store(size, 4)
    return bench_data.bench_prefetch_share(store, "efficientlab", 5, opts.prefetch_episodes,
                                           repeats=opts.repeats)


GROUPS: Dict[str, Callable[[int, Options], Dict]] = {
    "model": model_group, "inner": inner_group, "meta": meta_group, "eval": eval_group,
    "data": data_group,
}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_group(name: str, size: int, opts: Options) -> Dict:
    """One group's results, its wall time and peak RSS; an exception is recorded, not raised."""
    tic = time.perf_counter()
    try:
        result = GROUPS[name](size, opts)
    except Exception as e:  # pylint: disable=broad-except  # keep the other groups' results
        result = {"error": f"{type(e).__name__}: {e}".splitlines()[0],
                  "traceback": traceback.format_exc()}
    return {"group": name, "image_size": size, **result,
            "wall_s": time.perf_counter() - tic, "peak_rss_mb": peak_rss_mb(),
            "load_avg_1_5_15": list(os.getloadavg())}  # the machine may be shared
