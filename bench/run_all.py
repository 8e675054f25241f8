"""The whole benchmark suite in one command: ``bench/results.json`` and ``bench/results.md``.

    python bench/run_all.py [--sizes 64,224] [--repeats 3] [--output bench/results.json]
        [--noaccuracy] [--accuracy_meta_iters N] [--in_process]

For each image size, each measurement group of ``suite.py`` (model passes and FLOPs with
fp32/bf16 matmul rates, compiled inner step fp32/bf16 vs bare Keras step, Reptile and
FOMAML meta-iterations, evaluation of a 5-shot task with 59 steps and the tasks/hour of
evaluating 24 tasks of 10 steps one at a time vs ``--concurrent_tasks 2``, data pipeline share)
runs in a fresh Python process, so its peak resident memory (``ru_maxrss``) is its own.
Then, unless ``--noaccuracy``, the README quickstart (``flags/quickstart.flags``) runs
once in fp32 and once in bf16 (``bench/precision_run.py --precision bf16``): mean IoU on
the 24 test classes, wall time and the keep/drop decision for bf16 (keep if within 1 IoU point and faster).
The JSON and Markdown record the commit, the exact command, the machine and the time.
Not part of the test suite (``tests/bench`` runs it with tiny settings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE, os.path.dirname(HERE)) if p not in sys.path]

from absl import app, flags, logging  # noqa: E402

import provenance  # noqa: E402

FLAGS = flags.FLAGS
ACCURACY_TOLERANCE = 0.01  # the issue: keep bf16 only if within 1 IoU point of fp32


def define_flags() -> None:
    flags.DEFINE_list("sizes", ["64", "224"], "Square image sizes (multiples of 16).")
    flags.DEFINE_integer("repeats", 3, "Timed repetitions per measurement.", lower_bound=1)
    flags.DEFINE_string("output", os.path.join(HERE, "results.json"),
                        "Results JSON; the Markdown goes beside it with a .md suffix.")
    flags.DEFINE_list("groups", ["model", "inner", "meta", "eval", "data"],
                      "Measurement groups to run (suite.GROUPS).")
    flags.DEFINE_integer("eval_steps", 59, "Inner steps of the timed evaluation.", lower_bound=1)
    flags.DEFINE_integer("eval_tasks", 3, "Tasks per timed evaluation.", lower_bound=1)
    flags.DEFINE_integer("prefetch_episodes", 3, "Episodes per pipeline-share run.",
                         lower_bound=1)
    flags.DEFINE_integer("throughput_tasks", 24, "Tasks of the evaluation-throughput "
                         "measurement (sequential vs --concurrent_tasks).", lower_bound=1)
    flags.DEFINE_integer("throughput_steps", 10, "Inner steps per task there.", lower_bound=1)
    flags.DEFINE_integer("concurrent_tasks", 2, "Tasks adapted at once there.", lower_bound=1)
    flags.DEFINE_integer("matmul_n", 2048, "Side of the square matmuls.", lower_bound=16)
    flags.DEFINE_boolean("accuracy", True, "Run the quickstart in fp32 and bf16.")
    flags.DEFINE_integer("accuracy_meta_iters", None,
                         "Override the quickstart's --meta-iters (default: the flagfile's 150).")
    flags.DEFINE_boolean("in_process", False,
                         "Run every group in this process (faster; peak memory is then "
                         "cumulative).")
    flags.DEFINE_string("child", None, "Internal: run one group GROUP:SIZE:OUT_JSON and exit.")


def options():
    import suite  # pylint: disable=import-outside-toplevel  # imports TensorFlow
    return suite.Options(repeats=FLAGS.repeats, eval_steps=FLAGS.eval_steps,
                         eval_tasks=FLAGS.eval_tasks, prefetch_episodes=FLAGS.prefetch_episodes,
                         matmul_n=FLAGS.matmul_n, throughput_tasks=FLAGS.throughput_tasks,
                         throughput_steps=FLAGS.throughput_steps,
                         concurrent_tasks=FLAGS.concurrent_tasks)


def run_child(cmd: List[str], log_path: str) -> Dict:
    """Run ``cmd``; its exit code, wall time and peak RSS (``os.wait4``'s own rusage)."""
    tic = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=provenance.REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - tic,
            "peak_rss_mb": usage.ru_maxrss / 1024.0}


