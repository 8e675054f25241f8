"""FSS-1000 image/mask pairs to one shard per class (``data_tools/fss_1000_image_to_tfrecord.py``).

Layout ``DIR/<class>/<n>.jpg`` + ``<n>.png`` (REFERENCE.md section 1). Masks are read by
``metaseg.data.image_io.read_mask``, the rules every tool shares (0/1 label maps, grey levels
thresholded at 128, the first channel of a colour mask as the original, alpha-only masks;
each such mask is listed at the end; a mask that would lose its object is skipped), images
upright by their EXIF orientation. Classes are converted in parallel, each shard written to a
temporary name and renamed when complete, so a shard is only ever complete or absent. The
tfds builder ``metaseg.tfds.fss1000`` reads the classes through ``read_class`` too.

Departures from the original converter, all deliberate:
- images of another size are resized (bilinear image, nearest mask) and counted, not
  dropped; ``--strict_size`` restores skipping them;
- bad input is skipped with its reason and listed at the end, and the exit code is 2 if
  anything was skipped (unless ``--allow_skips``); non-binary masks are thresholded at 128
  (the original stored them as they were) and images are turned upright by EXIF;
- existing shards are kept without ``--overwrite`` (so an interrupted run can resume);
- the per-class shuffle is seeded (``--seed``), so conversions are reproducible;
- ``--image_list FILE`` converts only the listed images (keys ``<class>/<n>``, as
  ``make_fraction_list.py`` writes them); classes with no listed image get no shard.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import tempfile
import time
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from metaseg.data import image_io
from metaseg.data.image_lists import ImageList
from metaseg.data.shards import SHARD_SUFFIX, ShardWriteError, resize_examples, write_shard
from metaseg.errors import DataError

IMAGE_EXT, MASK_EXT = ".jpg", ".png"
Skip = Tuple[str, str]  # (file, reason)


class SkipPair(Exception):
    """A bad input file: ``args == (file, reason)``."""


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    image_size: int = 224
    strict_size: bool = False
    overwrite: bool = False
    seed: int = 0
    image_list: Optional[ImageList] = None  # None: every image


@dataclasses.dataclass
class ClassReport:
    """What happened to one class folder."""

    name: str
    status: str  # "written", "exists" (kept, no --overwrite), "skipped" or "unlisted"
    written: int = 0
    resized: int = 0
    notes: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (mask, how read)
    skipped: List[Skip] = dataclasses.field(default_factory=list)


def find_class_dirs(input_dir: str) -> List[str]:
    """Sorted class folders of ``input_dir``; DataError if it is missing or holds none."""
    if not os.path.isdir(input_dir):
        raise DataError(f"input directory {input_dir} does not exist; pass --input_dir "
                        "pointing at the FSS-1000 folder (<class>/<n>.jpg + <n>.png)")
    dirs = sorted(e.path for e in os.scandir(input_dir) if e.is_dir())
    if not dirs:
        raise DataError(f"input directory {input_dir} holds no class folders; expected "
                        f"{input_dir}/<class>/<n>.jpg + <n>.png")
    return dirs


def prepare_output_dir(output_dir: str) -> None:
    """Create ``output_dir`` and prove it writable; DataError (stop at once) if not."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise DataError(f"output directory {output_dir} is not writable ({e.strerror}); "
                        "choose another --tfrecord_dir") from None


def _stems(files, ext: str) -> set:
    return {f[:-len(ext)] for f in files if f.endswith(ext)}


def find_pairs(class_dir: str, image_list: Optional[ImageList] = None
               ) -> Tuple[List[Tuple[str, str]], List[Skip]]:
    """Sorted ``(image.jpg, mask.png)`` pairs of a class, and the unpaired files; with an
    image list, only the stems it selects (as ``<class>/<stem>``) are considered."""
    files = os.listdir(class_dir)
    images, masks = _stems(files, IMAGE_EXT), _stems(files, MASK_EXT)
    if image_list is not None:
        name = os.path.basename(os.path.normpath(class_dir))
        images = {s for s in images if f"{name}/{s}" in image_list}
        masks = {s for s in masks if f"{name}/{s}" in image_list}

    def path(stem, ext):
        return os.path.join(class_dir, stem + ext)

    pairs = [(path(s, IMAGE_EXT), path(s, MASK_EXT)) for s in sorted(images & masks)]
    skipped = [(path(s, MASK_EXT), f"mask without image (no {s}{IMAGE_EXT} beside it)")
               for s in sorted(masks - images)]
    skipped += [(path(s, IMAGE_EXT), f"image without mask (no {s}{MASK_EXT} beside it)")
                for s in sorted(images - masks)]
    return pairs, skipped


