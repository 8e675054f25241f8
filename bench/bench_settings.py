"""Which runtime settings make the compiled inner step faster on this CPU, without changing it.

    python bench/bench_settings.py [--sizes 64] [--repeats 5] [--output bench/results_settings.json]

Each setting runs in a fresh process (oneDNN and thread pools are fixed when TensorFlow
starts) and times the compiled inner step of ``bench_meta`` (EfficientLab-B0 ``--rsd 2 4``,
batch 8, SGD, ``bce_dice``, seed-0 weights, 5 steps per call). Its 5 step losses are
compared with the default's: a setting that moves them by more than float tolerance computes
another function and is not eligible. Settings: XLA ``jit_compile``; ``TF_ENABLE_ONEDNN_OPTS``
off; intra-/inter-op thread counts; and the NCHW data layout, which EfficientLab (NHWC
throughout) cannot use, measured on its commonest layers, a 3x3 depthwise and a 1x1
convolution, to see whether it would pay. Prints a Markdown table and writes the JSON.
``--rounds N`` runs the whole list of settings N times in turn (A, B, C, A, B, C, ...), so
load from other processes falls on every setting alike; a row's time is the median over
rounds, with each run's 1-minute load average recorded.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE, os.path.dirname(HERE)) if p not in sys.path]

from absl import app, flags  # noqa: E402

import provenance  # noqa: E402

FLAGS = flags.FLAGS
LOSS_TOLERANCE = 1e-3  # relative; oneDNN vs Eigen reorder float sums (~1e-6 per op)
SPEEDUP_TO_KEEP = 1.05  # a setting must beat the default by 5 % to be worth a default

# name -> (what it is, extra environment, thread counts (intra, inter) or None, jit_compile)
SETTINGS: Dict[str, tuple] = {
    "default": ("oneDNN on, TF's thread pools (2 + 2 here), no XLA", {}, None, False),
    "xla": ("XLA jit_compile of the inner loop", {}, None, True),
    "onednn_off": ("TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels)",
                   {"TF_ENABLE_ONEDNN_OPTS": "0"}, None, False),
    "intra2_inter1": ("intra-op 2, inter-op 1 threads", {}, (2, 1), False),
    "intra1_inter2": ("intra-op 1, inter-op 2 threads", {}, (1, 2), False),
    "intra1_inter1": ("intra-op 1, inter-op 1 threads", {}, (1, 1), False),
    "intra2_inter2": ("intra-op 2, inter-op 2 threads", {}, (2, 2), False),
    "omp2_blocktime0": ("OMP_NUM_THREADS=2, KMP_BLOCKTIME=0",
                        {"OMP_NUM_THREADS": "2", "KMP_BLOCKTIME": "0"}, None, False),
}
DEFAULT = "default"


def define_flags() -> None:
    flags.DEFINE_list("sizes", ["64"], "Square image sizes (multiples of 16).")
    flags.DEFINE_integer("repeats", 5, "Timed repetitions per setting.", lower_bound=1)
    flags.DEFINE_integer("rounds", 1, "Interleaved rounds over all settings.", lower_bound=1)
    flags.DEFINE_list("settings", list(SETTINGS), "Settings to measure (names of SETTINGS).")
    flags.DEFINE_string("output", os.path.join(HERE, "results_settings.json"), "Results JSON.")
    flags.DEFINE_string("child", None, "Internal: SETTING|SIZE|OUT_JSON.")


def child(name: str, size: int, out: str) -> None:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    _, _, threads, jit = SETTINGS[name]
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    import bench_meta  # pylint: disable=import-outside-toplevel
    inner = bench_meta.INNER.__class__(**{**bench_meta.INNER.__dict__, "jit_compile": jit})
    seconds, losses = bench_meta.inner_step_and_losses(size, FLAGS.repeats, inner=inner)
    provenance.write_json(out, {"setting": name, "image_size": size, "inner_step_s": seconds,
                                "losses": losses, "load_avg_1m": os.getloadavg()[0],
                                "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                                            tf.config.threading.get_inter_op_parallelism_threads()]})


def layout_check(size: int, repeats: int) -> Dict:
    """NHWC vs NCHW for a depthwise 3x3 and a 1x1 conv at EfficientLab's 1/4-scale shape."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    x = tf.random.normal([8, size // 4, size // 4, 144])
    dw, pw = tf.random.normal([3, 3, 144, 1]), tf.random.normal([1, 1, 144, 24])
    ops = {"depthwise 3x3": lambda t, f: tf.nn.depthwise_conv2d(
               t, dw, [1, 1, 1, 1], "SAME", data_format=f),
           "conv 1x1": lambda t, f: tf.nn.conv2d(t, pw, 1, "SAME", data_format=f)}
    out = {}
    for op_name, op in ops.items():
        for fmt, t in (("NHWC", x), ("NCHW", tf.transpose(x, [0, 3, 1, 2]))):
            fn = tf.function(lambda t=t, fmt=fmt, op=op: op(t, fmt))
            try:
                fn().numpy()
                tic = time.perf_counter()
                for _ in range(repeats * 10):
                    fn().numpy()
                out[f"{op_name} {fmt}"] = (time.perf_counter() - tic) / (repeats * 10)
            except Exception as e:  # pylint: disable=broad-except  # recorded, not raised
                out[f"{op_name} {fmt}"] = f"unsupported: {str(e).splitlines()[0][:120]}"
    return out


