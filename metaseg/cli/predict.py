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
    p.add_argument("--output", required=True, metavar="DIR",
                   help="writes masks/, overlays/ and scores.csv")
    p.add_argument("--batch_size", type=int, default=8, help="images per prediction batch")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    p.epilog = ("Also writes scores.csv (file,estimated_iou,low,high): each mask's estimated "
                "IoU and 90%% interval, calibrated by the model's quality.json")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # pylint: disable=import-outside-toplevel
    from metaseg import checkpoints
    from metaseg.cli import folders, output, scores, segment
    if args.batch_size <= 0:
        raise ConfigError(f"--batch_size must be positive, got {args.batch_size}")
    source = checkpoints.open_checkpoint(args.model, "--model")
    paths = folders.query_images(args.input, "--input")
    output.prepare_folder(args.output, args.overwrite)
    size = source.config.data.image_size
    model = checkpoints.build_and_restore(source)
    logging.info("Segmenting %d images from %s at %d px", len(paths), args.input, size)
    held_out = ((source.adaptation or {}).get("auto_steps") or {}).get("held_out_iou")
    mask_scores = scores.MaskScores(scores.find_calibration(source.directory), held_out)
    failed = segment.segment_files(segment.Segmenter(model, size), paths, args.output,
                                   args.batch_size, scores=mask_scores)
    mask_scores.log_summary(mask_scores.write(args.output))
    return segment.report_failures(failed, len(paths), "input")
