"""Write a reproducible list of x % of the images of a folder (a labelled fraction).

    python data_tools/make_fraction_list.py --input_dir DIR --fraction 0.05 --seed 0 \\
        --output train_5.txt [--extensions jpg,jpeg,png] [--exclude_list val.txt]

One image key per line (its path under ``DIR`` without extension: ``2007_000032`` for a
flat folder, ``abacus/1`` for FSS-1000's ``<class>/<n>.jpg``), sorted. The choice depends
only on the set of images, the fraction and the seed, and a larger fraction with the same
seed is a superset of a smaller one. Pass the file as ``--image_list`` to
``make_pseudo_tasks.py``, ``fss_1000_image_to_tfrecord.py`` or ``pascal5i_to_tfrecord.py``.
``--exclude_list`` leaves out the images another list names first (e.g. VOC's ``val.txt``,
so the fraction is drawn from training images only).
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from metaseg.flags.argv import parse_flags_or_exit
from metaseg.errors import ConfigError, DataError, exit_on_error


def define_flags() -> None:
    flags.DEFINE_string("input_dir", None, "Folder of images (searched recursively).")
    flags.DEFINE_float("fraction", None, "Fraction of the images to list, in (0, 1].")
    flags.DEFINE_integer("seed", 0, "Seed of the choice.")
    flags.DEFINE_string("output", None, "List file to write.")
    flags.DEFINE_list("extensions", ["jpg", "jpeg", "png"], "Image file extensions.")
    flags.DEFINE_string("exclude_list", None, "Leave out the images this list file names.")
    flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
    flags.mark_flags_as_required(["input_dir", "fraction", "output"])


def write_fraction_list(input_dir: str, fraction: float, seed: int, output: str, *,
                        extensions=("jpg", "jpeg", "png"), exclude_list=None,
                        overwrite: bool = False) -> int:
    """Write the list; return how many images it names (of how many were found: logged)."""
    from metaseg.data.image_lists import ImageList, find_images, fraction_of, image_key
    from metaseg.data.shards import write_text_atomic

    if os.path.exists(output) and not overwrite:
        raise DataError(f"{output} already exists; pass --overwrite to replace it")
    keys = [image_key(p) for p in find_images(
        input_dir, tuple("." + e.lstrip(".").lower() for e in extensions))]
    if not keys:
        raise DataError(f"{input_dir} holds no files with extensions {', '.join(extensions)}")
    if exclude_list:
        excluded = ImageList.read(exclude_list)
        keys = [k for k in keys if k not in excluded]
        if not keys:
            raise DataError(f"every image of {input_dir} is in --exclude_list {exclude_list}")
    chosen = fraction_of(keys, fraction, seed)
    write_text_atomic(output, "".join(k + "\n" for k in chosen))
    logging.info("Listed %d of %d images (fraction %g, seed %d) in %s", len(chosen), len(keys),
                 fraction, seed, output)
    return len(chosen)


@exit_on_error
def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    f = flags.FLAGS
    count = write_fraction_list(f.input_dir, f.fraction, f.seed, f.output,
                                extensions=f.extensions, exclude_list=f.exclude_list,
                                overwrite=f.overwrite)
    print(f"wrote {count} image keys to {f.output}", flush=True)


if __name__ == "__main__":
    from metaseg.quiet import import_tensorflow

    # metaseg.data imports it: keep its start-up chatter off stderr (and a bad
    # TF_NUM_*_THREADS in one line)
    exit_on_error(import_tensorflow)()
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)  # flag errors: one line, exit 2
