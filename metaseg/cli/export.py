"""``metaseg export``: a ``.keras`` file or a SavedModel of an adapted model.

``--format keras``: the EfficientLab itself (float32 images [N, S, S, 3] in [0, 255], S a
multiple of 16 -> probabilities [N, S, S, 2]). ``keras.models.load_model`` opens it in any
process that has imported ``metaseg.models`` (which registers the custom layers).

``--format saved_model``: a ``tf.Module`` whose ``serving_default`` signature takes uint8
images ``[N, H, W, 3]`` of any size and returns ``masks`` uint8 [N, H, W] (0/255) and
``probabilities`` float32 [N, H, W] (foreground), resized as ``metaseg predict`` does; it
needs TensorFlow only.
"""

from __future__ import annotations

import argparse
import os

from absl import logging

from metaseg.errors import ConfigError, DataError

HELP = "export an adapted model as a .keras file or a SavedModel"
FORMATS = ("keras", "saved_model")


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("export", parents=parents, help=HELP, description=HELP)
    p.add_argument("--model", required=True, metavar="DIR",
                   help="metaseg adapt --output folder (or its model/), or any checkpoint")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, metavar="PATH",
                   help="a file name ending in .keras, or a SavedModel folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(run=run)


def check_output(path: str, fmt: str, overwrite: bool) -> None:
    if fmt == "keras" and not path.endswith(".keras"):
        raise ConfigError(f"--output {path}: a Keras export must be a file name ending in .keras")
    taken = os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path))
    if taken and not overwrite:
        raise DataError(f"--output {path} already exists; choose another path or pass "
                        "--overwrite")
    if fmt == "keras" and os.path.isdir(path):
        raise DataError(f"--output {path} is a folder; give a file name ending in .keras")
    if fmt == "saved_model" and os.path.isfile(path):
        raise DataError(f"--output {path} is a file; a SavedModel is a folder")


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from metaseg.cli import checkpoint, segment
    source = checkpoint.open_checkpoint(args.model, "--model")
    check_output(args.output, args.format, args.overwrite)
    model = checkpoint.build_and_restore(source)
    size = source.config.data.image_size
    parent = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(parent, exist_ok=True)
    if args.format == "keras":
        model.save(args.output)
        logging.info("Wrote %s: keras.models.load_model(path) after `import metaseg.models`; "
                     "feed float32 images [N, %d, %d, 3] in [0, 255]", args.output, size, size)
    else:
        segmenter = segment.Segmenter(model, size)
        # Serving needs no gradients; tracing them for every op doubles the time to save.
        tf.saved_model.save(segmenter, args.output,
                            signatures={"serving_default": segmenter.serve},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        logging.info("Wrote SavedModel %s: signature serving_default(images uint8 [N, H, W, 3])"
                     " -> masks uint8 [N, H, W], probabilities float32 [N, H, W]", args.output)
    return 0
