"""``python -m metaseg.tfds NAME[/CONFIG] [--data_dir DIR] [--manual_dir DIR]``: build one of
metaseg's tfds datasets, as ``tfds build NAME --imports metaseg.tfds`` does, but ending a
user mistake (a dataset or config that does not exist, a missing or wrongly laid out
``--manual_dir``) in one ``error: ...`` line and exit code 2. tfds writes into a temporary
folder and renames it when complete, so a failed build leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import metaseg.tfds  # registers the builders (``python -m`` has imported it already)
from metaseg.data import tfds_source
from metaseg.errors import EXIT_USER_ERROR, ConfigError, DataError, exit_on_error
from metaseg.quiet import import_tensorflow


class _Parser(argparse.ArgumentParser):
    """argparse with one ``error:`` line and exit code 2 for a bad command line."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr,
              flush=True)
        sys.exit(EXIT_USER_ERROR)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m metaseg.tfds", allow_abbrev=False,
                     description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", metavar="NAME[/CONFIG]",
                        help="metaseg_synthetic/tiny, fss1000, pascal5i/fold0, ...")
    parser.add_argument("--data_dir", help="where to build (default: tfds's data directory)")
    parser.add_argument("--manual_dir", help="the manual download (fss1000, pascal5i)")
    return parser


def build(dataset: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None):
    """Prepare ``dataset`` (registered by ``metaseg.tfds``); returns its builder."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    name = dataset.split("/", 1)[0].split(":", 1)[0]
    if name not in metaseg.tfds.BUILDERS:
        raise ConfigError(f"{dataset} is not a metaseg tfds dataset; build one of "
                          f"{', '.join(sorted(metaseg.tfds.BUILDERS))}")
    try:
        builder, _ = tfds_source.make_builder(dataset, data_dir)
    except ValueError as e:
        raise ConfigError(f"{dataset}: {str(e).strip().splitlines()[0]}") from None
    config = None
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        first = builder.MANUAL_DOWNLOAD_INSTRUCTIONS.splitlines()[0]
        if not manual_dir:
            raise ConfigError(f"{dataset} needs --manual_dir: {first} (the docstring of "
                              f"metaseg/tfds/{name}.py says how)")
        if not os.path.isdir(manual_dir):
            raise DataError(f"--manual_dir {manual_dir} does not exist: {first}")
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config)
    return builder


@exit_on_error
def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    import_tensorflow()
    builder = build(args.dataset, args.data_dir, args.manual_dir)
    splits = ", ".join(f"{s} {info.num_examples}" for s, info in builder.info.splits.items())
    print(f"{args.dataset} prepared in {builder.data_dir} ({splits} examples)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