def load_pair(image_path: str, mask_path: str,
              options: ConvertOptions) -> Tuple[np.ndarray, np.ndarray, bool, Optional[str]]:
    """Decode and check one pair (``image_io.read_mask``'s rules for the mask).

    Returns:
        image uint8 [S, S, 3], mask uint8 [S, S] in {0, 255} (S = options.image_size),
        whether it was resized, and a note on how the mask was read (None if plain 0/255).
    Raises:
        SkipPair(file, reason) for a bad pair.
    """
    try:
        mask, note = image_io.read_mask(mask_path)
        # The mask's size is the annotation's: it decides whether EXIF rotation applies.
        image = np.asarray(image_io.open_image(image_path, mask.shape[::-1]).convert("RGB"))
    except image_io.UnreadableImage as e:
        raise SkipPair(*e.args) from None
    height, width = image.shape[:2]
    if height != width:
        raise SkipPair(image_path, f"non-square image {width}x{height}")
    if mask.shape != image.shape[:2]:
        raise SkipPair(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                  f"{width}x{height}")
    size = options.image_size
    if options.strict_size and height != size:
        raise SkipPair(image_path, f"image is {width}x{height} px, not {size}x{size} "
                                   "(--strict_size)")
    if height != size:
        images, masks = resize_examples(image[None], mask[None], size)
        try:
            image_io.check_mask_survives(mask, masks[0], mask_path)
        except image_io.InvalidMask as e:
            raise SkipPair(*e.args) from None
        image, mask = images[0], masks[0]
    if not mask.any():
        note = "empty mask (no foreground pixel); kept as an all-background example"
    return image, mask, height != size, note


def _class_seed(seed: int, name: str) -> np.random.Generator:
    # Per-class stream: the shuffle does not depend on worker scheduling.
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def read_class(class_dir: str, options: ConvertOptions
               ) -> Tuple[List[Tuple[np.ndarray, np.ndarray, str]], ClassReport]:
    """The examples of one class folder in shard order, and what happened to its files.

    Returns ``[(image uint8 [S, S, 3], mask uint8 [S, S] in {0, 255}, key "<class>/<n>")]``
    in the seeded per-class order the shard stores them (empty if no pair is valid; the
    report then says why), and the class's report (status "skipped" until written, or
    "unlisted"). The tfds builder ``metaseg.tfds`` reads FSS-1000 through this too.
    """
    name = os.path.basename(os.path.normpath(class_dir))
    report = ClassReport(name, "skipped")
    pairs, report.skipped = find_pairs(class_dir, options.image_list)
    if options.image_list is not None and not pairs and not report.skipped:
        return [], ClassReport(name, "unlisted")
    examples = []
    for image_path, mask_path in pairs:
        try:
            image, mask, resized, note = load_pair(image_path, mask_path, options)
        except SkipPair as e:
            report.skipped.append(e.args)
            continue
        # The record's image key, <class>/<stem>, as image lists (--train_list) name it.
        stem = os.path.splitext(os.path.basename(image_path))[0]
        examples.append((image, mask, f"{name}/{stem}"))
        report.resized += int(resized)
        if note:
            report.notes.append((mask_path, note))
    if not examples:
        why = "no image/mask pairs" if not pairs else "no valid image/mask pair"
        report.skipped.append((class_dir, f"{why} in class folder; no shard written"))
        return [], report
    order = _class_seed(options.seed, name).permutation(len(examples))
    return [examples[i] for i in order], report


