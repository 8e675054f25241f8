"""Tasks from a prepared TensorFlow Datasets dataset: ``--dataset tfds:NAME[/CONFIG]``.

``metaseg.tfds.list_tasks`` is the entry point: importing ``metaseg.tfds`` registers metaseg's
builders with tfds, which this module (below the builders, on an episode's path) never
imports.

Another source of (class, images, masks) for ``tasks.TaskStore``, beside the shards: a task
is one ``class_name`` of one split, its examples in the order the dataset stores them
(the metaseg builders write them in shard order, so a tfds dataset and the equivalent
shards give the same tasks, and the same episodes for the same seed). The dataset must
have the features ``image`` (uint8 [S, S, 3]), ``mask`` (uint8 [S, S, 1] or [S, S],
foreground 255) and ``class_name``, as the builders of ``metaseg.tfds`` write them; it is
read, never built, here (``tfds build`` prepares it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from metaseg.data.tasks import Task, name_list
from metaseg.errors import DataError

TFDS_PREFIX = "tfds:"
FEATURES = ("image", "mask", "class_name")
TEST_SPLIT = "test"


@dataclasses.dataclass(frozen=True)
class TfdsClass:
    """One class of one split of a tfds dataset: where a task's examples are."""

    dataset: str            # "metaseg_synthetic/tiny"
    data_dir: Optional[str]  # None: tfds's default
    split: str
    class_name: str

    def __str__(self) -> str:
        return f"{TFDS_PREFIX}{self.dataset}[{self.split}]/{self.class_name}"

    @classmethod
    def read_many(cls, refs: Sequence["TfdsClass"]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """How ``tasks.TaskStore`` reads a task's examples from here: ``read_classes``."""
        return read_classes(refs)


def build_command(dataset: str, data_dir: Optional[str], manual: bool,
                  tfds_cli: bool = False) -> str:
    """The command line that prepares ``dataset``: ``python -m metaseg.tfds`` (one-line
    errors), or with ``tfds_cli`` tfds's own ``tfds build --imports metaseg.tfds``."""
    words = (["tfds build", dataset, "--imports metaseg.tfds"] if tfds_cli
             else ["python -m metaseg.tfds", dataset])
    if data_dir:
        words.append(f"--data_dir {data_dir}")
    if manual:
        words.append("--manual_dir DIR")
    return " ".join(words)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@contextlib.contextmanager
def quiet_tfds():
    """Hide tfds's warnings (e.g. that a dataset is not prepared yet: the caller says so, in
    one line, if it matters)."""
    import logging  # pylint: disable=import-outside-toplevel

    # absl's logger itself, not absl.logging.set_verbosity: restoring a verbosity would
    # leave the logger's level set where it was NOTSET (following the root logger's).
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def make_builder(dataset: str, data_dir: Optional[str]):
    """``(tfds.builder(dataset, data_dir=data_dir), whether it is prepared)``, quietly."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    with quiet_tfds():
        builder = tfds.builder(dataset, data_dir=data_dir)
        return builder, builder.is_prepared()


def open_builder(dataset: str, data_dir: Optional[str], registered: Sequence[str] = ()):
    """The prepared builder of ``dataset``; DataError (one line) if it is unknown, not
    prepared (naming the ``tfds build`` command) or lacks the features metaseg reads.
    ``registered``: the names of metaseg's builders (``metaseg.tfds.BUILDERS``), which the
    caller has registered, for the error about an unknown name."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    where = f" in {data_dir}" if data_dir else " in tfds's default data directory"
    try:
        builder, prepared = make_builder(dataset, data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, KeyError) as e:
        known = (f"metaseg registers {', '.join(sorted(registered))}" if registered else
                 "import metaseg.tfds to register metaseg's builders")
        raise DataError(f"--dataset tfds:{dataset}: no such tfds dataset or config "
                        f"({_first_line(e)}); {known}") from None
    if not prepared:
        manual = bool(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
        raise DataError(f"tfds dataset {dataset} is not prepared{where}; prepare it with "
                        f"`{build_command(dataset, data_dir, manual)}` or "
                        f"`{build_command(dataset, data_dir, manual, tfds_cli=True)}`, or "
                        "pass --tfds_data_dir where it was built")
    missing = [f for f in FEATURES if f not in builder.info.features]
    if missing:
        raise DataError(f"tfds dataset {dataset} has no feature {', '.join(missing)}; metaseg "
                        "reads image (uint8 [S, S, 3]), mask (uint8, foreground 255) and "
                        "class_name")
    return builder


def _dataset(builder, split: str, decode_images: bool = True):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding(),
                                          "mask": tfds.decode.SkipDecoding()}
    # One file at a time, in file order: the examples in the order they were written.
    return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                              read_config=tfds.ReadConfig(interleave_cycle_length=1))


