"""What quantising a LiteRT export costs in IoU, on the embedded benchmark.

    python bench/bench_quantize.py [--init quickstart_b0_64] [--tasks 4] [--shots 5]
        [--output_json bench/results_quantize.json]

For each of the first ``--tasks`` test classes of the quickstart's embedded benchmark
(100 classes x 10 images at 64 px, generated once into the cache): ``metaseg adapt``'s
adaptation of ``--init`` on the first ``--shots`` images (its UHO steps and learning rate),
then ``metaseg export --format litert`` of the adapted model as float32, ``--quantize int8``
and ``--quantize float16``, each run in ai-edge-litert's interpreter on the class's other
images. Reports per variant the mean query IoU against the ground truth (``binary_iou``,
as evaluation scores it), the mean IoU of its masks with the float32 file's, and the file
size. Not part of the test suite.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile

import numpy as np
from absl import app, flags, logging

from metaseg.quiet import import_tensorflow

FLAGS = flags.FLAGS
flags.DEFINE_string("init", "quickstart_b0_64", "initialisation: a checkpoint, preset folder "
                    "or shipped preset name")
flags.DEFINE_integer("tasks", 4, "test classes of the embedded benchmark to adapt to")
flags.DEFINE_integer("shots", 5, "support images per class (the rest are queries)")
flags.DEFINE_string("cache_dir", None, "where the embedded benchmark is kept (default: "
                    "$METASEG_CACHE, else ~/.cache/metaseg)")
flags.DEFINE_string("output_json", None, "also write the results here")
VARIANTS = (("float32", None), ("int8", "int8"), ("float16", "float16"))


def one_hot(masks):
    """uint8 [N, S, S] 0/255 -> float32 [N, S, S, 2] (channel 1 foreground)."""
    foreground = (np.asarray(masks) > 127).astype(np.float32)
    return np.stack([1 - foreground, foreground], -1)


def benchmark_tasks(count: int, cache_dir):
    """[(name, images uint8 [n, 64, 64, 3], masks uint8 [n, 64, 64])] of the first test
    classes of the quickstart's embedded benchmark."""
    from metaseg.data import TaskStore, list_tasks, read_class_list  # pylint: disable=C0415
    from metaseg.datasets.synthetic import ensure_benchmark  # pylint: disable=C0415
    root = ensure_benchmark(cache_dir, num_classes=100, examples_per_class=10, image_size=64)
    test = read_class_list(os.path.join(root, "test_classes.txt"))[:count]
    tasks = [t for t in list_tasks(root) if t.name in test]
    store = TaskStore.load(tasks, 64)
    out = []
    for i, name in enumerate(store.names):
        start, n = int(store.offsets[i]), store.num_examples(i)
        out.append((name, store.images[start:start + n].numpy(),
                    store.masks[start:start + n].numpy()))
    return out


def main(argv):
    del argv
    tf = import_tensorflow()
    from metaseg import checkpoints  # pylint: disable=import-outside-toplevel
    from metaseg.cli import adapt, deploy  # pylint: disable=import-outside-toplevel
    from metaseg.evaluation.metrics import binary_iou  # pylint: disable=C0415
    source = checkpoints.open_checkpoint(FLAGS.init, "--init")
    size = source.config.data.image_size
    steps, rate, origin = adapt.hyperparameters(source, None, None)
    logging.info("Adapting %s: %d steps at %g (%s)", FLAGS.init, steps, rate, origin)
    rows = {name: {"iou": [], "agreement_iou": [], "bytes": []} for name, _ in VARIANTS}
    with tempfile.TemporaryDirectory() as scratch:
        for task, images, masks in benchmark_tasks(FLAGS.tasks, FLAGS.cache_dir):
            support, query = slice(0, FLAGS.shots), slice(FLAGS.shots, None)
            model, _, _ = adapt.adapt(source, images[support].astype(np.float32),
                                      one_hot(masks[support]), steps=steps,
                                      learning_rate=rate, seed=0)
            truth = one_hot(masks[query])
            float_masks = None
            for name, quantize in VARIANTS:
                path = os.path.join(scratch, f"{task}_{name}.tflite")
                deploy.export(model, size, "litert", path, quantize=quantize)
                got = deploy.run_litert(path, images[query])["masks"]
                float_masks = got if float_masks is None else float_masks
                rows[name]["iou"].append(float(np.mean(binary_iou(one_hot(got), truth))))
                rows[name]["agreement_iou"].append(float(np.mean(
                    binary_iou(one_hot(got), one_hot(float_masks)))))
                rows[name]["bytes"].append(os.path.getsize(path))
            logging.info("%s: %s", task, {n: round(r["iou"][-1], 4) for n, r in rows.items()})
    results = {"init": FLAGS.init, "tasks": FLAGS.tasks, "shots": FLAGS.shots,
               "queries_per_task": 10 - FLAGS.shots, "steps": steps, "learning_rate": rate,
               "tensorflow": tf.__version__, "machine": platform.machine(),
               "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
               "variants": {n: {"mean_iou": float(np.mean(r["iou"])),
                                "mean_iou_with_float32": float(np.mean(r["agreement_iou"])),
                                "bytes": int(np.mean(r["bytes"]))} for n, r in rows.items()}}
    base = results["variants"]["float32"]["mean_iou"]
    print(f"| LiteRT weights | mean IoU ({FLAGS.tasks} tasks x {10 - FLAGS.shots} queries) | "
          "vs float32 | IoU with float32's masks | size |")
    print("|---|---|---|---|---|")
    for name, v in results["variants"].items():
        print(f"| {name} | {v['mean_iou']:.4f} | {v['mean_iou'] - base:+.4f} | "
              f"{v['mean_iou_with_float32']:.4f} | {v['bytes'] / 1e6:.1f} MB |")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
