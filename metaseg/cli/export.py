"""``metaseg export``: a ``.keras`` file, a SavedModel, a LiteRT or an ONNX file of an
adapted model.

``--format keras``: the model itself (float32 images [N, S, S, 3] in [0, 255], S a
multiple of 16 -> probabilities [N, S, S, 2]). ``keras.models.load_model`` opens it in any
process that has imported ``metaseg.models`` (which registers the custom layers).

``--format saved_model``: a ``tf.Module`` whose ``serving_default`` signature takes uint8
images ``[N, H, W, 3]`` of any size and returns ``masks`` uint8 [N, H, W] (0/255) and
``probabilities`` float32 [N, H, W] (foreground), resized as ``metaseg predict`` does; it
needs TensorFlow only.

``--format litert`` (``.tflite``) and ``--format onnx`` (``.onnx``): uint8 images
``[N, S, S, 3]`` at the model's own size -> ``masks`` uint8 [N, S, S] (0/255) and
``probabilities`` float32 [N, S, S] (see ``metaseg.cli.deploy``); they need the ``export``
extra. ``--quantize int8|float16`` stores a LiteRT file's weights in 8 or 16 bits.
"""

from __future__ import annotations

import argparse
import os

from absl import logging

from metaseg.errors import ConfigError, DataError

HELP = "export an adapted model as a .keras file, a SavedModel, a LiteRT or an ONNX file"
FORMATS = ("keras", "saved_model", "litert", "onnx")
SUFFIXES = {"keras": ".keras", "litert": ".tflite", "onnx": ".onnx"}  # single-file formats
QUANTIZE = ("int8", "float16")  # metaseg.cli.deploy.QUANTIZE (kept TensorFlow-free here)


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("export", parents=parents, help=HELP, description=HELP)
    p.add_argument("--model", required=True, metavar="DIR",
                   help="metaseg adapt --output folder (or its model/), or any checkpoint")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, metavar="PATH",
                   help="a file name ending in .keras, .tflite (litert) or .onnx, or a "
                        "SavedModel folder")
    p.add_argument("--quantize", choices=QUANTIZE,
                   help="litert only: int8 (dynamic-range: int8 weights) or float16 weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.set_defaults(run=run)


def check_output(path: str, fmt: str, overwrite: bool) -> None:
    suffix = SUFFIXES.get(fmt)
    if suffix and not path.endswith(suffix):
        raise ConfigError(f"--output {path}: a --format {fmt} export must be a file name "
                          f"ending in {suffix}")
    taken = os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path))
    if taken and not overwrite:
        raise DataError(f"--output {path} already exists; choose another path or pass "
                        "--overwrite")
    if suffix and os.path.isdir(path):
        raise DataError(f"--output {path} is a folder; give a file name ending in {suffix}")
    if fmt == "saved_model" and os.path.isfile(path):
        raise DataError(f"--output {path} is a file; a SavedModel is a folder")
    from metaseg.cli import output  # pylint: disable=import-outside-toplevel
    output.check_writable(os.path.dirname(os.path.abspath(path)), "--output", named=path)


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from metaseg import checkpoints
    from metaseg.cli import segment
    if args.quantize and args.format != "litert":
        raise ConfigError(f"--quantize {args.quantize} applies to --format litert only, not "
                          f"--format {args.format}")
    if args.format in ("litert", "onnx"):
        from metaseg.cli import deploy
        deploy.require(args.format)  # before the model is built: the missing extra first
    source = checkpoints.open_checkpoint(args.model, "--model")
    check_output(args.output, args.format, args.overwrite)
    model = checkpoints.build_and_restore(source)
    size = source.config.data.image_size
    from metaseg.cli import output
    output.prepare_folder(os.path.dirname(os.path.abspath(args.output)), overwrite=True)
    refused = (OSError, tf.errors.OpError)  # what a full or read-only disk raises
    if args.format == "keras":
        with output.replaced(args.output, suffix=".keras", errors=refused) as temporary:
            model.save(temporary)
        logging.info("Wrote %s: keras.models.load_model(path) after `import metaseg.models`; "
                     "feed float32 images [N, %d, %d, 3] in [0, 255]", args.output, size, size)
    elif args.format in ("litert", "onnx"):
        deploy.export(model, size, args.format, args.output, quantize=args.quantize)
        logging.info("Wrote %s (%s%s): images uint8 [N, %d, %d, 3] -> masks uint8 [N, %d, %d] "
                     "(0/255), probabilities float32 [N, %d, %d]", args.output, args.format,
                     f", {args.quantize} weights" if args.quantize else "", *[size] * 6)
    else:
        segmenter = segment.Segmenter(model, size)
        # Serving needs no gradients; tracing them for every op doubles the time to save.
        with output.replaced(args.output, errors=refused) as temporary:
            tf.saved_model.save(segmenter, temporary,
                                signatures={"serving_default": segmenter.serve},
                                options=tf.saved_model.SaveOptions(
                                    experimental_custom_gradients=False))
        logging.info("Wrote SavedModel %s: signature serving_default(images uint8 [N, H, W, 3])"
                     " -> masks uint8 [N, H, W], probabilities float32 [N, H, W]", args.output)
    return 0
