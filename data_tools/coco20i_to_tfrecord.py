"""Convert COCO 2014 instance annotations into COCO-20i binary per-class shards.

    pip install 'metaseg[coco]'    # pycocotools decodes the polygon/RLE masks
    python data_tools/coco20i_to_tfrecord.py --coco_dir coco --output_dir coco20i \\
        [--image_size 224] [--image_list FILE] [--min_foreground_pixels 1] [--overwrite]

Reads ``train2014/``, ``val2014/`` and ``annotations/instances_{train,val}2014.json`` and
writes::

    coco20i/train/<class>.tfrecord.gzip         train2014 images (--image_list restricts them)
    coco20i/val/<class>.tfrecord.gzip           val2014 images
    coco20i/interleaved/fold<i>/                links + test_classes.txt: fold i tests classes
                                                4k + i + 1 (PANet, PFENet, HSNet, ...)
    coco20i/contiguous/fold<i>/                 the same with classes 20i+1 .. 20i+20

so fold 0 of the usual split is ``run_metasegnet.py --data-dir coco20i/interleaved/fold0
--test_tasks_file coco20i/interleaved/fold0/test_classes.txt``.
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

    flags.DEFINE_string("coco_dir", None, "COCO folder: train2014/, val2014/, annotations/.")
    flags.DEFINE_string("output_dir", None, "Output folder (train/, val/, interleaved/, "
                        "contiguous/).")
    define_converter_flags(
        "Use only these training images (file stems); validation images are not restricted.",
        "Least annotated area (original resolution) of a class for an image to be its "
        "example.")
    flags.mark_flags_as_required(["coco_dir", "output_dir"])


def convert(coco_dir: str, output_dir: str, *, image_size: int = 224, image_list=None,
            min_foreground_pixels: int = 1, overwrite: bool = False, num_workers=None,
            mask_fn=None) -> dict:
    """Write both splits and the fold folders of both COCO-20i variants; returns
    {"train": {class: n}, "val": {...}, "missing": [fold entries without a shard]}."""
    from metaseg.datasets import coco, folds
    from metaseg.data.image_lists import ImageList

    if image_size < 1:
        raise ConfigError(f"--image_size must be positive, got {image_size}")
    if mask_fn is None:
        coco.require_pycocotools()  # before any work
        mask_fn = coco.pycocotools_mask
    if not os.path.isdir(coco_dir):
        raise ConfigError(f"--coco_dir {coco_dir} does not exist")
    train_list = ImageList.read(image_list) if image_list else None
    result, names = {}, None
    with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
        for split_name, folder in coco.SPLITS.items():
            split = coco.CocoSplit(coco.annotation_path(coco_dir, split_name))
            image_dir = os.path.join(coco_dir, folder)
            ids = coco.select_images(split, image_dir,
                                     train_list if split_name == "train" else None)
            result[split_name] = coco.convert_split(
                split, image_dir, os.path.join(output_dir, split_name), ids,
                image_size=image_size, min_pixels=min_foreground_pixels, overwrite=overwrite,
                pool=pool, mask_fn=mask_fn, what=split_name)
            names = split.class_names
    result["missing"] = []
    for variant in folds.COCO_SPLITS:
        test = {f: [names[i - 1] for i in folds.coco20i_test_indices(f, variant)]
                for f in range(folds.NUM_FOLDS)}
        missing = folds.write_fold_dirs(output_dir, names, test,
                                        fold_root=os.path.join(output_dir, variant))
        result["missing"] += [f"{variant}/{m}" for m in missing]
    return result


@exit_on_error
def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    f = flags.FLAGS
    start = time.monotonic()
    result = convert(f.coco_dir, f.output_dir, image_size=f.image_size,
                     image_list=f.image_list, min_foreground_pixels=f.min_foreground_pixels,
                     overwrite=f.overwrite, num_workers=f.num_workers)
    for split in ("train", "val"):
        counts = result[split]
        print(f"{split}: {len(counts)} class shards, "
              f"{sum(n for n in counts.values() if n > 0)} examples written")
    if result["missing"]:
        print(f"no shard for {len(result['missing'])} fold entries (no image of the class in "
              "that split; listed in the warnings above)")
    print(f"COCO-20i folds in {f.output_dir}/interleaved and /contiguous "
          f"({time.monotonic() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    from metaseg.quiet import import_tensorflow

    # metaseg.data imports it: keep its start-up chatter off stderr (and a bad
    # TF_NUM_*_THREADS in one line)
    exit_on_error(import_tensorflow)()
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)  # flag errors: one line, exit 2
