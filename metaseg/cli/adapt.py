"""``metaseg adapt``: fine-tune an initialisation on your support images, segment your queries.

Steps and learning rate, unless given: the values UHO stored with the checkpoint
(``uho_steps`` / ``uho_learning_rate`` in its config.json, at the top level or in the ``uho``
section), else the checkpoint's own evaluation setting (``eval.eval_iters`` and
``inner.learning_rate``). The rest of the inner loop (optimiser, schedule, loss, batch size
``eval.eval_batch``, augmentation) is the checkpoint's, run by the same compiled adaptation
as evaluation (``metaseg.meta.adapt``) on mini-batches drawn as in REFERENCE.md section 3.

The support set is a folder of image/mask pairs or an annotation export (COCO, LabelMe,
CVAT; ``--category``), read alike by ``metaseg.cli.folders``. It is held as uint8 at the
model's size, and the mini-batches are built a chunk of steps at a time (``BATCH_BYTES``),
so hundreds of support images fit in memory; the weights are those of one compiled call.
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
from metaseg.specs import BatchSpec, EpisodeSpec

if TYPE_CHECKING:  # TensorFlow is imported by the functions, after the flags are parsed
    from metaseg import checkpoints

HELP = "fine-tune an initialisation on image/mask pairs, then segment a folder of images"
CHUNK_SECONDS = 0.5  # with a progress callback: steps per compiled call, in seconds
BATCH_BYTES = 64 * 2 ** 20  # float32 mini-batches built at once (a chunk of the K steps)
# The config fields this command's flags set: an error about one names the flag.
FIELD_FLAGS = {"eval.eval_iters": "--steps", "inner.learning_rate": "--learning_rate",
               "data.image_size": "--image_size"}


def add_parser(subparsers, parents) -> None:
    from metaseg.cli import auto  # pylint: disable=import-outside-toplevel
    p = subparsers.add_parser("adapt", parents=parents, help=HELP, description=HELP)
    p.add_argument("--init", required=True, metavar="CHECKPOINT",
                   help="metaseg checkpoint folder, metaseg adapt output, or TF1 checkpoint")
    p.add_argument("--support", required=True, metavar="DIR|FILE",
                   help="labelled images: a folder of x.jpg + x.png mask pairs (or images/ "
                        "and masks/ subfolders; masks 0 = background, 255 = foreground), a "
                        "COCO instances .json (polygons or RLE), a folder of LabelMe .json "
                        "files, or a CVAT 'Segmentation mask 1.1' export folder (labelmap.txt, "
                        "SegmentationClass/, JPEGImages/); any number of images: the "
                        "mini-batches are built as the steps run, not all at once")
    p.add_argument("--category", metavar="NAME",
                   help="with an annotation export: the category (label) to segment; needed "
                        "when the export has more than one. Its images without that "
                        "category are skipped, each named in a warning")
    p.add_argument("--support_images", metavar="DIR",
                   help="with an annotation export: the folder its image names are relative "
                        "to (default: COCO: beside the .json, its images/ folder, or "
                        "../images[/NAME] for annotations/instances_NAME.json; LabelMe: "
                        "imagePath from each .json; CVAT: JPEGImages/)")
    p.add_argument("--query", required=True, metavar="DIR", help="images to segment (any size)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="writes masks/, overlays/, scores.csv (estimated IoU per mask) and the "
                        "adapted model in model/")
    p.add_argument("--steps", type=auto.steps_value, metavar="N|auto",
                   help="inner steps (default: UHO's, else eval_iters), or 'auto': choose "
                        "them by k-fold adaptation on the support set (leave-one-out for <= 5 "
                        "pairs, else 5 folds; needs >= 2 pairs), scoring the held-out pairs "
                        "after every step, then adapt on all pairs; the choice and held-out "
                        "curves go to model/adaptation.json")
    auto.add_arguments(p)
    p.add_argument("--suggest", type=int, metavar="N",
                   help="write the N query images most useful to label next (lowest "
                        "estimated IoU in scores.csv, then lowest flip agreement) to "
                        "suggested.txt in --output, most useful first, and print them")
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
    p.set_defaults(run=run, field_flags=FIELD_FLAGS)


def hyperparameters(source: checkpoints.Source, steps, learning_rate):
    """(steps, learning rate, where they came from) for this adaptation."""
    # pylint: disable=import-outside-toplevel,redefined-outer-name
    from metaseg import checkpoints
    uho_lr, uho_steps = checkpoints.uho_values(source.raw)
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
    EpisodeSpec.evaluation(config.eval, steps=steps)  # steps >= 0: FieldError eval.eval_iters
    if not learning_rate > 0:
        raise ConfigError(f"--learning_rate must be positive, got {learning_rate}")
    origin = f"steps from {steps_from}, learning rate from {lr_from}"
    return int(steps), float(learning_rate), origin


def check_image_size(size: int) -> int:
    if size <= 0 or size % 16:
        raise ConfigError(f"--image_size must be a positive multiple of 16 (the encoder's "
                          f"stride), got {size}")
    return size


def adapted_config(source: checkpoints.Source, size: int, directory: str) -> dict:
    """config.json of the adapted model: the initialisation's, at the image size used. Values
    stored beside the settings (e.g. UHO's) are kept; the steps and learning rate used go
    to adaptation.json."""
    config = dataclasses.replace(source.config, checkpoint=directory,
                                 data=dataclasses.replace(source.config.data, image_size=size))
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    extras = {k: v for k, v in source.raw.items() if k not in fields}
    return {**extras, **dataclasses.asdict(config)}


def step_bytes(batch_size: int, size: int) -> int:
    """Bytes of one inner step's mini-batch: float32 images [B,S,S,3] and masks [B,S,S,2]."""
    return batch_size * size * size * (3 + 2) * 4


def adapt(source, images, masks, *, steps: int, learning_rate: float, seed: int,
          support_statistics: bool = True, on_steps=None, batch_bytes: int = BATCH_BYTES,
          model=None, adapter=None):
    """Run the compiled inner loop on the support set; returns (model, end state, losses [K]).

    images uint8 or float32 [n, S, S, 3] in [0, 255]; masks uint8 [n, S, S] in {0, 255} or
    float32 [n, S, S, 2] one-hot. The K mini-batches are drawn up front as indices
    (``episodes.inner_batch_plan``, the draws ``make_inner_batches`` makes) and built, in
    float32, only for the steps about to run: at most ``batch_bytes`` of them at once
    (``step_bytes`` each), so memory does not grow with K, and the support set is held at
    the model's size only. Under the budget (a few-shot adaptation) all K steps are one
    compiled call; over it, consecutive calls continue the state with their step offset,
    which gives bit for bit the same weights.
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
    from metaseg import checkpoints
    from metaseg.data.episodes import gather_inner_batches, inner_batch_plan
    from metaseg.meta.adapt import Adapter
    config = source.config
    wanted = BatchSpec.evaluation(config.eval, config.inner)
    batches = wanted.fitted(len(images))  # with --replacement: at most the support pairs
    if batches != wanted:
        logging.warning("The checkpoint draws inner batches with --replacement: batches of %d "
                        "(the support pairs) instead of %d", batches.size, wanted.size)
    batch_size = batches.size
    if adapter is not None:  # an Adapter of the initialisation, reused across adaptations
        model = adapter.model
    if model is None:  # ``model``: the initialisation built at this size, if built already
        model = checkpoints.build_and_restore(source, image_size=int(images.shape[1]))
    adapter = Adapter(model, config.inner) if adapter is None else adapter
    images, masks = tf.constant(images), tf.constant(masks)  # once: the batches gather from them
    plan = inner_batch_plan(len(images), batches, num_batches=steps, seed=seed)
    most = max(1, int(batch_bytes) // step_bytes(batch_size, int(images.shape[1])))
    state, losses, done = adapter.initial_state(), [], 0
    chunk = min(max(steps, 1), most) if on_steps is None else 1
    rate, total = tf.constant(learning_rate, tf.float32), tf.constant(max(steps, 1))
    while True:
        stop, started = min(steps, done + chunk), time.perf_counter()
        x, y = gather_inner_batches(images, masks, plan, done, stop)
        state, part = adapter.adapt(state, x, y, rate, tf.constant(done), total)
        del x, y  # before the next chunk's batches are built
        losses.extend(part.numpy().tolist())
        if on_steps is not None:
            on_steps(stop, losses)
            seconds = max(time.perf_counter() - started, 1e-6)
            chunk = min(most, max(1, int(CHUNK_SECONDS * (stop - done) / seconds)))
        done = stop
        if done >= steps:
            break
    losses = np.asarray(losses, np.float32)
    if support_statistics:
        state = adapter.support_statistics(state, images, batch_size)
    adapter.assign(state)
    return model, state, losses


def adaptation_record(source, pairs, *, steps: int, learning_rate: float, size: int, seed: int,
                      origin: str, losses, support_statistics: bool = True) -> dict:
    """adaptation.json: how an adapted model was made (``pairs``: [(image, mask) paths], or
    the support images' names)."""
    return {"initialisation": os.path.abspath(source.directory), "kind": source.kind.family,
            "steps": steps, "learning_rate": learning_rate, "image_size": size,
            "seed": seed, "hyperparameters_from": origin,
            "support": [p if isinstance(p, str) else os.path.basename(p[0]) for p in pairs],
            "support_losses": [float(v) for v in losses],
            "batch_norm_statistics": ("re-estimated on the support images" if support_statistics
                                      else "carried over from the initialisation")}


def support_record(support) -> dict:
    """adaptation.json's account of an annotation export (nothing for a folder of pairs)."""
    source = support.source
    if source.kind == "folder":
        return {}
    return {"support_format": source.kind, "support_path": os.path.abspath(source.path),
            "category": source.category, "support_skipped": list(support.skipped)}


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel,redefined-outer-name
    from metaseg import checkpoints
    from metaseg.cli import auto, folders, output, scores, segment
    from metaseg.evaluation import quality
    source = checkpoints.open_checkpoint(args.init, "--init")
    size = check_image_size(args.image_size or source.config.data.image_size)
    steps_auto = args.steps == auto.AUTO
    steps, learning_rate, origin = hyperparameters(source, None if steps_auto else args.steps,
                                                   args.learning_rate)
    most = auto.max_steps(steps, args.auto_max_steps) if steps_auto else None
    scores.check_suggest(args.suggest)
    if args.batch_size <= 0:
        raise ConfigError(f"--batch_size must be positive, got {args.batch_size}")
    support_source = folders.support_examples(args.support, args.category,
                                              args.support_images)
    queries = folders.query_images(args.query)
    support = folders.read_support_set(support_source, size)
    fallback = auto.single_support(len(support.names), args.auto_fallback, args.support) \
        if steps_auto else None
    output.prepare_folder(args.output, args.overwrite)
    adapter, found = None, None
    if fallback is not None:
        steps, origin = fallback, "steps from --auto_fallback, " + origin.split(", ", 1)[1]
    elif steps_auto:
        from metaseg.meta.adapt import Adapter
        adapter = Adapter(checkpoints.build_and_restore(source, image_size=size),
                          source.config.inner)
        found = auto.choose(source, adapter, support, fixed=steps, most=most,
                            learning_rate=learning_rate, seed=args.seed)
        steps = found.steps
        origin = f"steps from --steps auto (k-fold, 1 to {most}), " + origin.split(", ", 1)[1]
    logging.info("Adapting %s (%s) on %d support pairs at %d px: %d steps at learning rate "
                 "%g (%s)", source.directory, source.kind.value, len(support.names), size, steps,
                 learning_rate, origin)
    model, state, losses = adapt(source, support.images, support.masks, steps=steps,
                                 learning_rate=learning_rate, seed=args.seed,
                                 support_statistics=not args.keep_moving_statistics,
                                 adapter=adapter)
    if len(losses):
        logging.info("Support loss: %.4f at the first step, %.4f at the last", losses[0],
                     losses[-1])
    model_dir = os.path.join(args.output, checkpoints.ADAPTED_SUBDIR)
    record = adaptation_record(source, support.names, steps=steps, learning_rate=learning_rate,
                               size=size, seed=args.seed, origin=origin, losses=losses,
                               support_statistics=not args.keep_moving_statistics)
    record.update(support_record(support))
    if found is not None:
        record["auto_steps"] = found.record(support.names)
    calibration = scores.find_calibration(source.directory)
    checkpoints.save_adapted(model, state.opt, model_dir,
                            adapted_config(source, size, os.path.abspath(model_dir)), record)
    if calibration is not None:  # metaseg predict with this model estimates as adapt did
        quality.write(model_dir, calibration.value)
    logging.info("Adapted model written to %s", model_dir)
    mask_scores = scores.MaskScores(calibration, found.score if found is not None else None)
    failed = segment.segment_files(segment.Segmenter(model, size), queries, args.output,
                                   args.batch_size, scores=mask_scores)
    scores_path = mask_scores.write(args.output)
    mask_scores.log_summary(scores_path)
    record["query_quality"] = mask_scores.summary()
    checkpoints.write_json(os.path.join(model_dir, checkpoints.ADAPTATION_FILE), record)
    if args.suggest:
        mask_scores.suggest(args.suggest, args.output)
    logging.info("Masks in %s, overlays in %s", os.path.join(args.output, segment.MASKS_SUBDIR),
                 os.path.join(args.output, segment.OVERLAYS_SUBDIR))
    return segment.report_failures(failed, len(queries), "query")