def group_in_child(name: str, size: int, workdir: str) -> Dict:
    out = os.path.join(workdir, f"{name}_{size}.json")
    argv = [a for a in sys.argv[1:] if not a.startswith("--child")]
    run = run_child([sys.executable, os.path.abspath(__file__), *argv,
                     f"--child={name}:{size}:{out}"], out + ".log")
    if run["returncode"] != 0 or not os.path.exists(out):
        with open(out + ".log", encoding="utf-8", errors="replace") as f:
            tail = f.read()[-2000:]
        return {"group": name, "image_size": size, "error": f"exit {run['returncode']}",
                "log_tail": tail, "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"]}
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def quickstart(precision: str, workdir: str) -> Dict:
    """The README quickstart with the model in ``precision``: mean IoU, time, memory."""
    checkpoint = os.path.join(workdir, f"quickstart_{precision}")
    cmd = [sys.executable, os.path.join("bench", "precision_run.py"), f"--precision={precision}",
           "--flagfile", "flags/quickstart.flags", f"--checkpoint={checkpoint}"]
    if FLAGS.accuracy_meta_iters:
        cmd.append(f"--meta-iters={FLAGS.accuracy_meta_iters}")
    logging.info("Quickstart (%s): %s", precision, " ".join(cmd))
    run = run_child(cmd, checkpoint + ".log")
    summary_path = os.path.join(checkpoint, "meta-test_results_summary.json")
    if run["returncode"] != 0 or not os.path.exists(summary_path):
        return {"precision": precision, **run, "error": f"exit {run['returncode']}"}
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    return {"precision": precision, **run, "mean_iou": summary["mean_iou"],
            "ci95": summary["ci95"], "num_tasks": summary["num_tasks"]}


def decide(runs: List[Dict], groups: List[Dict]) -> str:
    """The keep/drop sentence for bf16 from the accuracy runs and the inner-step times."""
    by = {r["precision"]: r for r in runs}
    if any("mean_iou" not in r for r in runs):
        return "Decision: not measured (a quickstart run failed; see its log)."
    diff = by["bf16"]["mean_iou"] - by["fp32"]["mean_iou"]
    speed = [f"{g['image_size']} px {g['inner_step_fp32_s'] / g['inner_step_bf16_s']:.2f}x"
             for g in groups if g["group"] == "inner" and "inner_step_bf16_s" in g]
    wall = by["fp32"]["wall_s"] / by["bf16"]["wall_s"]
    within = abs(diff) <= ACCURACY_TOLERANCE
    faster = wall > 1.0
    verdict = ("recommended" if within and faster else "not recommended on this CPU")
    return (f"bf16 - fp32 mean IoU: {100 * diff:+.1f} points ({'within' if within else 'outside'}"
            f" the 1-point tolerance); inner-step speed-up fp32/bf16: "
            f"{', '.join(speed) or '-'}; quickstart wall-time speed-up {wall:.2f}x. "
            f"Decision: bf16 {verdict}.")


def main(argv):
    del argv
    if FLAGS.child or FLAGS.in_process:
        from metaseg.quiet import import_tensorflow  # pylint: disable=import-outside-toplevel
        import_tensorflow()  # the thread pools every entry point gets (metaseg.threads)
    if FLAGS.child:
        import suite  # pylint: disable=import-outside-toplevel
        name, size, out = FLAGS.child.split(":", 2)
        provenance.write_json(out, suite.run_group(name, int(size), options()))
        return
    sizes = [int(s) for s in FLAGS.sizes]
    prov = provenance.record()
    started = time.perf_counter()
    groups = []
    with tempfile.TemporaryDirectory(prefix="metaseg_bench_") as workdir:
        for size in sizes:
            for name in FLAGS.groups:
                logging.info("Measuring %s at %d px", name, size)
                if FLAGS.in_process:
                    import suite  # pylint: disable=import-outside-toplevel
                    groups.append(suite.run_group(name, size, options()))
                else:
                    groups.append(group_in_child(name, size, workdir))
                if "error" in groups[-1]:
                    logging.warning("%s at %d px failed: %s", name, size, groups[-1]["error"])
        accuracy = None
        if FLAGS.accuracy:
            runs = [quickstart(p, workdir) for p in ("fp32", "bf16")]
            accuracy = {"runs": runs, "decision": decide(runs, groups)}
    results = {"provenance": prov, "sizes": sizes,
               "options": dataclasses.asdict(options()), "groups": groups,
               "mixed_precision": accuracy, "total_wall_s": time.perf_counter() - started}
    import report  # pylint: disable=import-outside-toplevel
    text = report.markdown(results)
    provenance.write_json(FLAGS.output, results)
    provenance.write_atomic(os.path.splitext(FLAGS.output)[0] + ".md", text)
    print(text)
    logging.info("Wrote %s (%.0f s)", FLAGS.output, results["total_wall_s"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
