"""Task registry: the shards of a directory, their splits, and the decoded tasks in memory.

One task is one class (REFERENCE.md section 1), except the FP-k tasks, which are unions of
several shards (section 2). ``TaskStore`` decodes every task once at start-up; episode
samplers index into its tensors and never re-read a shard.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from metaseg.data.shards import SHARD_SUFFIX, read_shards, resize_examples
from metaseg.errors import ConfigError, DataError

# REFERENCE.md section 2: each FP-k task merges every shard whose file name contains one
# of its synonyms (FSS-1000 classes with binary PASCAL classes). Plain substring matching
# is the original's rule, so "bus" also takes e.g. "school_bus" and "trolleybus".
FPK_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    "airliner": ("airliner", "aeroplane"),
    "bus": ("bus",),
    "motorbike": ("motorbike",),
    "potted_plant": ("potted_plant", "pottedplant"),
    "television": ("television", "tvmonitor"),
}
# FSS-1000 holds out 240 of its 1000 classes; used when no test-class list is given.
DEFAULT_TEST_FRACTION = 0.24
_MAX_LISTED = 10


def name_list(names: Sequence[str]) -> str:
    """At most ten names and the count of the rest, for one-line error messages."""
    names = list(names)
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return f"{shown} and {more} more ({len(names)} in all)" if more > 0 else shown


@dataclasses.dataclass(frozen=True)
class Task:
    """One few-shot task: a name and the shard(s) holding its examples."""

    name: str
    paths: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Splits:
    """Disjoint train / validation / test tasks, each sorted by name."""

    train: Tuple[Task, ...]
    val: Tuple[Task, ...]
    test: Tuple[Task, ...]


def list_tasks(data_dir) -> List[Task]:
    """One task per ``<class>.tfrecord.gzip`` in ``data_dir``, sorted by name.

    Hidden temporary files of an unfinished write are not shards and are ignored.
    """
    data_dir = os.fspath(data_dir)
    hint = ("pass --data_dir pointing at a folder of <class>" + SHARD_SUFFIX + " shards "
            "(written by data_tools/fss_1000_image_to_tfrecord.py or make_synthetic_fss.py)")
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} does not exist; {hint}")
    entries = os.listdir(data_dir)
    files = sorted(f for f in entries if f.endswith(SHARD_SUFFIX) and not f.startswith(".")
                   and len(f) > len(SHARD_SUFFIX))
    if not files:
        what = "is empty" if not entries else f"holds no *{SHARD_SUFFIX} shards"
        raise DataError(f"data directory {data_dir} {what}; {hint}")
    return [Task(f[:-len(SHARD_SUFFIX)], (os.path.join(data_dir, f),)) for f in files]


def _read_sources(paths: Sequence) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``read_shards(paths)``, where a path may also be a source that reads itself: every
    source of one type in one call, ``type(source).read_many(sources)`` (a class of a tfds
    dataset, ``tfds_source.TfdsClass``; ``metaseg.tfds.list_tasks`` makes such tasks)."""
    refs = [p for p in paths if hasattr(p, "read_many")]
    if not refs:
        return read_shards(paths)
    shards = [p for p in paths if not hasattr(p, "read_many")]
    decoded = dict(zip(shards, read_shards(shards)))
    for kind in dict.fromkeys(type(r) for r in refs):
        same = [r for r in refs if type(r) is kind]  # pylint: disable=unidiomatic-typecheck
        decoded.update(zip(same, kind.read_many(same)))
    return [decoded[p] for p in paths]


