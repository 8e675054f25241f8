"""``metaseg predict``: apply an adapted model (or any checkpoint) to a folder of images.

Writes ``masks/<stem>.png`` (uint8, 0/255, at each image's own size) and
``overlays/<stem>.png``; the model sees images at the size stored in its config.json.
"""

from __future__ import annotations

import argparse

from absl import logging

from metaseg.errors import ConfigError

HELP = "segment a folder of images with an adapted model"


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("predict", parents=parents, help=HELP, description=HELP)
    p.add_argument("--model", required=True, metavar="DIR",
                   help="metaseg adapt --output folder (or its model/), or any checkpoint")
    p.add_argument("--input", required=True, metavar="DIR", help="images to segment (any size)")
    p.add_argument("--output", required=True, metavar="DIR", help="writes masks/ and overlays/")
    p.add_argument("--batch_size", type=int, default=8, help="images per prediction batch")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    from metaseg.cli import checkpoint, folders, output, segment
    if args.batch_size <= 0:
        raise ConfigError(f"--batch_size must be positive, got {args.batch_size}")
    source = checkpoint.open_checkpoint(args.model, "--model")
    paths = folders.query_images(args.input, "--input")
    output.prepare_folder(args.output, args.overwrite)
    size = source.config.data.image_size
    model = checkpoint.build_and_restore(source)
    logging.info("Segmenting %d images from %s at %d px", len(paths), args.input, size)
    failed = segment.segment_files(segment.Segmenter(model, size), paths, args.output,
                                   args.batch_size)
    return segment.report_failures(failed, len(paths), "input")
