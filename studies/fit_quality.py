"""Fit the per-mask quality calibration of an initialisation on the embedded benchmark's
TRAINING classes and write it as ``quality.json`` beside its ``config.json``.

    python studies/fit_quality.py --init quickstart_b0_64 [--tasks 16] [--no_auto]
        [--auto_max_steps N] [--output DIR] [--seed 0]

Each task is one training class of the benchmark the initialisation was trained on (its
config.json's ``synthetic`` section; classes in a seeded order): its first ``--shots`` images
are the support set, the rest the queries. ``metaseg adapt``'s own adaptation
(``metaseg.cli.adapt.adapt``, batch-norm statistics re-estimated on the support images)
runs at the fixed default step count and, unless ``--no_auto``, with ``--steps auto``
(``metaseg.evaluation.autosteps``); each query mask's signals (``quality.signals``, flip
agreement from ``metaseg adapt``'s own prediction) and true IoU are collected. The ``masks``
model is fitted on every mask, ``masks+support`` on the ``--steps auto`` masks with their
task's held-out support IoU (``quality.fit``). Cross-validated Spearman, error and interval
coverage are stored in the file and printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from metaseg.errors import ConfigError, exit_on_error  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", default="quickstart_b0_64",
                   help="initialisation (checkpoint folder or preset) trained on the "
                        "embedded benchmark")
    p.add_argument("--tasks", type=int, default=16, help="training classes to adapt to")
    p.add_argument("--shots", type=int, default=5, help="support images per task")
    p.add_argument("--no_auto", action="store_true",
                   help="fixed steps only: no masks+support model")
    p.add_argument("--auto_max_steps", type=int, default=None,
                   help="with --steps auto: the largest step count (default as metaseg adapt)")
    p.add_argument("--output", help="folder to write quality.json into (default: --init's)")
    p.add_argument("--seed", type=int, default=0, help="order of the classes, batch draws")
    args = p.parse_args(argv)
    if args.tasks < 2:
        raise ConfigError(f"--tasks must be >= 2, got {args.tasks}")
    if args.shots < 2:
        raise ConfigError(f"--shots must be >= 2 (k-fold needs two), got {args.shots}")
    return args


def task_masks(source, adapter, segmenter, initial, images, masks, shots, steps, learning_rate,
               seed):
    """(signals [Q, F], true IoU [Q]) of the query masks after one adaptation."""
    # pylint: disable=import-outside-toplevel
    import numpy as np
    import tensorflow as tf
    from metaseg.cli import adapt as adapt_command
    from metaseg.data.shards import mask_to_two_channel
    from metaseg.evaluation import metrics, quality
    adapter.assign(initial)
    adapt_command.adapt(source, images[:shots], masks[:shots], steps=steps,
                        learning_rate=learning_rate, seed=seed, adapter=adapter)
    batch = tf.constant(images[shots:], tf.float32)
    foreground = segmenter.foreground(batch)
    flipped = tf.reverse(segmenter.foreground(tf.reverse(batch, [2])), [2])
    features = quality.signals(foreground.numpy(), flipped.numpy())
    probs = tf.stack([1.0 - foreground, foreground], -1)
    iou = metrics.binary_iou(probs, mask_to_two_channel(tf.constant(masks[shots:]))).numpy()
    return features, np.asarray(iou, np.float64)


def fit(args) -> str:
    # pylint: disable=import-outside-toplevel
    import numpy as np
    from metaseg import checkpoints
    from metaseg.cli import adapt as adapt_command
    from metaseg.cli import auto
    from metaseg.cli.segment import Segmenter
    from metaseg.datasets.synthetic import render
    from metaseg.evaluation import autosteps, quality
    from metaseg.meta.adapt import Adapter
    from metaseg.quiet import import_tensorflow
    from metaseg.specs import BatchSpec
    import_tensorflow()
    source = checkpoints.open_checkpoint(args.init, "--init")
    config = source.config
    if config.data.dataset != "synthetic":
        raise ConfigError(f"--init {args.init} was trained on {config.data.dataset!r}, not the "
                          "embedded benchmark (dataset 'synthetic')")
    synthetic, size = config.synthetic, config.data.image_size
    if synthetic.examples_per_class <= args.shots:
        raise ConfigError(f"--shots {args.shots} leaves no query of the "
                          f"{synthetic.examples_per_class} images per class")
    steps, learning_rate, origin = adapt_command.hyperparameters(source, None, None)
    most = auto.max_steps(steps, args.auto_max_steps)
    names = render.class_names(synthetic.num_classes)
    train = render.train_class_names(synthetic.num_classes)
    order = np.random.default_rng(args.seed).permutation(len(train))[:args.tasks]
    adapter = Adapter(checkpoints.build_and_restore(source, image_size=size), config.inner)
    initial = adapter.initial_state()
    segmenter = Segmenter(adapter.model, size)
    fixed, auto_masks = ([], []), ([], [], [])
    started = time.time()
    for t, i in enumerate(order):
        images, masks = render.render_class(names.index(train[i]), synthetic.num_classes,
                                            synthetic.examples_per_class,
                                            synthetic.image_size, 0)
        if synthetic.image_size != size:
            raise ConfigError(f"the benchmark is stored at {synthetic.image_size} px, the "
                              f"initialisation adapts at {size} px")
        x, iou = task_masks(source, adapter, segmenter, initial, images, masks, args.shots, steps,
                            learning_rate, args.seed)
        fixed[0].append(x)
        fixed[1].append(iou)
        line = f"task {t + 1}/{len(order)} {train[i]}: {steps} steps, mean IoU {iou.mean():.3f}"
        if not args.no_auto:
            adapter.assign(initial)
            found = autosteps.held_out_curves(
                adapter, images[:args.shots], masks[:args.shots],
                BatchSpec.evaluation(config.eval, config.inner), max_steps=most,
                learning_rate=learning_rate, seed=args.seed,
                transductive=config.eval.transductive)
            x, iou = task_masks(source, adapter, segmenter, initial, images, masks, args.shots,
                                found.steps, learning_rate, args.seed)
            auto_masks[0].append(x)
            auto_masks[1].append(iou)
            auto_masks[2].append(np.full(len(iou), found.score))
            line += (f"; auto {found.steps} steps (held-out {found.score:.3f}), mean IoU "
                     f"{iou.mean():.3f}")
        print(f"{line} [{time.time() - started:.0f} s]", flush=True)
    features = np.concatenate(fixed[0] + auto_masks[0])
    iou = np.concatenate(fixed[1] + auto_masks[1])
    about = {"init": args.init, "tasks": [train[i] for i in order],
             "benchmark": {"num_classes": synthetic.num_classes,
                           "examples_per_class": synthetic.examples_per_class,
                           "image_size": synthetic.image_size, "seed": 0,
                           "split": "train classes"},
             "shots": args.shots, "steps": steps, "auto_max_steps": most,
             "learning_rate": learning_rate, "hyperparameters_from": origin,
             "seed": args.seed, "fitted_by": "studies/fit_quality.py"}
    value = quality.fit(features, iou, about=about)
    if not args.no_auto:
        with_support = quality.fit(np.concatenate(auto_masks[0]),
                                   np.concatenate(auto_masks[1]),
                                   np.concatenate(auto_masks[2]))
        value["models"][quality.WITH_SUPPORT] = with_support["models"][quality.WITH_SUPPORT]
    for name, model in value["models"].items():
        cv = model["cross_validated"]
        print(f"{name}: {model['n']} masks, cross-validated Spearman {cv['spearman']:.3f}, "
              f"mean absolute error {cv['mean_absolute_error']:.3f}, 90 % interval coverage "
              f"{cv['coverage']:.3f} (mean width {cv['mean_width']:.3f})", flush=True)
    path = quality.write(args.output or source.directory, value)
    print(f"wrote {path}", flush=True)
    return path


@exit_on_error
def main(argv=None) -> int:
    fit(parse(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
