"""The app's adaptation job: the work directory's labels -> adapted model -> predictions.

It is ``metaseg adapt`` with the labelled images as ``--support`` and the unlabelled ones as
``--query``: the same hyperparameter defaults, the same compiled adaptation
(``metaseg.cli.adapt.adapt``, run in chunks of steps so the page sees progress and a cancel
takes effect between chunks), the same saved model and ``adaptation.json``, the same masks
and overlays. Everything is written to a scratch folder first and moved into place only
when all of it succeeded, so a cancelled or failed job leaves the previous model and
predictions as they were.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Optional

from PIL import Image

from metaseg.app import review
from metaseg.app.jobs import Job
from metaseg.app.workdir import APP, CONFIDENCE_FILE, MASKS, OVERLAYS, WorkDir, stem, \
    write_json
from metaseg import checkpoints
from metaseg.checkpoints import ADAPTED_SUBDIR
from metaseg.cli import adapt as cli_adapt, folders, scores, segment
from metaseg.errors import ConfigError, DataError
from metaseg.evaluation.predictions import overlay

SCORES_FILE = scores.SCORES_FILE


@dataclasses.dataclass(frozen=True)
class AdaptRequest:
    """The body of ``POST /api/adapt``; None means the checkpoint's default (as the CLI)."""

    steps: Optional[int] = None
    learning_rate: Optional[float] = None
    seed: int = 0

    @classmethod
    def from_json(cls, body) -> "AdaptRequest":
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError("the body of POST /api/adapt must be a JSON object, e.g. "
                              '{"steps": 20, "learning_rate": 0.01}')
        unknown = sorted(set(body) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)} in POST /api/adapt; "
                              "known: steps, learning_rate, seed")
        steps, rate, seed = body.get("steps"), body.get("learning_rate"), body.get("seed", 0)
        for name, value, kinds in (("steps", steps, (int,)), ("seed", seed, (int,)),
                                   ("learning_rate", rate, (int, float))):
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise ConfigError(f"{name} must be a number{' (whole)' if kinds == (int,) else ''}"
                                  f", got {value!r}")
        if steps is not None and steps < 0:
            raise ConfigError(f"steps must be >= 0, got {steps}")
        if rate is not None and not rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {rate}")
        return cls(steps, None if rate is None else float(rate), int(seed or 0))


def open_initialisation(init: Optional[str]):
    """(checkpoint Source, defaults {steps, learning_rate, hyperparameters_from, image_size})."""
    if not init:
        raise ConfigError("no initialisation to adapt: restart the app with --init CHECKPOINT")
    source = checkpoints.open_checkpoint(init, "--init")
    size = cli_adapt.check_image_size(source.config.data.image_size)
    steps, rate, origin = cli_adapt.hyperparameters(source, None, None)
    return source, {"init": init, "steps": steps, "learning_rate": rate,
                    "hyperparameters_from": origin, "image_size": size}


def run(workdir: WorkDir, init: str, request: AdaptRequest, job: Job, model_lock) -> dict:
    """The job's work (see the module docstring); returns a summary for the job's JSON.
    ``model_lock`` is held while the results are moved into place."""
    source, defaults = open_initialisation(init)
    size = defaults["image_size"]
    steps, rate, origin = cli_adapt.hyperparameters(source, request.steps, request.learning_rate)
    with workdir.lock:
        if not workdir.labelled():
            raise DataError("no labelled images yet: paint or import a mask for at least one "
                            "image, then press Adapt")
        pairs = folders.support_pairs(workdir.support)
        images, masks = folders.read_support(pairs, size)
    job.check_cancelled()
    job.start_steps(steps)

    def on_steps(done, losses):
        job.progress(step=done, loss=losses[-1] if len(losses) else None)
        job.check_cancelled()

    model, state, losses = cli_adapt.adapt(source, images, masks, steps=steps,
                                           learning_rate=rate, seed=request.seed,
                                           on_steps=on_steps)
    job.check_cancelled()
    scratch = workdir.scratch()
    try:
        job.progress(phase="saving")
        record = cli_adapt.adaptation_record(source, pairs, steps=steps, learning_rate=rate,
                                             size=size, seed=request.seed, origin=origin,
                                             losses=losses)
        checkpoints.save_adapted(model, state.opt, os.path.join(scratch, ADAPTED_SUBDIR),
                                cli_adapt.adapted_config(source, size, workdir.model), record)
        skipped = _predict(workdir, model, size, scratch, job)
        job.check_cancelled()
        with model_lock:
            _commit(workdir, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"support": record["support"], "steps": steps, "learning_rate": rate,
            "hyperparameters_from": origin,
            "final_loss": float(losses[-1]) if len(losses) else None, "skipped": skipped}


def _predict(workdir: WorkDir, model, size: int, scratch: str, job: Job) -> list:
    """Masks, overlays and confidences of every unlabelled image into ``scratch``, with the
    ops of ``metaseg predict``; returns [{name, reason}] of images that could not be read."""
    names, _ = workdir.listing()
    labelled = workdir.labelled()
    queries = [n for n in names if n not in labelled]
    for sub in (MASKS, OVERLAYS):
        os.makedirs(os.path.join(scratch, sub), exist_ok=True)
    segmenter = segment.Segmenter(model, size)
    confidence, skipped = {}, []
    job.progress(phase="predicting", items=len(queries), done_items=0)
    for i, name in enumerate(queries):
        job.check_cancelled()
        try:
            image = folders.decode_image(os.path.join(workdir.images, name))  # listed above
        except DataError as e:
            skipped.append({"name": name, "reason": str(e)})
            continue
        batch = segment.to_model_size(image, size)[None]
        probability = segment.to_original_size(segmenter.foreground(batch)[0], image.shape[:2])
        mask = segment.to_mask(probability).numpy()
        out = stem(name) + ".png"
        Image.fromarray(mask).save(os.path.join(scratch, MASKS, out))
        Image.fromarray(overlay(image, mask > 0)).save(os.path.join(scratch, OVERLAYS, out))
        confidence[name] = review.mask_confidence(probability.numpy())
        job.progress(done_items=i + 1)
    write_json(os.path.join(scratch, CONFIDENCE_FILE), confidence)
    return skipped


def _commit(workdir: WorkDir, scratch: str) -> None:
    """Swap the scratch model, masks, overlays (and quality scores, if any) into place."""
    old = workdir.scratch()
    moves = [(ADAPTED_SUBDIR, workdir.model), (MASKS, workdir.path(MASKS)),
             (OVERLAYS, workdir.path(OVERLAYS)), (SCORES_FILE, workdir.path(SCORES_FILE)),
             (CONFIDENCE_FILE, workdir.path(APP, CONFIDENCE_FILE))]
    for name, target in moves:
        if os.path.exists(target):  # scores of older predictions must not outlive them
            os.replace(target, os.path.join(old, name))
        new = os.path.join(scratch, name)
        if os.path.exists(new):
            os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
