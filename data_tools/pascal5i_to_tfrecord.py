"""Convert PASCAL VOC 2012 + SegmentationClassAug into PASCAL-5i binary per-class shards.

    python data_tools/pascal5i_to_tfrecord.py --voc_dir VOCdevkit/VOC2012 --output_dir pascal5i \\
        [--image_size 224] [--val_list FILE] [--image_list FILE] [--min_foreground_pixels 1] \\
        [--num_workers N] [--overwrite]

Writes::

    pascal5i/train/<class>.tfrecord.gzip   training images (SegmentationClassAug minus val)
    pascal5i/val/<class>.tfrecord.gzip     validation images (--val_list, VOC's val.txt)
    pascal5i/fold<i>/                      links to train/ for the 15 training classes and to
                                           val/ for the fold's 5 test classes, plus
                                           test_classes.txt and train_classes.txt

so fold ``i`` of the benchmark is::

    python run_metasegnet.py --data-dir pascal5i/fold0 \\
        --test_tasks_file pascal5i/fold0/test_classes.txt ...

Masks are binary per class (foreground 255); VOC's ignore label 255 becomes background.
Whole images are resized to ``--image_size`` squares (bilinear image, nearest labels).
``--image_list`` restricts the *training* images (a labelled fraction, e.g. from
``make_fraction_list.py``); the validation images are always complete.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

from absl import app, flags

from metaseg.flags.argv import parse_flags_or_exit
from metaseg.errors import ConfigError, exit_on_error


def define_flags() -> None:
    from metaseg.datasets.folds import define_converter_flags

    flags.DEFINE_string("voc_dir", None, "VOCdevkit/VOC2012 with JPEGImages and "
                        "SegmentationClassAug.")
    flags.DEFINE_string("output_dir", None, "Output folder (train/, val/, fold0-3/).")
    flags.DEFINE_string("val_list", None, "Validation (test) image list; default "
                        "<voc_dir>/ImageSets/Segmentation/val.txt.")
    define_converter_flags(
        "Use only these training images (labelled fraction); validation images are not "
        "restricted.",
        "Least pixels (original resolution) a class must cover for an image to be its "
        "example (PFENet: 2048).")
    flags.mark_flags_as_required(["voc_dir", "output_dir"])


def convert(voc_dir: str, output_dir: str, *, image_size: int = 224, val_list=None,
            image_list=None, min_foreground_pixels: int = 1, overwrite: bool = False,
            num_workers=None) -> dict:
    """Write the splits and fold folders; returns {"train": {class: n}, "val": ..., "missing":
    [fold entries without a shard]} (n = -1 for an existing shard that was kept)."""
    from metaseg.datasets import folds, voc
    from metaseg.data.image_lists import ImageList

    if image_size < 1:
        raise ConfigError(f"--image_size must be positive, got {image_size}")
    val_path = voc.check_layout(voc_dir, val_list)
    ids = voc.split_ids(voc_dir, ImageList.read(val_path),
                        ImageList.read(image_list) if image_list else None)
    options = voc.VocOptions(image_size, min_foreground_pixels, overwrite)
    result = {}
    with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
        for split in ("train", "val"):
            result[split] = voc.convert_split(voc_dir, os.path.join(output_dir, split),
                                              ids[split], options, pool, split)
    result["missing"] = folds.write_fold_dirs(
        output_dir, folds.PASCAL_CLASSES,
        {f: folds.pascal5i_test_classes(f) for f in range(folds.NUM_FOLDS)})
    return result


@exit_on_error
def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    f = flags.FLAGS
    start = time.monotonic()
    result = convert(f.voc_dir, f.output_dir, image_size=f.image_size, val_list=f.val_list,
                     image_list=f.image_list, min_foreground_pixels=f.min_foreground_pixels,
                     overwrite=f.overwrite, num_workers=f.num_workers)
    for split in ("train", "val"):
        counts = result[split]
        kept = [c for c, n in counts.items() if n < 0]
        print(f"{split}: {len(counts)} class shards, {sum(n for n in counts.values() if n > 0)} "
              f"examples written" + (f", {len(kept)} existing shards kept" if kept else ""))
    if result["missing"]:
        print(f"no shard for {len(result['missing'])} fold entries (no image of the class in "
              "that split; listed in the warning above)")
    print(f"PASCAL-5i folds in {f.output_dir}/fold0-3 ({time.monotonic() - start:.1f} s)",
          flush=True)


if __name__ == "__main__":
    from metaseg.quiet import import_tensorflow

    # metaseg.data imports it: keep its start-up chatter off stderr (and a bad
    # TF_NUM_*_THREADS in one line)
    exit_on_error(import_tensorflow)()
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)  # flag errors: one line, exit 2
