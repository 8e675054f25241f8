"""Benchmark folds (PASCAL-5i, COCO-20i) and the binary per-class masks of a label map.

PASCAL-5i (Shaban et al., 2017): the 20 VOC classes in their index order, fold ``i``
holding out classes ``5i+1 .. 5i+5`` for testing and training on the other 15.
COCO-20i: the 80 COCO classes in category order, fold ``i`` holding out classes
``4k + i + 1`` (k = 0..19; "interleaved", used by PANet/PFENet and most later work) or
``20i+1 .. 20i+20`` ("contiguous", used by FWB and some others).

Label maps are uint8 class indices (0 background, 255 "ignore": object borders and
difficult regions in VOC). A class's binary mask is 255 where the label is that class and
0 everywhere else, so ignore pixels become background: the shard format (REFERENCE.md
section 1) has no ignore value (a mask byte is 255 or 0). VOC's ignore pixels are mostly a
thin band along object borders, so a mask loses that rim, and the few "difficult"
regions count as background.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from metaseg.data.shards import SHARD_SUFFIX
from metaseg.errors import ConfigError

IGNORE_LABEL = 255
PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
NUM_FOLDS = 4
COCO_SPLITS = ("interleaved", "contiguous")


def _check_fold(fold: int) -> None:
    if fold not in range(NUM_FOLDS):
        raise ConfigError(f"fold must be 0-{NUM_FOLDS - 1}, got {fold}")


def pascal5i_test_classes(fold: int) -> List[str]:
    """The 5 held-out class names of PASCAL-5i fold ``fold`` (VOC indices 5i+1 .. 5i+5)."""
    _check_fold(fold)
    return list(PASCAL_CLASSES[5 * fold:5 * fold + 5])


def coco20i_test_indices(fold: int, split: str = "interleaved") -> List[int]:
    """The 20 held-out 1-based class indices (into the 80 COCO classes in category order)."""
    _check_fold(fold)
    if split == "interleaved":
        return [4 * k + fold + 1 for k in range(20)]
    if split == "contiguous":
        return list(range(20 * fold + 1, 20 * fold + 21))
    raise ConfigError(f"COCO-20i split must be one of {COCO_SPLITS}, got {split!r}")


def classes_present(labels: np.ndarray, num_classes: int, min_pixels: int = 1) -> List[int]:
    """1-based class indices covering at least ``min_pixels`` pixels of ``labels``.

    Args:
        labels: uint8 [H, W] class indices; 0 background, 255 ignore, others above
            ``num_classes`` are ignored too.
    """
    counts = np.bincount(labels.ravel(), minlength=256)[1:num_classes + 1]
    return [int(c) + 1 for c in np.flatnonzero(counts >= max(min_pixels, 1))]


def binary_mask(labels: np.ndarray, class_index: int) -> np.ndarray:
    """uint8 [H, W]: 255 where ``labels == class_index``; background and ignore (255) -> 0."""
    if not 1 <= class_index < IGNORE_LABEL:
        raise ValueError(f"class index must be in 1..254, got {class_index}")
    return np.where(labels == class_index, 255, 0).astype(np.uint8)


def _link(target: str, link: str) -> None:
    """A relative symlink ``link`` -> ``target``; a copy where symlinks are not allowed."""
    if os.path.lexists(link):
        os.remove(link)
    try:
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)
    except OSError:
        import shutil

        shutil.copyfile(target, link)


def _write_lines(path: str, names: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in names))


def write_fold_dirs(output_dir: str, class_names: Sequence[str],
                    test_classes_of_fold: Dict[int, Sequence[str]],
                    train_split: str = "train", test_split: str = "val",
                    fold_root: Optional[str] = None) -> List[str]:
    """Build ``<fold_root>/fold<i>/`` from the shards of ``<output_dir>/<split>/``
    (``fold_root`` defaults to ``output_dir``).

    Each fold folder gets a link to ``../<train_split>/<c>.tfrecord.gzip`` for every
    training class and to ``../<test_split>/<c>.tfrecord.gzip`` for every test class, plus
    ``test_classes.txt`` and ``train_classes.txt``, so that ``--data-dir <out>/fold<i>
    --test_tasks_file <out>/fold<i>/test_classes.txt`` trains on the training images of the
    other classes and tests on the held-out images of the fold's classes.

    Returns the ``fold/class (split)`` entries that had no shard to link (warned).
    """
    missing = []
    for fold, test in sorted(test_classes_of_fold.items()):
        fold_dir = os.path.join(fold_root or output_dir, f"fold{fold}")
        os.makedirs(fold_dir, exist_ok=True)
        train = [c for c in class_names if c not in set(test)]
        for names, split in ((train, train_split), (test, test_split)):
            for name in names:
                target = os.path.join(output_dir, split, name + SHARD_SUFFIX)
                link = os.path.join(fold_dir, name + SHARD_SUFFIX)
                if os.path.exists(target):
                    _link(target, link)
                else:
                    missing.append(f"fold{fold}/{name} ({split})")
        _write_lines(os.path.join(fold_dir, "test_classes.txt"), test)
        _write_lines(os.path.join(fold_dir, "train_classes.txt"), train)
    if missing:
        logging.warning("No shard (no image of the class in that split) for %d fold entries: "
                        "%s%s", len(missing), ", ".join(missing[:10]),
                        ", ..." if len(missing) > 10 else "")
    return missing


def define_converter_flags(image_list_help: str, min_pixels_help: str) -> None:
    """The absl flags the PASCAL-5i and COCO-20i converters share (called by their scripts)."""
    from absl import flags  # pylint: disable=import-outside-toplevel  (scripts only)

    flags.DEFINE_integer("image_size", 224, "Side of the stored square images.")
    flags.DEFINE_string("image_list", None, image_list_help)
    flags.DEFINE_integer("min_foreground_pixels", 1, min_pixels_help)
    flags.DEFINE_integer("num_workers", None, "Worker threads (default: all CPUs).")
    flags.DEFINE_bool("overwrite", False, "Replace existing shards (else they are kept).")
