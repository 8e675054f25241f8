"""``metaseg adapt``: fine-tune an initialisation on your support images, segment your queries.

Steps and learning rate, unless given: the values UHO stored with the checkpoint
(``uho_steps`` / ``uho_learning_rate`` in its config.json, at the top level or in the ``uho``
section), else the checkpoint's own evaluation setting (``eval.eval_iters`` and
``inner.learning_rate``). The rest of the inner loop (optimiser, schedule, loss, batch size
``eval.eval_batch``, augmentation) is the checkpoint's, run by the same compiled adaptation
as evaluation (``metaseg.meta.adapt``) on mini-batches drawn as in REFERENCE.md section 3.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from metaseg.config import RunConfig
from metaseg.errors import ConfigError

if TYPE_CHECKING:  # TensorFlow is imported by the functions, after the flags are parsed
    from metaseg.cli import checkpoint

HELP = "fine-tune an initialisation on image/mask pairs, then segment a folder of images"
CHUNK_SECONDS = 0.5  # with a progress callback: steps per compiled call, in seconds


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("adapt", parents=parents, help=HELP, description=HELP)
    p.add_argument("--init", required=True, metavar="CHECKPOINT",
                   help="metaseg checkpoint folder, metaseg adapt output, or TF1 checkpoint")
    p.add_argument("--support", required=True, metavar="DIR",
                   help="x.jpg + x.png mask pairs, or images/ and masks/ subfolders; masks "
                        "0 = background, 255 = foreground")
    p.add_argument("--query", required=True, metavar="DIR", help="images to segment (any size)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="writes masks/, overlays/ and the adapted model in model/")
    p.add_argument("--steps", type=int, help="inner steps (default: UHO's, else eval_iters)")
    p.add_argument("--learning_rate", type=float,
                   help="inner learning rate (default: UHO's, else the checkpoint's)")
    p.add_argument("--image_size", type=int,
                   help="side the model sees, a multiple of 16 (default: the checkpoint's)")
    p.add_argument("--batch_size", type=int, default=8, help="query images per prediction batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the mini-batch draws")
    p.add_argument("--keep_moving_statistics", action="store_true",
                   help="predict and save with the batch-norm moving statistics carried over "
                        "from the initialisation (as run_metasegnet.py's evaluation does) "
                        "instead of re-estimating them on the support images")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    p.set_defaults(run=run)


def hyperparameters(source: checkpoint.Source, steps, learning_rate):
    """(steps, learning rate, where they came from) for this adaptation."""
    # pylint: disable=import-outside-toplevel,redefined-outer-name
    from metaseg.cli import checkpoint
    uho_lr, uho_steps = checkpoint.uho_values(source.raw)
    config = source.config
    if steps is None:
        steps, steps_from = ((uho_steps, "UHO") if uho_steps is not None
                             else (config.eval.eval_iters, "eval_iters"))
    else:
        steps_from = "--steps"
    if learning_rate is None:
        learning_rate, lr_from = ((uho_lr, "UHO") if uho_lr is not None
                                  else (config.inner.learning_rate, "checkpoint"))
    else:
        lr_from = "--learning_rate"
    if steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    if not learning_rate > 0:
        raise ConfigError(f"--learning_rate must be positive, got {learning_rate}")
    origin = f"steps from {steps_from}, learning rate from {lr_from}"
    return int(steps), float(learning_rate), origin


def check_image_size(size: int) -> int:
    if size <= 0 or size % 16:
        raise ConfigError(f"--image_size must be a positive multiple of 16 (the encoder's "
                          f"stride), got {size}")
    return size


def adapted_config(source: checkpoint.Source, size: int, directory: str) -> dict:
    """config.json of the adapted model: the initialisation's, at the image size used. Values
    stored beside the settings (e.g. UHO's) are kept; the steps and learning rate used go
    to adaptation.json."""
    config = dataclasses.replace(source.config, checkpoint=directory,
                                 data=dataclasses.replace(source.config.data, image_size=size))
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    extras = {k: v for k, v in source.raw.items() if k not in fields}
    return {**extras, **dataclasses.asdict(config)}


def adapt(source, images, masks, *, steps: int, learning_rate: float, seed: int,
          support_statistics: bool = True, on_steps=None):
    """Run the compiled inner loop on the support set; returns (model, end state, losses [K]).

    images float32 [n, S, S, 3] in [0, 255], masks float32 [n, S, S, 2] one-hot.
    ``on_steps(steps done, losses so far)``: if given, the steps run in chunks of about
    ``CHUNK_SECONDS`` (the same compiled function, continued with its step offset, so the
    result is the same) and it is called after each; an exception it raises stops the run
    (``metaseg app`` shows progress and cancels this way).
    ``support_statistics``: then re-estimate the batch-norm moving statistics on the
    (unaugmented) support images, in mini-batches of the adaptation's batch size
    (``Adapter.support_statistics``); otherwise keep those the inner loop carried over.
    """
    # pylint: disable=import-outside-toplevel,redefined-outer-name
    import tensorflow as tf
    from metaseg.cli import checkpoint
    from metaseg.data import make_inner_batches
    from metaseg.meta.adapt import Adapter
    config = source.config
    batch_size = config.eval.eval_batch
    if config.inner.replacement and batch_size > len(images):
        # With --replacement a batch holds distinct examples: it cannot exceed the support set.
        logging.warning("The checkpoint draws inner batches with --replacement: batches of %d "
                        "(the support pairs) instead of %d", len(images), batch_size)
        batch_size = len(images)
    model = checkpoint.build_and_restore(source, image_size=int(images.shape[1]))
    adapter = Adapter(model, config.inner)
    x, y = make_inner_batches(
        tf.constant(images), tf.constant(masks), num_batches=steps, batch_size=batch_size,
        replacement=config.inner.replacement, seed=seed, augment=config.inner.augment,
        aug_rate=config.inner.aug_rate)
    state, losses, done, chunk = adapter.initial_state(), [], 0, steps if on_steps is None else 1
    rate, total = tf.constant(learning_rate, tf.float32), tf.constant(max(steps, 1))
    while True:
        stop, started = min(steps, done + chunk), time.perf_counter()
        state, part = adapter.adapt(state, x[done:stop], y[done:stop], rate, tf.constant(done),
                                    total)
        losses.extend(part.numpy().tolist())
        if on_steps is not None:
            on_steps(stop, losses)
            seconds = max(time.perf_counter() - started, 1e-6)
            chunk = max(1, int(CHUNK_SECONDS * (stop - done) / seconds))
        done = stop
        if done >= steps:
            break
    losses = np.asarray(losses, np.float32)
    if support_statistics:
        state = adapter.support_statistics(state, tf.constant(images), batch_size)
    adapter.assign(state)
    return model, state, losses


def adaptation_record(source, pairs, *, steps: int, learning_rate: float, size: int, seed: int,
                      origin: str, losses, support_statistics: bool = True) -> dict:
    """adaptation.json: how an adapted model was made (``pairs``: [(image, mask) paths])."""
    return {"initialisation": os.path.abspath(source.directory), "kind": source.kind,
            "steps": steps, "learning_rate": learning_rate, "image_size": size,
            "seed": seed, "hyperparameters_from": origin,
            "support": [os.path.basename(image) for image, _ in pairs],
            "support_losses": [float(v) for v in losses],
            "batch_norm_statistics": ("re-estimated on the support images" if support_statistics
                                      else "carried over from the initialisation")}


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel,redefined-outer-name
    from metaseg.cli import checkpoint, folders, output, segment
    source = checkpoint.open_checkpoint(args.init, "--init")
    size = check_image_size(args.image_size or source.config.data.image_size)
    steps, learning_rate, origin = hyperparameters(source, args.steps, args.learning_rate)
    if args.batch_size <= 0:
        raise ConfigError(f"--batch_size must be positive, got {args.batch_size}")
    pairs = folders.support_pairs(args.support)
    queries = folders.query_images(args.query)
    images, masks = folders.read_support(pairs, size)
    output.prepare_folder(args.output, args.overwrite)
    logging.info("Adapting %s (%s) on %d support pairs at %d px: %d steps at learning rate "
                 "%g (%s)", source.directory, source.kind, len(pairs), size, steps,
                 learning_rate, origin)
    model, state, losses = adapt(source, images, masks, steps=steps,
                                 learning_rate=learning_rate, seed=args.seed,
                                 support_statistics=not args.keep_moving_statistics)
    if len(losses):
        logging.info("Support loss: %.4f at the first step, %.4f at the last", losses[0],
                     losses[-1])
    model_dir = os.path.join(args.output, checkpoint.ADAPTED_SUBDIR)
    record = adaptation_record(source, pairs, steps=steps, learning_rate=learning_rate,
                               size=size, seed=args.seed, origin=origin, losses=losses,
                               support_statistics=not args.keep_moving_statistics)
    checkpoint.save_adapted(model, state.opt, model_dir,
                            adapted_config(source, size, os.path.abspath(model_dir)), record)
    logging.info("Adapted model written to %s", model_dir)
    failed = segment.segment_files(segment.Segmenter(model, size), queries, args.output,
                                   args.batch_size)
    logging.info("Masks in %s, overlays in %s", os.path.join(args.output, segment.MASKS_SUBDIR),
                 os.path.join(args.output, segment.OVERLAYS_SUBDIR))
    return segment.report_failures(failed, len(queries), "query")
