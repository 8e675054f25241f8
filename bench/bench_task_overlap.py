"""Do the tasks of a meta-batch run at once? A meta-iteration with and without overlap.

    python bench/bench_task_overlap.py [--sizes 64,224] [--repeats 3]
        [--output bench/results_task_overlap.json]

The meta-step adapts to the tasks of a meta-batch in one ``tf.while_loop``
(``metaseg.meta.carry_over``); its ``parallel_iterations`` (``carry_over.PARALLEL_TASKS``)
lets the executor run one task's ops while another's are still running. Two trainers of
``bench_meta``'s Reptile meta-iteration (EfficientLab-B0 ``--rsd 2 4``, meta-batch 2 x 5
inner steps of batch 8, the default ``sequential`` carry-over) are traced in one process,
one with 10 tasks allowed at once (the default) and one with 1, and timed alternately so
load from other processes hits both alike. Per size: the median seconds of each, their
ratio, each pair's ratio, whether both give the same meta-training loss, and the 1-minute
load average. Not part of the test suite.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE, os.path.dirname(HERE)) if p not in sys.path]

from absl import app, flags  # noqa: E402

from metaseg.quiet import import_tensorflow  # noqa: E402

import_tensorflow()  # the thread pools every entry point gets (metaseg.threads)
import keras  # noqa: E402  # pylint: disable=wrong-import-position
import bench_meta  # noqa: E402
import suite  # noqa: E402
import provenance  # noqa: E402
from metaseg.config import MetaConfig  # noqa: E402
from metaseg.meta import carry_over  # noqa: E402
from metaseg.meta.trainer import MetaTrainer  # noqa: E402
from metaseg.models import build_model  # noqa: E402

FLAGS = flags.FLAGS
VARIANTS = {"overlapped": carry_over.PARALLEL_TASKS, "one_at_a_time": 1}


def define_flags() -> None:
    flags.DEFINE_list("sizes", ["64", "224"], "Square image sizes (multiples of 16).")
    flags.DEFINE_integer("repeats", 3, "Timed meta-iterations per variant (interleaved).",
                         lower_bound=1)
    flags.DEFINE_string("output", os.path.join(HERE, "results_task_overlap.json"),
                        "Results JSON.")


def _runner(size, parallel, directory):
    """A no-argument function running one Reptile meta-iteration; returns its loss."""
    meta = MetaConfig(algorithm="reptile", meta_iters=10**6, meta_batch=bench_meta.META_BATCH,
                      train_shots=10, inner_batch=bench_meta.BATCH, inner_iters=bench_meta.STEPS)
    keras.utils.set_random_seed(0)
    trainer = MetaTrainer(build_model(bench_meta.MODEL), suite.random_store(size, 4, seed=1),
                          meta=meta, inner=bench_meta.INNER, checkpoint_dir=directory,
                          total_inner_steps=bench_meta.STEPS)
    stream = iter(trainer._episodes(0))  # pylint: disable=protected-access

    def run():  # any (re)trace sees this variant's count
        carry_over.PARALLEL_TASKS = parallel
        try:
            return trainer._meta_step(stream, 0, 0.1)  # pylint: disable=protected-access
        finally:
            carry_over.PARALLEL_TASKS = VARIANTS["overlapped"]

    return run


def measure(size, repeats):
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        runs = {"overlapped": _runner(size, VARIANTS["overlapped"], a),
                "one_at_a_time": _runner(size, 1, b)}
        for _ in range(2):  # warm-up, both built: tracing (twice, the second trainer's too)
            for run in runs.values():
                run()
        seconds = {name: [] for name in runs}
        losses = {name: [] for name in runs}
        loads = []
        for _ in range(repeats):
            for name, run in runs.items():
                loads.append(os.getloadavg()[0])
                tic = time.perf_counter()
                result = run()
                seconds[name].append(time.perf_counter() - tic)
                losses[name].append(float(result))
    median = {name: statistics.median(v) for name, v in seconds.items()}
    return {"image_size": size, "meta_iteration_overlapped_s": median["overlapped"],
            "meta_iteration_one_at_a_time_s": median["one_at_a_time"],
            "speedup": median["one_at_a_time"] / median["overlapped"],
            "pair_speedups": [b / a for a, b in zip(seconds["overlapped"],
                                                    seconds["one_at_a_time"])],
            "seconds": seconds, "losses": losses,
            "same_losses": losses["overlapped"] == losses["one_at_a_time"],
            "load_avg_1m": {"min": min(loads), "max": max(loads)}}


def markdown(rows) -> str:
    lines = ["| px | tasks overlapped (s) | one task at a time (s) | speed-up (medians) "
             "| per-pair range | same losses | load avg (1 min) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image_size']} | {r['meta_iteration_overlapped_s']:.3f} "
                     f"| {r['meta_iteration_one_at_a_time_s']:.3f} | {r['speedup']:.2f}x "
                     f"| {min(r['pair_speedups']):.2f}-{max(r['pair_speedups']):.2f} "
                     f"| {'yes' if r['same_losses'] else 'NO'} "
                     f"| {r['load_avg_1m']['min']:.1f}-{r['load_avg_1m']['max']:.1f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    prov = provenance.record()
    rows = [measure(int(size), FLAGS.repeats) for size in FLAGS.sizes]
    provenance.write_results(FLAGS.output, prov, markdown(rows), rows=rows)


if __name__ == "__main__":
    define_flags()
    app.run(main)
