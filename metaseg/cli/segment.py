"""Images of any size -> foreground masks at that size, with one model.

The model sees every image resized to S x S (bilinear with antialiasing, rounded to whole
grey levels, exactly as shards are resized; the aspect ratio is not kept, as in training).
Its foreground probability is resized back to the image's own size (bilinear with
antialiasing) and thresholded at 0.5: masks are uint8 with 0 = background, 255 = foreground.
``metaseg predict`` and the exported SavedModel run these same ops, so they agree exactly.
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from metaseg.cli import output as output_files
from metaseg.cli.folders import decode_image
from metaseg.errors import DataError
from metaseg.evaluation.predictions import overlay

MASKS_SUBDIR, OVERLAYS_SUBDIR = "masks", "overlays"
THRESHOLD = 0.5


def to_model_size(images, size: int) -> tf.Tensor:
    """uint8 or float images [..., H, W, 3] -> float32 [..., S, S, 3], whole values in [0, 255]."""
    resized = tf.image.resize(tf.cast(images, tf.float32), [size, size], "bilinear",
                              antialias=True)
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def to_original_size(foreground, height_width) -> tf.Tensor:
    """Foreground probabilities [..., S, S] -> float32 [..., H, W] (``height_width`` = [H, W])."""
    return tf.image.resize(foreground[..., None], height_width, "bilinear", antialias=True)[..., 0]


def to_mask(probability) -> tf.Tensor:
    """Probabilities [...] -> uint8 [...] with 255 where above 0.5, else 0."""
    return tf.where(probability > THRESHOLD, tf.constant(255, tf.uint8), tf.constant(0, tf.uint8))


class Segmenter(tf.Module):
    """A segmentation model plus the resizing around it (what a SavedModel export serves).

    ``model`` maps float32 [N, S, S, 3] in [0, 255] to probabilities [N, S, S, 2]
    (channel 1 foreground), S = ``image_size``.
    """

    def __init__(self, model: keras.Model, image_size: int):
        super().__init__(name="metaseg_segmenter")
        # A SavedModel only needs the variables the functions capture. Tracking the Keras
        # model itself would make saving walk every layer (about 3x slower), so the model is
        # kept outside tf.Module's attribute tracking and its variables are tracked instead.
        self.__dict__["_model"] = model
        self.model_variables = list(model.variables)
        self.image_size = int(image_size)
        self.foreground = tf.function(self._foreground, input_signature=[
            tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)])
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])

    @property
    def model(self) -> keras.Model:
        return self.__dict__["_model"]

    def _foreground(self, images):
        """float32 [N, S, S, 3] -> foreground probabilities float32 [N, S, S]."""
        return self.model(images, training=False)[..., 1]

    def _serve(self, images):
        """uint8 [N, H, W, 3] -> {"masks": uint8 [N, H, W] 0/255, "probabilities": float32
        [N, H, W] foreground}."""
        height_width = tf.shape(images)[1:3]
        probability = to_original_size(
            self._foreground(to_model_size(images, self.image_size)), height_width)
        return {"masks": to_mask(probability), "probabilities": probability}


def save_png(array: np.ndarray, path: str) -> None:
    """Write ``array`` (uint8 [H, W] or [H, W, 3]) as a PNG that appears under ``path`` only
    when complete (``output.replaced``); DataError naming ``path`` if it cannot be written."""
    with output_files.replaced(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")


def _write(output: str, path: str, image: np.ndarray, mask: np.ndarray) -> None:
    stem = os.path.splitext(os.path.basename(path))[0] + ".png"
    save_png(mask, os.path.join(output, MASKS_SUBDIR, stem))
    save_png(overlay(image, mask > 0), os.path.join(output, OVERLAYS_SUBDIR, stem))


def segment_files(segmenter: Segmenter, paths: Sequence[str], output: str,
                  batch_size: int, scores=None) -> List[Tuple[str, str]]:
    """Write ``<output>/masks/<stem>.png`` and ``<output>/overlays/<stem>.png`` per image.

    Images are decoded and predicted ``batch_size`` at a time. An image that cannot be
    decoded is logged and skipped; returns [(path, reason)] of those. A file that cannot be
    written (a full disk) stops the run with a DataError; no partial file is left.
    ``scores`` (``metaseg.cli.scores.MaskScores``): if given, each batch is predicted
    flipped too and ``scores.add(paths, foreground [N,S,S], flipped-back foreground)``.
    """
    for sub in (MASKS_SUBDIR, OVERLAYS_SUBDIR):
        output_files.prepare_folder(os.path.join(output, sub), overwrite=True)
    failed, written = [], 0
    tty = sys.stdout.isatty()
    progress = keras.utils.Progbar(len(paths), unit_name="image") if tty else None
    for start in range(0, len(paths), batch_size):
        decoded = []
        for path in paths[start:start + batch_size]:
            try:
                decoded.append((path, decode_image(path)))
            except DataError as e:
                logging.error("%s (skipped)", e)
                failed.append((path, str(e)))
        if decoded:
            batch = tf.stack([to_model_size(image, segmenter.image_size) for _, image in decoded])
            foreground = segmenter.foreground(batch)
            if scores is not None:
                flipped = tf.reverse(segmenter.foreground(tf.reverse(batch, [2])), [2])
                scores.add([path for path, _ in decoded], foreground.numpy(), flipped.numpy())
            for (path, image), probs in zip(decoded, tf.unstack(foreground)):
                mask = to_mask(to_original_size(probs, image.shape[:2])).numpy()
                _write(output, path, image, mask)
                written += 1
        if progress is not None:
            progress.update(min(start + batch_size, len(paths)))
        else:
            logging.info("Segmented %d/%d images%s", written, len(paths),
                         f" ({len(failed)} could not be decoded)" if failed else "")
    return failed


def report_failures(failed, total: int, what: str) -> int:
    """Exit code: 0 if nothing failed, else 1 after one summary line on stderr."""
    if not failed:
        return 0
    names = ", ".join(os.path.basename(p) for p, _ in failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    print(f"error: {len(failed)} of {total} {what} images could not be decoded and have no "
          f"mask: {names}{more}", file=sys.stderr, flush=True)
    return 1
