"""PASCAL VOC 2012 (+ SBD ``SegmentationClassAug``) to binary per-class shards for PASCAL-5i.

Input layout (the one every PASCAL-5i code base uses)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClassAug/<id>.png     class indices 0-20, 255 = ignore
    VOC2012/ImageSets/Segmentation/val.txt    the 1449 test images (``--val_list``)

Training images are every ``SegmentationClassAug`` label not in the validation list (the
usual 10582 "train_aug" images), optionally restricted by an image list (a labelled
fraction); validation images are those the list names. For each split and class, one shard
holds every image of the split where the class covers at least ``min_foreground_pixels``
pixels (counted at the original resolution) and is still visible at ``image_size``,
with the class's binary mask (``folds.binary_mask``: ignore -> background).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from metaseg.data import image_io
from metaseg.datasets import folds
from metaseg.data.image_lists import ImageList
from metaseg.data.progress import Progress
from metaseg.data.shards import SHARD_SUFFIX, write_shard
from metaseg.errors import DataError

LABEL_DIR, IMAGE_DIR = "SegmentationClassAug", "JPEGImages"
DEFAULT_VAL_LIST = os.path.join("ImageSets", "Segmentation", "val.txt")


@dataclasses.dataclass(frozen=True)
class VocOptions:
    image_size: int = 224
    min_foreground_pixels: int = 1
    overwrite: bool = False


def check_layout(voc_dir: str, val_list: Optional[str]) -> str:
    """The validation list's path; DataError naming what to download if a part is missing."""
    if not os.path.isdir(voc_dir):
        raise DataError(f"VOC directory {voc_dir} does not exist; pass --voc_dir pointing at "
                        "VOCdevkit/VOC2012")
    if not os.path.isdir(os.path.join(voc_dir, IMAGE_DIR)):
        raise DataError(f"{voc_dir} has no {IMAGE_DIR}/ folder; pass --voc_dir pointing at "
                        "VOCdevkit/VOC2012 from VOCtrainval_11-May-2012.tar")
    if not os.path.isdir(os.path.join(voc_dir, LABEL_DIR)):
        raise DataError(f"{voc_dir} has no {LABEL_DIR}/ folder: download SegmentationClassAug "
                        "(the SBD-augmented VOC2012 class labels, 10582 training images, e.g. "
                        "SegmentationClassAug.zip from the DeepLab/PANet instructions) and unzip "
                        f"it into {voc_dir}")
    path = val_list or os.path.join(voc_dir, DEFAULT_VAL_LIST)
    if not os.path.isfile(path):
        raise DataError(f"validation list {path} not found; pass --val_list (VOC2012's "
                        f"{DEFAULT_VAL_LIST} lists the 1449 PASCAL-5i test images)")
    return path


def split_ids(voc_dir: str, val_list: ImageList,
              train_list: Optional[ImageList] = None) -> Dict[str, List[str]]:
    """{"train": ids, "val": ids}: image ids (file stems) with a label PNG, sorted."""
    labels = sorted(f[:-4] for f in os.listdir(os.path.join(voc_dir, LABEL_DIR))
                    if f.endswith(".png") and not f.startswith("."))
    if not labels:
        raise DataError(f"{os.path.join(voc_dir, LABEL_DIR)} holds no label PNGs")
    val = [i for i in labels if i in val_list]
    train = [i for i in labels if i not in set(val)]
    if train_list is not None:
        train = train_list.select(train, what="training images")
    if not val:
        raise DataError(f"none of the images in validation list {val_list.source} has a label "
                        f"in {LABEL_DIR}; check --val_list")
    return {"train": train, "val": val}


def _labels(voc_dir: str, image_id: str, size: int):
    """(full-resolution labels uint8 [H, W], labels resized nearest to uint8 [size, size])."""
    path = os.path.join(voc_dir, LABEL_DIR, image_id + ".png")
    full = image_io.open_image(path)
    return np.asarray(full, np.uint8), image_io.square_labels(full, size, path)


def index_classes(voc_dir: str, ids: Sequence[str], options: VocOptions,
                  pool: concurrent.futures.Executor, what: str) -> Dict[int, List[str]]:
    """{class index 1-20: ids of the images that become its examples}."""
    def classes_of(image_id):
        full, small = _labels(voc_dir, image_id, options.image_size)
        present = folds.classes_present(full, len(folds.PASCAL_CLASSES),
                                        options.min_foreground_pixels)
        visible = set(folds.classes_present(small, len(folds.PASCAL_CLASSES)))
        return [c for c in present if c in visible]

    index: Dict[int, List[str]] = {}
    progress = Progress(len(ids), f"indexing {what} labels")
    for image_id, classes in zip(ids, pool.map(classes_of, ids)):
        for c in classes:
            index.setdefault(c, []).append(image_id)
        progress.update()
    return index


def class_examples(voc_dir: str, class_index: int, ids: Sequence[str], options: VocOptions):
    """(image uint8 [S, S, 3], binary mask uint8 [S, S] in {0, 255}, key: the id) for each id,
    in order: the examples of one class's shard (and of the tfds builder ``pascal5i``)."""
    for image_id in ids:
        full, labels = _labels(voc_dir, image_id, options.image_size)
        # The label map's size decides whether the image's EXIF orientation applies.
        image = image_io.load_square_rgb(os.path.join(voc_dir, IMAGE_DIR, image_id + ".jpg"),
                                         options.image_size, full.shape[::-1])
        yield image, folds.binary_mask(labels, class_index), image_id


def write_class(voc_dir: str, path: str, class_index: int, ids: Sequence[str],
                options: VocOptions) -> int:
    """One shard: ``class_examples`` of ``ids``."""
    return write_shard(path, class_examples(voc_dir, class_index, ids, options),
                       overwrite=options.overwrite)


def convert_split(voc_dir: str, output_dir: str, ids: Sequence[str], options: VocOptions,
                  pool: concurrent.futures.Executor, what: str) -> Dict[str, int]:
    """Shards ``<output_dir>/<class>.tfrecord.gzip`` of one split; {class: examples written}
    (existing shards are kept without ``overwrite`` and reported as -1)."""
    os.makedirs(output_dir, exist_ok=True)
    index = index_classes(voc_dir, ids, options, pool, what)
    jobs = {}
    for c, class_ids in sorted(index.items()):
        path = os.path.join(output_dir, folds.PASCAL_CLASSES[c - 1] + SHARD_SUFFIX)
        if os.path.exists(path) and not options.overwrite:
            jobs[c] = None
        else:
            jobs[c] = pool.submit(write_class, voc_dir, path, c, class_ids, options)
    progress = Progress(len(jobs), f"writing {what} shards", unit="shards")
    written = {}
    for c, job in jobs.items():
        written[folds.PASCAL_CLASSES[c - 1]] = -1 if job is None else job.result()
        progress.update()
    return written
