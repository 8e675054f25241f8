"""Model benchmark: EfficientLab forward and forward+backward time, FLOPs and GFLOP/s.

    python bench/bench_model.py [--batch 8] [--sizes 224,64] [--repeats 5]
        [--output_json bench/results_model.json]

The published configuration (B0, ``--rsd 2 4``) with random weights, float32 on CPU.
- forward: ``model(x, training=False)`` (inference mode, as when predicting queries);
- forward+backward: one inner-loop step's work, ``logits_model`` in training mode, the
  ``bce_dice`` loss and gradients with respect to every trainable weight (no update);
both compiled with ``tf.function`` on a fixed input signature. FLOPs come from the TF
profiler's float-operation count on each concrete function's graph (convolutions, their
gradients, matmuls and the element-wise ops it knows). For scale, the same run measures
dense float32 matmul throughput. Times are medians over ``--repeats`` after two warm-ups.
Not part of the test suite.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from tensorflow.python.profiler import model_analyzer, option_builder

from metaseg.models import EfficientLab
from metaseg.models.losses import segmentation_loss


def graph_flops(concrete_function) -> int:
    """Float operations the TF profiler counts in a concrete function's graph."""
    options = (option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build())
    return int(model_analyzer.profile(concrete_function.graph, options=options).total_float_ops)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` (results fetched to host) after two warm-up calls."""
    for _ in range(2):
        tf.nest.map_structure(np.asarray, fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(np.asarray, fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_steps(model):
    """(forward, forward+backward) tf.functions of images [N,S,S,3] (and labels)."""
    logits_model = model.logits_model

    @tf.function
    def forward(images):
        return model(images, training=False)

    @tf.function
    def forward_backward(images, labels):
        with tf.GradientTape() as tape:
            logits = logits_model(images, training=True)
            loss = segmentation_loss(logits, labels, loss_name="bce_dice")
        return loss, tape.gradient(loss, logits_model.trainable_variables)

    return forward, forward_backward


def bench_size(model, size: int, batch: int, repeats: int) -> List[Dict]:
    rng = np.random.default_rng(size)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
    fg = (rng.uniform(size=(batch, size, size)) > 0.5).astype(np.float32)
    labels = tf.constant(np.stack([1 - fg, fg], -1))
    forward, forward_backward = model_steps(model)
    runs = [("forward", forward, (images,)),
            ("forward+backward", forward_backward, (images, labels))]
    rows = []
    for name, fn, args in runs:
        flops = graph_flops(fn.get_concrete_function(*args))
        seconds = median_seconds(lambda: fn(*args), repeats)
        rows.append({"pass": name, "image_size": size, "batch": batch, "seconds": seconds,
                     "images_per_s": batch / seconds, "gflop_per_step": flops / 1e9,
                     "gflop_per_s": flops / 1e9 / seconds})
        logging.info("%s %d px: %.3f s, %.1f GFLOP/s", name, size, seconds, flops / 1e9 / seconds)
    return rows


def bench_matmul(n: int = 2048, repeats: int = 5, dtype=tf.float32) -> Dict:
    """Dense matmul throughput in ``dtype`` (float32 or bfloat16): 2 n^3 flops per product."""
    rng = np.random.default_rng(0)
    a = tf.cast(tf.constant(rng.normal(size=(n, n)).astype(np.float32)), dtype)
    b = tf.cast(tf.constant(rng.normal(size=(n, n)).astype(np.float32)), dtype)
    matmul = tf.function(lambda: tf.linalg.matmul(a, b))
    seconds = median_seconds(matmul, repeats)
    return {"n": n, "dtype": tf.as_dtype(dtype).name, "seconds": seconds,
            "gflop_per_s": 2 * n ** 3 / 1e9 / seconds}


def markdown(rows: List[Dict], matmul: Dict) -> str:
    lines = ["| pass | size | batch | time / batch (s) | images/s | GFLOP / step | GFLOP/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pass']} | {r['image_size']} | {r['batch']} | {r['seconds']:.3f} "
                     f"| {r['images_per_s']:.1f} | {r['gflop_per_step']:.2f} "
                     f"| {r['gflop_per_s']:.1f} |")
    lines.append(f"| dense fp32 matmul {matmul['n']}^3 | | | {matmul['seconds']:.3f} | | "
                 f"{2 * matmul['n'] ** 3 / 1e9:.2f} | {matmul['gflop_per_s']:.1f} |")
    return "\n".join(lines)


def define_flags() -> None:
    flags.DEFINE_integer("batch", 8, "Images per batch.", lower_bound=1)
    flags.DEFINE_list("sizes", ["224", "64"], "Square image sizes (multiples of 16).")
    flags.DEFINE_integer("repeats", 5, "Timed repetitions per measurement.", lower_bound=1)
    flags.DEFINE_string("output_json", os.path.join(os.path.dirname(__file__),
                                                    "results_model.json"),
                        "Write the results here as JSON.")


def main(argv):
    del argv
    f = flags.FLAGS
    model = EfficientLab(rsd=(2, 4))
    rows = [row for size in f.sizes for row in bench_size(model, int(size), f.batch, f.repeats)]
    matmul = bench_matmul(repeats=f.repeats)
    results = {"model": "EfficientLab B0 rsd 2 4 (published)", "dtype": "float32",
               "device": "CPU", "cpu_count": os.cpu_count(),
               "tensorflow": tf.__version__, "runs": rows, "matmul": matmul}
    print(markdown(rows, matmul))
    with open(f.output_json, "w", encoding="utf-8") as out:
        json.dump(results, out, indent=2)
    logging.info("Wrote %s", f.output_json)


if __name__ == "__main__":
    define_flags()
    app.run(main)
