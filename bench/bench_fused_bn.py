"""The compiled inner step with the fused batch norm vs today's unfused one, interleaved.

    python bench/bench_fused_bn.py [--sizes 64,224] [--repeats 5]
        [--output bench/results_fused_bn.json]

Both variants of ``bench_meta``'s inner step (EfficientLab-B0 ``--rsd 2 4``, batch 8, SGD,
``bce_dice``, seed-0 weights, 5 steps per call) are built and traced in one process, then
timed alternately (fused, unfused, fused, ...) so that load from other processes hits both
alike, with the thread pools every entry point gets (``metaseg.threads``). Per size: the median seconds per step of each, the ratio fused / unfused of the
medians and of each interleaved pair, the step losses of both (the same function: equal to
float tolerance), and the 1-minute load average around every timed call. Not part of the
test suite.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE, os.path.dirname(HERE)) if p not in sys.path]

from absl import app, flags  # noqa: E402

from metaseg.quiet import import_tensorflow  # noqa: E402

import_tensorflow()  # the thread pools every entry point gets (metaseg.threads)
import bench_meta  # noqa: E402  # pylint: disable=wrong-import-position
import provenance  # noqa: E402

FLAGS = flags.FLAGS
VARIANTS = ("fused", "unfused")


def define_flags() -> None:
    flags.DEFINE_list("sizes", ["64", "224"], "Square image sizes (multiples of 16).")
    flags.DEFINE_integer("repeats", 5, "Timed calls per variant (interleaved).", lower_bound=1)
    flags.DEFINE_string("output", os.path.join(HERE, "results_fused_bn.json"), "Results JSON.")


def measure(size: int, repeats: int) -> Dict:
    runs = {v: bench_meta.inner_step_runner(size, fused_bn=v == "fused") for v in VARIANTS}
    losses = {v: run().tolist() for v, run in runs.items()}  # warm-up: trace and compile
    seconds = {v: [] for v in VARIANTS}
    loads = []
    for _ in range(repeats):
        for v in VARIANTS:
            loads.append(os.getloadavg()[0])
            tic = time.perf_counter()
            runs[v]()
            seconds[v].append((time.perf_counter() - tic) / bench_meta.STEPS)
    median = {v: statistics.median(seconds[v]) for v in VARIANTS}
    pairs = [f / u for f, u in zip(seconds["fused"], seconds["unfused"])]
    return {"image_size": size, "inner_step_s": median["fused"],
            "inner_step_unfused_bn_s": median["unfused"],
            "fused_over_unfused": median["fused"] / median["unfused"],
            "pair_ratios": pairs, "seconds": seconds, "losses": losses,
            "max_rel_loss_diff": max(abs(a - b) / abs(b) for a, b in
                                     zip(losses["fused"], losses["unfused"])),
            "load_avg_1m": {"min": min(loads), "max": max(loads)}}


def markdown(rows) -> str:
    lines = ["| px | fused step (s) | unfused step (s) | fused / unfused (medians) "
             "| per-pair range | max rel. loss diff | load avg (1 min) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image_size']} | {r['inner_step_s']:.4f} "
                     f"| {r['inner_step_unfused_bn_s']:.4f} | {r['fused_over_unfused']:.3f} "
                     f"| {min(r['pair_ratios']):.3f}-{max(r['pair_ratios']):.3f} "
                     f"| {r['max_rel_loss_diff']:.1e} "
                     f"| {r['load_avg_1m']['min']:.1f}-{r['load_avg_1m']['max']:.1f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    prov = provenance.record()
    rows = []
    for size in (int(s) for s in FLAGS.sizes):
        rows.append(measure(size, FLAGS.repeats))
        print(markdown(rows[-1:]), flush=True)
    provenance.write_results(FLAGS.output, prov, markdown(rows), rows=rows)


if __name__ == "__main__":
    define_flags()
    app.run(main)