def read_class_list(path) -> List[str]:
    """Class names of a split file: one per line; blank lines and ``#`` comments ignored.

    Line endings may be CRLF (the shipped FSS-1000 lists are).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"cannot read class list {path}: {e.strerror}; check the path") from None
    names = [line.strip() for line in lines]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataError(f"class list {path} names no classes; put one class name per line")
    return names


def merge_fpk_tasks(tasks: Sequence[Task]) -> List[Task]:
    """The five FP-k tasks, each the union of every shard whose file name has a synonym.

    A FP-k class with no matching shard is left out with a warning; DataError if none match.
    """
    paths = sorted({p for task in tasks for p in task.paths})
    merged = []
    for name, synonyms in FPK_SYNONYMS.items():
        found = tuple(p for p in paths if any(s in os.path.basename(p) for s in synonyms))
        if found:
            merged.append(Task(name, found))
        else:
            logging.warning("FP-k class %s: no shard name contains any of %s", name, synonyms)
    if not merged:
        looked_for = sorted({s for synonyms in FPK_SYNONYMS.values() for s in synonyms})
        raise DataError(f"no shard file name contains any FP-k synonym ({', '.join(looked_for)}) "
                        f"among {len(paths)} shards; --fp_k_test_set needs those classes")
    return merged


def _pick(tasks: Sequence[Task], names: Sequence[str], role: str) -> List[Task]:
    """The tasks named in ``names`` (sorted); DataError listing the names not present."""
    by_name = {t.name: t for t in tasks}
    missing = [n for n in dict.fromkeys(names) if n not in by_name]
    if missing:
        raise DataError(f"{len(missing)} {role} classes have no shard among the {len(tasks)} "
                        f"candidate tasks: {name_list(missing)}; check the class list and "
                        "--data_dir")
    return sorted((by_name[n] for n in set(names)), key=lambda t: t.name)


def _default_test(tasks: List[Task]) -> List[Task]:
    if len(tasks) < 2:
        raise DataError(f"need at least 2 tasks to split into train and test, got {len(tasks)}")
    count = max(1, round(DEFAULT_TEST_FRACTION * len(tasks)))
    logging.info("No test-class list given: the last %d of %d tasks by sorted name are the "
                 "test set (FSS-1000's 240/1000 ratio)", count, len(tasks))
    return tasks[-count:]


def _test_and_rest(tasks: List[Task], test_classes: Optional[Sequence[str]],
                   fp_k_test_set: bool) -> Tuple[List[Task], List[Task]]:
    """The test tasks, and the tasks sharing no shard with them."""
    if fp_k_test_set:
        test = merge_fpk_tasks(tasks)
    elif test_classes is not None:
        test = _pick(tasks, test_classes, "test")
    else:
        test = _default_test(tasks)
    held_out = {p for task in test for p in task.paths}
    return test, [t for t in tasks if not held_out.intersection(t.paths)]


def make_splits(tasks: Sequence[Task], *, test_classes: Optional[Sequence[str]] = None,
                val_classes: Optional[Sequence[str]] = None, num_val_tasks: int = 0,
                fp_k_test_set: bool = False) -> Splits:
    """Train/val/test splits of REFERENCE.md section 2.

    Test: the FP-k tasks with ``fp_k_test_set`` (and every shard they use leaves
    train/val), else the named ``test_classes``, else the last ``round(0.24 n)`` names.
    Validation: the named ``val_classes``, else the last ``num_val_tasks`` training names.
    """
    if fp_k_test_set and test_classes is not None:
        raise ConfigError("--fp_k_test_set replaces the test-class list; do not pass both it "
                          "and --test_tasks_file")
    if val_classes is not None and num_val_tasks:
        raise ConfigError("pass either a validation class list or --num_val_tasks, not both")
    test, rest = _test_and_rest(sorted(tasks, key=lambda t: t.name), test_classes,
                                fp_k_test_set)
    if val_classes is not None:
        val = _pick(rest, val_classes, "validation")
    elif num_val_tasks >= len(rest):
        raise DataError(f"--num_val_tasks {num_val_tasks} leaves no training task: only "
                        f"{len(rest)} tasks are not in the test set")
    else:
        val = rest[len(rest) - num_val_tasks:]
    val_names = {t.name for t in val}
    train = [t for t in rest if t.name not in val_names]
    if not train:
        raise DataError("the splits leave no training task; use fewer validation classes")
    logging.info("Splits: %d train, %d val, %d test tasks", len(train), len(val), len(test))
    return Splits(tuple(train), tuple(val), tuple(test))


class TaskStore:
    """Every task decoded once, concatenated in memory (host/CPU).

    Attributes:
        names: task names, in the order given.
        images: uint8 [total, S, S, 3], all tasks concatenated.
        masks: uint8 [total, S, S], foreground 255.
        offsets, counts: int32 [T]; task i is rows ``offsets[i] : offsets[i] + counts[i]``.
        image_size: S.
    """

    def __init__(self, names: Sequence[str], images: np.ndarray, masks: np.ndarray,
                 counts: Sequence[int]):
        self.names = tuple(names)
        self._counts = tuple(int(c) for c in counts)
        self.image_size = int(images.shape[1])
        with tf.device("/CPU:0"):  # the whole dataset: keep it in host memory
            self.images = tf.constant(images, tf.uint8)
            self.masks = tf.constant(masks, tf.uint8)
            self.counts = tf.constant(self._counts, tf.int32)
            self.offsets = tf.constant(np.cumsum((0,) + self._counts[:-1]), tf.int32)

    def __len__(self) -> int:
        return len(self.names)

    def num_examples(self, i: int) -> int:
        """Number of examples of task ``i`` (python int)."""
        return self._counts[i]

    @classmethod
    def load(cls, tasks: Sequence[Task], image_size: int, *, min_examples: int = 1,
             drop_small: bool = False, num_threads: Optional[int] = None,
             keep_keys=None) -> "TaskStore":
        """Decode ``tasks`` (one interleaved tf.data pipeline), resized to ``image_size`` px.

        ``keep_keys`` (an ``ImageList`` or a set of image keys) keeps only the records whose
        stored image key it contains (``--train_list``); tasks left with no record are
        dropped. DataError if a shard stores no keys or nothing is kept.
        """
        if not tasks:
            raise DataError("no tasks to load; check --data_dir and the splits")
        paths = list(dict.fromkeys(p for task in tasks for p in task.paths))
        if keep_keys is None:
            decoded = dict(zip(paths, _read_sources(paths)))
        else:
            decoded = _keep_listed(paths, read_shards(paths, with_keys=True), keep_keys)
            tasks = [t for t in tasks if any(len(decoded[p][0]) for p in t.paths)]
        threads = num_threads or min(16, 2 * (os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # resizing, per task
            parts = list(pool.map(lambda task: _join_task(task, decoded, image_size), tasks))
        del decoded
        stored = sorted({size for _, _, size in parts})
        if stored != [image_size]:
            logging.info("Resized tasks stored at %s px to %d px", stored, image_size)
        return cls.from_arrays([t.name for t in tasks], [p[0] for p in parts],
                               [p[1] for p in parts], image_size=image_size,
                               min_examples=min_examples, drop_small=drop_small)

    @classmethod
    def from_arrays(cls, names: Sequence[str], images_list: Sequence[np.ndarray],
                    masks_list: Sequence[np.ndarray], *, image_size: Optional[int] = None,
                    min_examples: int = 1, drop_small: bool = False) -> "TaskStore":
        """Build from per-task arrays: images uint8 [n_i, S, S, 3], masks uint8 [n_i, S, S].

        ``image_size`` None keeps the (common) stored size; otherwise tasks are resized.
        """
        if not (len(names) == len(images_list) == len(masks_list)) or not names:
            raise DataError(f"need one images and one masks array per task, got {len(names)} "
                            f"names, {len(images_list)} images, {len(masks_list)} masks")
        names, images_list, masks_list = _drop_small(names, images_list, masks_list,
                                                     min_examples, drop_small)
        images_list, masks_list = _to_one_size(names, images_list, masks_list, image_size)
        counts = [len(images) for images in images_list]
        return cls(names, np.concatenate(images_list), np.concatenate(masks_list), counts)


def _keep_listed(paths: Sequence[str], triples, keep_keys) -> Dict[str, Tuple[np.ndarray,
                                                                              np.ndarray]]:
    """{path: (images, masks)} restricted to the records whose key ``keep_keys`` contains."""
    source = getattr(keep_keys, "source", "the image list")
    unkeyed = [p for p, (_, _, keys) in zip(paths, triples) if keys is None]
    if unkeyed:
        raise DataError(f"{len(unkeyed)} shards store no image keys, so {source} cannot select "
                        f"their images: {name_list(unkeyed)}; re-convert with a current "
                        "converter (which writes each record's image key)")
    decoded, kept = {}, 0
    for path, (images, masks, keys) in zip(paths, triples):
        rows = [i for i, key in enumerate(keys) if key in keep_keys]
        decoded[path] = (images[rows], masks[rows])
        kept += len(rows)
    if not kept:
        first = next((k for _, _, keys in triples for k in keys), None)
        raise DataError(f"image list {source} selects none of the {sum(len(t[2]) for t in triples)}"
                        f" training images (first stored key {first!r}); check --train_list")
    if hasattr(keep_keys, "warn_unused"):
        keep_keys.warn_unused()
    logging.info("Image list %s keeps %d of %d training images", source, kept,
                 sum(len(t[2]) for t in triples))
    return decoded


def _join_task(task: Task, decoded: Dict[str, Tuple[np.ndarray, np.ndarray]],
               image_size: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """A task's decoded shards resized to ``image_size`` and joined; and the stored size."""
    parts = [resize_examples(*decoded[p], image_size) for p in task.paths]
    stored = decoded[task.paths[0]][0].shape[1]
    if len(parts) == 1:
        return parts[0][0], parts[0][1], stored
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), stored