def convert_class(class_dir: str, output_dir: str, options: ConvertOptions) -> ClassReport:
    """Convert one class folder to ``<output_dir>/<class>.tfrecord.gzip``."""
    name = os.path.basename(os.path.normpath(class_dir))
    shard = os.path.join(output_dir, name + SHARD_SUFFIX)
    if os.path.exists(shard) and not options.overwrite:
        return ClassReport(name, "exists")
    examples, report = read_class(class_dir, options)
    if not examples:
        return report
    try:
        report.written = write_shard(shard, examples, overwrite=options.overwrite)
    except ShardWriteError:
        raise  # a full or read-only disk: every further class would fail too; stop here
    except DataError as e:
        report.skipped.append((shard, f"could not write shard: {e}"))
        return report
    report.status = "written"
    return report


class _Progress:
    """n/N classes with throughput and ETA, logged at most every ``every`` seconds."""

    def __init__(self, total: int, every: float = 5.0):
        self.total, self.every, self.done, self.images = total, every, 0, 0
        self.start = self.last = time.monotonic()

    def update(self, report: ClassReport) -> None:
        self.done += 1
        self.images += report.written
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last, elapsed = now, now - self.start
            eta = elapsed / self.done * (self.total - self.done)
            logging.info("%d/%d classes, %.1f images/s, ETA %.0f s", self.done, self.total,
                         self.images / max(elapsed, 1e-9), eta)


def convert_dataset(input_dir: str, output_dir: str, options: ConvertOptions,
                    num_workers: Optional[int] = None) -> List[ClassReport]:
    """Convert every class folder; returns one report per class, sorted by class name."""
    class_dirs = find_class_dirs(input_dir)
    prepare_output_dir(output_dir)
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(class_dirs)))
    logging.info("Converting %d classes from %s with %d workers", len(class_dirs),
                 input_dir, workers)
    progress = _Progress(len(class_dirs))
    # Threads, not processes: JPEG/PNG decoding (PIL) and GZIP writing (TF) release the GIL,
    # and worker processes would each pay TensorFlow's multi-second import.
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        futures = [pool.submit(convert_class, d, output_dir, options) for d in class_dirs]
        for future in concurrent.futures.as_completed(futures):
            progress.update(future.result())
    finally:  # on Ctrl-C or an error, start no further class; running ones finish cleanly
        pool.shutdown(wait=True, cancel_futures=True)
    return [f.result() for f in futures]


def summarize(reports: Sequence[ClassReport], output_dir: str, seconds: float) -> str:
    """The final human-readable summary (several lines)."""
    written = [r for r in reports if r.status == "written"]
    images = sum(r.written for r in reports)
    lines = [f"Wrote {len(written)} shards ({images} examples) to {output_dir} in "
             f"{seconds:.1f} s ({images / max(seconds, 1e-9):.1f} images/s)."]
    resized = sum(r.resized for r in reports)
    if resized:
        lines.append(f"Resized {resized} images to the requested size.")
    notes = [n for r in reports for n in r.notes]
    if notes:
        lines.append(f"Read {len(notes)} masks that are not plain 0/255 (kept, as noted):")
        lines += [f"  {path}: {note}" for path, note in notes]
    unlisted = sum(r.status == "unlisted" for r in reports)
    if unlisted:
        lines.append(f"{unlisted} classes have no image in --image_list; no shard for them.")
    kept = [r.name for r in reports if r.status == "exists"]
    if kept:
        lines.append(f"Kept {len(kept)} existing shards (pass --overwrite to replace them): "
                     + ", ".join(kept))
    skipped = [s for r in reports for s in r.skipped]
    if skipped:
        lines.append(f"Skipped {len(skipped)} files:")
        lines += [f"  {path}: {reason}" for path, reason in skipped]
    return "\n".join(lines)


def check_skips(reports: Sequence[ClassReport], allow_skips: bool) -> None:
    """DataError (exit 2) if anything was skipped, unless ``allow_skips``."""
    skipped = sum(len(r.skipped) for r in reports)
    if skipped and not allow_skips:
        raise DataError(f"{skipped} files were skipped (listed above); fix them or pass "
                        "--allow_skips")
