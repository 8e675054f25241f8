"""The ``metaseg`` command (also ``python -m metaseg``): segment your own images.

    metaseg adapt   --init CHECKPOINT --support DIR --query DIR --output DIR
    metaseg predict --model DIR --input DIR --output DIR
    metaseg export  --model DIR --format keras|saved_model|litert|onnx --output PATH
    metaseg info    CHECKPOINT
    metaseg preset  save SRC DIR | list
    metaseg app     [--init CHECKPOINT] [--images DIR] [--workdir DIR] [--port 8765]

A user mistake (bad flag, folder, image, mask or checkpoint) ends in one ``error: ...`` line
on stderr and exit code 2; exit code 1 means the run finished but some images could not be
decoded (they are named). Each subcommand lives in ``metaseg/cli/<name>.py``, whose module
imports no TensorFlow (its ``run`` does): the arguments are parsed before TensorFlow loads.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import List, Optional

from absl import logging

from metaseg.errors import EXIT_USER_ERROR, exit_on_error, named_as
from metaseg.quiet import import_tensorflow


def _suggestion(word: str, candidates) -> str:
    """`` (did you mean X?)`` for the closest of ``candidates`` to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error every metaseg entry point promises: no prefix
    matching (``--step`` is not ``--steps``), unknown flags reported before anything else
    with the closest known flag, and exit code 2."""

    subcommands: dict = {}  # name -> parser, on the top-level parser

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self._seen: List[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._seen = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # a subcommand's leftovers reach the top parser: report them from there
            parser = self.subcommands.get(getattr(parsed, "command", None), self)
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _unknown_flags(self) -> List[str]:
        if self.subcommands:  # the top parser sees every subcommand's flags
            return []
        words = self._seen[:self._seen.index("--")] if "--" in self._seen else self._seen
        return [w for w in words if w.startswith("-") and w != "-"
                and not self._negative_number_matcher.match(w)
                and w.split("=", 1)[0] not in self._option_string_actions]

    def error(self, message):
        unknown = self._unknown_flags()
        if unknown:  # whatever else failed, a mistyped flag is the cause to name
            message = "unrecognized arguments: " + ", ".join(
                w + _suggestion(w.split("=", 1)[0], self._option_string_actions)
                for w in unknown)
        else:
            choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
            if choice:
                message += _suggestion(choice.group(1), re.findall(r"'([^']*)'",
                                                                   choice.group(2)))
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr,
              flush=True)
        sys.exit(EXIT_USER_ERROR)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="debug logging, and TensorFlow's own log lines")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand. Imports no TensorFlow: the subcommand modules import
    it in their ``run``, so ``--help`` and a mistyped flag answer at once."""
    # pylint: disable-next=import-outside-toplevel
    from metaseg.cli import adapt, export, info, predict, preset
    from metaseg.app import command as app  # pylint: disable=import-outside-toplevel
    common = _common_options()
    parser = _Parser(prog="metaseg",
                     description="Segment your own images with a meta-learned initialisation.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                       parser_class=_Parser)
    for module in (adapt, predict, export, info, app, preset):
        module.add_parser(subparsers, [common])
    parser.subcommands = dict(subparsers.choices)
    return parser


@exit_on_error
def _run(argv: List[str]) -> int:
    args = build_parser().parse_args(argv)
    import_tensorflow(verbose=args.verbose)
    logging.set_verbosity(logging.DEBUG if args.verbose else
                          logging.WARNING if args.quiet else logging.INFO)
    with named_as(_flag_for_field(getattr(args, "field_flags", {}))):
        return args.run(args)


def _flag_for_field(field_flags: dict):
    """How a config field is named in this subcommand's errors: its flag (the subcommand's
    ``field_flags``), else as the checkpoint's config.json names it."""
    return lambda path: field_flags.get(path) or f"config.json's {path}"


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``metaseg ARGV`` (default ``sys.argv[1:]``); returns the exit code."""
    return _run(sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