def _drop_small(names, images_list, masks_list, min_examples: int, drop_small: bool):
    """Stop (or, with ``drop_small``, warn and drop) tasks with < ``min_examples`` examples."""
    small = [f"{n} ({len(i)})" for n, i in zip(names, images_list) if len(i) < min_examples]
    if not small:
        return list(names), list(images_list), list(masks_list)
    if not drop_small:
        raise DataError(f"{len(small)} tasks have fewer than the {min_examples} examples an "
                        f"episode needs: {name_list(small)}; pass --drop_small_tasks to leave "
                        "them out")
    logging.warning("Dropping %d tasks with fewer than %d examples: %s", len(small),
                    min_examples, name_list(small))
    keep = [i for i, images in enumerate(images_list) if len(images) >= min_examples]
    if not keep:
        raise DataError(f"every task has fewer than {min_examples} examples; none is left")
    return ([names[i] for i in keep], [images_list[i] for i in keep],
            [masks_list[i] for i in keep])


def _to_one_size(names, images_list, masks_list, image_size: Optional[int]):
    """Validate shapes and resize every task to ``image_size`` (logged once)."""
    for name, images, masks in zip(names, images_list, masks_list):
        images, masks = np.asarray(images), np.asarray(masks)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 \
                or images.shape[1] != images.shape[2] or masks.shape != images.shape[:3]:
            raise DataError(f"task {name}: expected uint8 images [n, S, S, 3] and masks "
                            f"[n, S, S], got {images.dtype} {images.shape} and {masks.shape}")
    stored = sorted({np.shape(images)[1] for images in images_list})
    if image_size is None:
        if len(stored) > 1:
            raise DataError(f"tasks store different image sizes {stored}; pass image_size")
        return images_list, masks_list
    if stored != [image_size]:
        logging.info("Resizing tasks stored at %s px to %d px", stored, image_size)
    pairs = [resize_examples(i, m, image_size) for i, m in zip(images_list, masks_list)]
    return [p[0] for p in pairs], [p[1] for p in pairs]
