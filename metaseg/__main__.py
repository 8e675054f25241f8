"""The ``metaseg`` command (also ``python -m metaseg``): segment your own images.

    metaseg adapt   --init CHECKPOINT --support DIR --query DIR --output DIR
    metaseg predict --model DIR --input DIR --output DIR
    metaseg export  --model DIR --format keras|saved_model --output PATH
    metaseg info    CHECKPOINT

A user mistake (bad flag, folder, image, mask or checkpoint) ends in one ``error: ...`` line
on stderr and exit code 2; exit code 1 means the run finished but some images could not be
decoded (they are named). Each subcommand lives in ``metaseg/cli/<name>.py``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from absl import logging

from metaseg.errors import EXIT_USER_ERROR, exit_on_error
from metaseg.quiet import import_tensorflow


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error every metaseg entry point promises."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr,
              flush=True)
        sys.exit(EXIT_USER_ERROR)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="debug logging, and TensorFlow's own log lines")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (imports TensorFlow, through the subcommand modules)."""
    from metaseg.cli import adapt, export, info, predict  # pylint: disable=import-outside-toplevel
    common = _common_options()
    parser = _Parser(prog="metaseg",
                     description="Segment your own images with a meta-learned initialisation.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=_Parser)
    for module in (adapt, predict, export, info):
        module.add_parser(subparsers, [common])
    return parser


@exit_on_error
def _run(argv: List[str]) -> int:
    verbose = "-v" in argv or "--verbose" in argv
    import_tensorflow(verbose=verbose)
    args = build_parser().parse_args(argv)
    logging.set_verbosity(logging.DEBUG if args.verbose else
                          logging.WARNING if args.quiet else logging.INFO)
    return args.run(args)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``metaseg ARGV`` (default ``sys.argv[1:]``); returns the exit code."""
    return _run(sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