def list_tasks(dataset: str, data_dir: Optional[str], registered: Sequence[str] = ()):
    """``(tasks, test class names)``: one ``tasks.Task`` per class of every split (sorted by
    name), and the classes of the ``test`` split (None if there is none). ``registered`` as
    for ``open_builder``."""
    builder = open_builder(dataset, data_dir, registered)
    split_of: Dict[str, str] = {}
    both = []
    for split in sorted(builder.info.splits):
        names = _dataset(builder, split, decode_images=False).map(lambda e: e["class_name"])
        for name in dict.fromkeys(n.decode("utf-8") for n in names.as_numpy_iterator()):
            if name in split_of:
                both.append(f"{name} ({split_of[name]}, {split})")
            split_of[name] = split
    if both:
        raise DataError(f"tfds dataset {dataset}: {len(both)} classes are in two splits, "
                        f"so a task would be ambiguous: {name_list(both)}")
    if not split_of:
        raise DataError(f"tfds dataset {dataset} holds no examples")
    tasks = [Task(n, (TfdsClass(dataset, data_dir, s, n),)) for n, s in sorted(split_of.items())]
    test = sorted(n for n, s in split_of.items() if s == TEST_SPLIT)
    return tasks, (test or None)


def read_classes(refs: Sequence[TfdsClass]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``(images uint8 [n, S, S, 3], masks uint8 [n, S, S])`` of each class, in ``refs``
    order; each split is read once."""
    groups = collections.defaultdict(set)
    for ref in refs:
        groups[(ref.dataset, ref.data_dir, ref.split)].add(ref.class_name)
    decoded: Dict[TfdsClass, Tuple[np.ndarray, np.ndarray]] = {}
    for (dataset, data_dir, split), wanted in groups.items():
        builder = open_builder(dataset, data_dir)
        found: Dict[str, Tuple[list, list]] = {n: ([], []) for n in wanted}
        for example in _dataset(builder, split).as_numpy_iterator():
            name = example["class_name"].decode("utf-8")
            if name in found:
                found[name][0].append(example["image"])
                found[name][1].append(example["mask"])
        for name, (images, masks) in found.items():
            ref = TfdsClass(dataset, data_dir, split, name)
            decoded[ref] = _stack(ref, images, masks)
    return [decoded[ref] for ref in refs]


def _stack(ref: TfdsClass, images: list, masks: list) -> Tuple[np.ndarray, np.ndarray]:
    if not images:
        raise DataError(f"{ref}: no examples of this class in the split")
    shapes = {i.shape for i in images} | {m.shape[:2] + (3,) for m in masks}
    if len(shapes) != 1:
        raise DataError(f"{ref}: images and masks of different sizes {sorted(shapes)[:3]}; "
                        "metaseg needs one square size per class")
    masks = np.stack(masks)
    if masks.ndim == 4:
        masks = masks[..., 0]
    return np.stack(images).astype(np.uint8, copy=False), masks.astype(np.uint8, copy=False)
