"""Convert FSS-1000 image/mask pairs to one GZIP TFRecord shard per class.

    python data_tools/fss_1000_image_to_tfrecord.py --input_dir fewshot_data \
        --tfrecord_dir fewshot_shards [--overwrite] [--image_size 224] [--num_workers N] \
        [--image_list FILE]

What is read and how (mask rules, EXIF, resizing, skipped files, the deliberate departures
from the original converter): ``metaseg/datasets/fss1000.py``. Classes are converted in
parallel, each shard written to a temporary name and renamed when complete.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports below load TensorFlow: no start-up chatter
    from metaseg.quiet import import_tensorflow

    import_tensorflow()

import time  # pylint: disable=wrong-import-position

from absl import app, flags

from metaseg.data.image_lists import ImageList
from metaseg.datasets.fss1000 import ConvertOptions, check_skips, convert_dataset, summarize
from metaseg.errors import DataError, exit_on_error
from metaseg.flags.argv import parse_flags_or_exit


def define_flags() -> None:
    """Flags are defined only when run as a script, so importing this module is side-free."""
    flags.DEFINE_string("input_dir", None, "FSS-1000 folder: <class>/<n>.jpg + <n>.png.")
    flags.DEFINE_string("tfrecord_dir", None, "Output folder for <class>.tfrecord.gzip shards.")
    flags.DEFINE_bool("overwrite", False, "Replace existing shards (else they are kept).")
    flags.DEFINE_integer("image_size", 224, "Side of the stored square images.", lower_bound=1)
    flags.DEFINE_integer("num_workers", None, "Parallel worker threads (default: all CPUs).",
                         lower_bound=1)
    flags.DEFINE_bool("strict_size", False, "Skip images of another size instead of "
                      "resizing them (the original behaviour).")
    flags.DEFINE_bool("allow_skips", False, "Exit 0 even if some files were skipped.")
    flags.DEFINE_integer("seed", 0, "Seed of the per-class shuffle.")
    flags.DEFINE_string("image_list", None, "Convert only the images this list file names "
                        "(<class>/<n> per line, e.g. from make_fraction_list.py).")
    flags.mark_flags_as_required(["input_dir", "tfrecord_dir"])


@exit_on_error
def main(argv):
    del argv
    f = flags.FLAGS
    image_list = ImageList.read(f.image_list) if f.image_list else None
    options = ConvertOptions(image_size=f.image_size, strict_size=f.strict_size,
                             overwrite=f.overwrite, seed=f.seed, image_list=image_list)
    start = time.monotonic()
    reports = convert_dataset(f.input_dir, f.tfrecord_dir, options, f.num_workers)
    if image_list is not None:
        if all(r.status == "unlisted" for r in reports):
            raise DataError(f"--image_list {f.image_list} names no image of {f.input_dir} "
                            "(entries must be <class>/<n>)")
        image_list.warn_unused()
    print(summarize(reports, f.tfrecord_dir, time.monotonic() - start), flush=True)
    check_skips(reports, f.allow_skips)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)  # flag errors: one line, exit 2
