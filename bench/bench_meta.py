"""Meta-learning engine benchmark (issue 4): compiled inner step vs the bare Keras step.

    python bench/bench_meta.py [--sizes 64,224] [--repeats 3] [--output bench/results_meta.json]

For EfficientLab-B0 (--rsd 2 4, bce_dice, SGD) and a batch of 8, it measures
- the bare Keras train step: ``model.train_on_batch``-style compiled step with a Keras SGD
  optimiser (``keras.Model.compile(optimizer=SGD, loss=...)`` + ``train_on_batch``);
- seconds per inner step inside the compiled adaptation (5 steps per call, divided by 5);
- seconds per meta-iteration of Reptile and FOMAML (meta-batch 2, 5 inner steps) through
  ``MetaTrainer._meta_step`` on a prefetched episode stream;
and prints a Markdown table (targets: inner step within 10 % of the bare step; meta-iteration
within 10 % of 2 x 5 inner steps).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from metaseg.config import InnerConfig, MetaConfig, ModelConfig  # noqa: E402
from metaseg.data.tasks import TaskStore  # noqa: E402
from metaseg.meta.adapt import Adapter  # noqa: E402
from metaseg.meta.trainer import MetaTrainer  # noqa: E402
from metaseg.models import build_model, losses  # noqa: E402
from metaseg.models.batch_norm import set_fused  # noqa: E402

FLAGS = flags.FLAGS

BATCH, STEPS, META_BATCH = 8, 5, 2
INNER = InnerConfig(sgd=True, learning_rate=0.0005, loss_name="bce_dice")
MODEL = ModelConfig(rsd=(2, 4))


def define_flags() -> None:
    flags.DEFINE_list("sizes", ["64", "224"], "image sizes to measure")
    flags.DEFINE_integer("repeats", 3, "timed repetitions (after one warm-up)")
    flags.DEFINE_string("output", "bench/results_meta.json", "JSON results file")


def _best(fn, repeats):
    fn()  # warm-up: tracing and compilation
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def _batch(size):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH, size, size, 3)).astype(np.float32)
    fg = (rng.uniform(size=(BATCH, size, size)) > 0.7).astype(np.float32)
    return x, np.stack([1 - fg, fg], -1)


def bare_keras_step(size, repeats, model_config=MODEL):
    model = build_model(model_config).logits_model
    model.compile(optimizer=keras.optimizers.SGD(0.0005),
                  loss=lambda y, logits: losses.segmentation_loss(logits, y, loss_name="bce_dice"))
    x, y = _batch(size)
    return _best(lambda: model.train_on_batch(x, y), repeats)


def compiled_inner_step(size, repeats, model_config=MODEL, inner=INNER, fused_bn=True):
    """Seconds per inner step of the compiled adaptation (STEPS steps per call)."""
    return inner_step_and_losses(size, repeats, model_config, inner, fused_bn)[0]


def inner_step_runner(size, model_config=MODEL, inner=INNER, fused_bn=True):
    """A no-argument function running STEPS compiled inner steps from seed-0 weights and
    returning their losses [STEPS] (numpy). ``fused_bn=False``: every batch norm computes
    as before the fused layer (``set_fused(model, False)``), for the A/B."""
    keras.utils.set_random_seed(0)
    model = build_model(model_config)
    if not fused_bn:
        set_fused(model, False)
    adapter = Adapter(model, inner)
    x, y = _batch(size)
    xs, ys = tf.constant(np.stack([x] * STEPS)), tf.constant(np.stack([y] * STEPS))
    state = adapter.initial_state()

    def run():
        _, losses_k = adapter.adapt(state, xs, ys, tf.constant(0.0005), tf.constant(0),
                                    tf.constant(STEPS))
        return losses_k.numpy()

    return run


def inner_step_and_losses(size, repeats, model_config=MODEL, inner=INNER, fused_bn=True):
    """(seconds per compiled inner step, the STEPS step losses) from seed-0 weights: the
    losses identify the function computed, to compare settings that should not change it."""
    run = inner_step_runner(size, model_config, inner, fused_bn)
    step_losses = []

    def timed():
        step_losses[:] = run().tolist()

    return _best(timed, repeats) / STEPS, step_losses


def meta_iteration(size, algorithm, repeats, model_config=MODEL):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (10, size, size, 3), dtype=np.uint8) for _ in range(4)]
    masks = [(rng.uniform(size=(10, size, size)) > 0.7).astype(np.uint8) * 255 for _ in range(4)]
    store = TaskStore.from_arrays([f"t{i}" for i in range(4)], images, masks)
    meta = MetaConfig(algorithm=algorithm, meta_iters=10**6, meta_batch=META_BATCH,
                      train_shots=10, inner_batch=BATCH, inner_iters=STEPS)
    with tempfile.TemporaryDirectory() as directory:
        trainer = MetaTrainer(build_model(model_config), store, meta=meta, inner=INNER,
                              checkpoint_dir=directory, total_inner_steps=STEPS)
        stream = iter(trainer._episodes(0))  # pylint: disable=protected-access
        return _best(lambda: trainer._meta_step(stream, 0, 0.1), repeats)  # pylint: disable=protected-access


def main(argv):
    del argv
    results = []
    for size in (int(s) for s in FLAGS.sizes):
        bare = bare_keras_step(size, FLAGS.repeats)
        inner = compiled_inner_step(size, FLAGS.repeats)
        row = {"image_size": size, "bare_keras_step_s": bare, "compiled_inner_step_s": inner,
               "inner_vs_bare": inner / bare}
        for algorithm in ("reptile", "fomaml"):
            seconds = meta_iteration(size, algorithm, FLAGS.repeats)
            row[f"{algorithm}_meta_iteration_s"] = seconds
            row[f"{algorithm}_vs_{META_BATCH * STEPS}_inner_steps"] = seconds / (
                META_BATCH * STEPS * inner)
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| px | bare Keras step (s) | compiled inner step (s) | ratio | Reptile iter (s) "
          "| ratio to 10 steps | FOMAML iter (s) | ratio to 10 steps |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['image_size']} | {r['bare_keras_step_s']:.3f} | "
              f"{r['compiled_inner_step_s']:.3f} | {r['inner_vs_bare']:.2f} | "
              f"{r['reptile_meta_iteration_s']:.2f} | {r['reptile_vs_10_inner_steps']:.2f} | "
              f"{r['fomaml_meta_iteration_s']:.2f} | {r['fomaml_vs_10_inner_steps']:.2f} |")
    with open(FLAGS.output, "w", encoding="utf-8") as f:
        json.dump({"batch": BATCH, "steps": STEPS, "meta_batch": META_BATCH,
                   "results": results}, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