def run_setting(name: str, size: int, workdir: str) -> Dict:
    env = SETTINGS[name][1]
    out = os.path.join(workdir, f"setting_{name}_{size}.json")
    argv = [a for a in sys.argv[1:] if not a.startswith("--child")]
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv,
                           f"--child={name}|{size}|{out}"], env={**os.environ, **env},
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not os.path.exists(out):
        return {"setting": name, "image_size": size,
                "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def merge_rounds(runs: List[Dict]) -> List[Dict]:
    """One row per (setting, size): the median time over its rounds, every round kept;
    a setting that failed in any round is reported as failed."""
    rows = {}
    for run in runs:
        key = (run["setting"], run["image_size"])
        if "error" in run:
            rows[key] = run
            continue
        if "error" in rows.get(key, {}):
            continue
        row = rows.setdefault(key, {**run, "rounds_s": [], "loads_1m": []})
        row["rounds_s"].append(run["inner_step_s"])
        row["loads_1m"].append(run["load_avg_1m"])
        row["inner_step_s"] = statistics.median(row["rounds_s"])
    return list(rows.values())


def compare(rows: List[Dict]) -> None:
    """Speed-up and loss difference against the default of the same size; eligibility."""
    default_name = DEFAULT
    for size in {r["image_size"] for r in rows}:
        base = next((r for r in rows if r["image_size"] == size and r["setting"] == default_name
                     and "error" not in r), None)
        for r in rows:
            if r["image_size"] != size or "error" in r or base is None:
                continue
            r["speedup"] = base["inner_step_s"] / r["inner_step_s"]
            r["max_rel_loss_diff"] = max(abs(a - b) / max(abs(b), 1e-12)
                                         for a, b in zip(r["losses"], base["losses"]))
            r["same_function"] = r["max_rel_loss_diff"] <= LOSS_TOLERANCE
            r["helps"] = r["same_function"] and r["speedup"] >= SPEEDUP_TO_KEEP


def markdown(rows: List[Dict], layout: Dict) -> str:
    lines = ["| setting | px | inner step (s) | speed-up | max rel. loss difference | verdict "
             "| load avg (1 min) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {SETTINGS[r['setting']][0]} | {r['image_size']} | - | - | - | failed: "
                         f"{r['error'][:80]} | - |")
            continue
        verdict = ("baseline" if r["setting"] == DEFAULT else
                   "helps" if r["helps"] else
                   "changes the function" if not r["same_function"] else "no gain")
        loads = r.get("loads_1m", [])
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
        lines.append(f"| {SETTINGS[r['setting']][0]} | {r['image_size']} | {r['inner_step_s']:.4f} "
                     f"| {r['speedup']:.2f}x | {r['max_rel_loss_diff']:.1e} | {verdict} | {load} |")
    lines += ["", "| layout check (8 x S/4 x S/4 x 144) | s / op |", "|---|---|"]
    lines += [f"| {k} | {v if isinstance(v, str) else f'{v * 1e3:.2f} ms'} |"
              for k, v in layout.items()]
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.child:
        name, size, out = FLAGS.child.split("|")
        child(name, int(size), out)
        return
    import tempfile  # pylint: disable=import-outside-toplevel
    unknown = [s for s in FLAGS.settings if s not in SETTINGS]
    if unknown:
        raise app.UsageError(f"unknown --settings {unknown}; known: {list(SETTINGS)}")
    prov = provenance.record()
    names = [DEFAULT] + [s for s in FLAGS.settings if s != DEFAULT]
    with tempfile.TemporaryDirectory(prefix="metaseg_settings_") as workdir:
        runs = [run_setting(name, int(size), workdir) for size in FLAGS.sizes
                for _ in range(FLAGS.rounds) for name in names]
    rows = merge_rounds(runs)
    compare(rows)
    layout = layout_check(int(FLAGS.sizes[0]), FLAGS.repeats)
    provenance.write_results(FLAGS.output, prov, markdown(rows, layout), rows=rows,
                             layout=layout)


if __name__ == "__main__":
    define_flags()
    app.run(main)
