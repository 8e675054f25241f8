"""Generate the embedded few-shot segmentation benchmark as shards of the original format.

    python data_tools/make_synthetic_fss.py --output_dir /tmp/synthetic_fss \\
        [--num_classes 1000] [--examples_per_class 10] [--image_size 224] [--seed 0] \\
        [--num_workers N] [--overwrite]

Writes one ``<class>.tfrecord.gzip`` per class, ``train_classes.txt`` and
``test_classes.txt`` (the held-out combinations; pass the latter as the test split file)
and a completion marker. The same flags give byte-identical shards. The design of the
benchmark is described in ``metaseg/datasets/synthetic/__init__.py`` and the README.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging

from metaseg.flags.argv import parse_flags_or_exit
from metaseg.errors import ConfigError, DataError, exit_on_error

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Directory to write the shards and split files to.")
flags.DEFINE_integer("num_classes", 1000, "Number of classes (tasks).")
flags.DEFINE_integer("examples_per_class", 10, "Images per class.")
flags.DEFINE_integer("image_size", 224, "Side of the square images, in pixels.")
flags.DEFINE_integer("seed", 0, "Seed: the same seed gives byte-identical shards.")
flags.DEFINE_integer("num_workers", None, "Worker processes (default: one per CPU).")
flags.DEFINE_bool("overwrite", False, "Replace a benchmark already in --output_dir.")


class _LogProgress:
    """Progress as log lines with an ETA, about every 5 % (for log files, not terminals)."""

    def __init__(self, total: int):
        self.total, self.start, self.next_report = total, time.monotonic(), 1

    def update(self, done: int) -> None:
        if done < self.next_report and done < self.total:
            return
        self.next_report = done + max(1, self.total // 20)
        elapsed = time.monotonic() - self.start
        logging.info("%d/%d classes written, %.0f s elapsed, ETA %.0f s", done, self.total,
                     elapsed, elapsed / done * (self.total - done))


def _progress(total: int):
    """A keras Progbar (with ETA) on a terminal; periodic log lines otherwise."""
    if not sys.stdout.isatty():
        return _LogProgress(total)
    import keras  # imported here: only the terminal progress bar needs it

    return keras.utils.Progbar(total, unit_name="class")


@exit_on_error
def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    if not FLAGS.output_dir:
        raise ConfigError("--output_dir is required")
    if FLAGS.num_workers is not None and FLAGS.num_workers < 1:
        raise ConfigError(f"--num_workers must be at least 1, got {FLAGS.num_workers}")
    from metaseg.quiet import import_tensorflow

    import_tensorflow()  # after flag checks, without TensorFlow's start-up chatter
    from metaseg.datasets import synthetic  # pylint: disable=import-outside-toplevel

    start = time.monotonic()
    bar = _progress(FLAGS.num_classes)
    try:
        names = synthetic.write_benchmark(
            FLAGS.output_dir, num_classes=FLAGS.num_classes,
            examples_per_class=FLAGS.examples_per_class, image_size=FLAGS.image_size,
            seed=FLAGS.seed, num_workers=FLAGS.num_workers, overwrite=FLAGS.overwrite,
            progress=bar.update)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers are stopped by now
        raise DataError(f"interrupted: {FLAGS.output_dir} holds no complete benchmark (no "
                        f"{synthetic.MARKER_FILE}); rerun with --overwrite to generate it") \
            from None
    num_test = len(synthetic.test_class_names(FLAGS.num_classes, FLAGS.seed))
    print(f"wrote {len(names)} classes ({len(names) - num_test} train, {num_test} test) x "
          f"{FLAGS.examples_per_class} images at {FLAGS.image_size} px to {FLAGS.output_dir} "
          f"in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags_or_exit)  # flag errors: one line, exit 2
