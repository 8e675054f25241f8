"""Writing the synthetic benchmark as shards of the original format, in parallel over classes.

Layout of a benchmark directory: one ``<class>.tfrecord.gzip`` per class (written atomically
by ``shards.write_shard``), then ``train_classes.txt`` and ``test_classes.txt`` (one name per
line, sorted), then ``MARKER_FILE`` (the generation parameters, as JSON). The marker is
written last, so a directory holding it is complete; an interrupted run leaves no marker and
``ensure_benchmark`` regenerates it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, List, Optional

from absl import logging

from metaseg.config import default_cache_dir
from metaseg.data.shards import SHARD_SUFFIX, write_shard, write_text_atomic
from metaseg.datasets.synthetic import catalog as cat
from metaseg.datasets.synthetic.render import render_class
from metaseg.datasets.worker_pool import run_in_processes
from metaseg.errors import ConfigError, DataError

MARKER_FILE = "synthetic_benchmark.json"
TRAIN_SPLIT_FILE = "train_classes.txt"
TEST_SPLIT_FILE = "test_classes.txt"
GENERATOR_VERSION = 1  # bump when rendering changes, so cached benchmarks are regenerated
MIN_IMAGE_SIZE = 16


def _validate(num_classes: int, examples_per_class: int, image_size: int, seed: int) -> None:
    if examples_per_class < 1:
        raise ConfigError(f"--examples_per_class must be at least 1, got {examples_per_class}")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"--image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    cat.catalogue(num_classes, seed)  # raises naming --num_classes when too small to split


def _make_writable(output_dir: str, hint: str = "choose another --output_dir") -> None:
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write-probe-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise DataError(f"cannot write to output directory {output_dir}: "
                        f"{e.strerror or e}; {hint}") from None


def _clear_previous(output_dir: str, names: List[str], overwrite: bool) -> None:
    """Refuse to touch an existing benchmark without overwrite; with it, remove stale files."""
    marker = os.path.join(output_dir, MARKER_FILE)
    entries = os.listdir(output_dir)
    shards = [f for f in entries if f.endswith(SHARD_SUFFIX)]
    ours = os.path.exists(marker)
    if not overwrite and (ours or shards):
        plural = "" if len(shards) == 1 else "s"
        what = "a synthetic benchmark" if ours else f"{len(shards)} shard{plural}"
        raise DataError(f"{output_dir} already holds {what}; pass --overwrite to replace it "
                        "or choose an empty --output_dir")
    wanted = {n + SHARD_SUFFIX for n in names}
    foreign = sorted(f for f in shards if f not in wanted)
    if foreign and not ours:
        raise DataError(f"{output_dir} holds {len(foreign)} shards that are not part of this "
                        f"benchmark (e.g. {foreign[0]}); they are left alone: choose an empty "
                        "--output_dir")
    # The marker goes first: from here on the directory no longer claims to be complete.
    # Then the temporary files of a killed earlier run (hidden, named after our shards).
    unfinished = [f for f in entries if f.startswith(".") and f.endswith(".tmp")
                  and f[1:].split(SHARD_SUFFIX)[0] + SHARD_SUFFIX in wanted]
    for stale in [MARKER_FILE, TRAIN_SPLIT_FILE, TEST_SPLIT_FILE] + foreign + unfinished:
        if stale in entries:
            os.remove(os.path.join(output_dir, stale))


def _write_class(output_dir: str, class_index: int, num_classes: int, examples: int,
                 image_size: int, seed: int) -> str:
    """Worker: render one class and write its shard. Returns the class name."""
    name = cat.catalogue(num_classes, seed).classes[class_index].name
    images, masks = render_class(class_index, num_classes, examples, image_size, seed)
    write_shard(os.path.join(output_dir, name + SHARD_SUFFIX), zip(images, masks),
                overwrite=True)
    return name


def _run_jobs(jobs: List[tuple], num_workers: int,
              progress: Optional[Callable[[int], None]]) -> None:
    """Run ``_write_class`` over jobs, in this process or a pool; report classes done."""
    if num_workers <= 1:
        for done, job in enumerate(jobs, 1):
            _write_class(*job)
            if progress:
                progress(done)
        return
    finished = [0]

    def done(_name):
        finished[0] += 1
        if progress:
            progress(finished[0])

    # Workers die with this process and leave no temporary file (worker_pool).
    run_in_processes(_write_class, jobs, num_workers, done)


def _parameters(num_classes, examples_per_class, image_size, seed) -> dict:
    # "metaseg.data.synthetic": the package's name when the marker format was set; kept so
    # that benchmarks generated before the move to metaseg.datasets are still recognised.
    return {"generator": "metaseg.data.synthetic", "version": GENERATOR_VERSION,
            "num_classes": num_classes, "examples_per_class": examples_per_class,
            "image_size": image_size, "seed": seed}


def _default_workers() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def write_benchmark(output_dir: str, *, num_classes: int = 1000, examples_per_class: int = 10,
                    image_size: int = 224, seed: int = 0, num_workers: Optional[int] = None,
                    overwrite: bool = False,
                    progress: Optional[Callable[[int], None]] = None) -> List[str]:
    """Generate the benchmark into ``output_dir``; return the class names (sorted).

    Shards hold uint8 images [image_size, image_size, 3] and masks in {0, 255}; the same
    arguments give byte-identical shards whatever ``num_workers`` is. ``progress`` is called
    with the number of classes written so far.
    Raises:
        ConfigError naming the flag for out-of-range arguments; DataError if the directory
        is not writable, or already holds shards or a benchmark and ``overwrite`` is False.
    """
    _validate(num_classes, examples_per_class, image_size, seed)
    output_dir = os.fspath(output_dir)
    _make_writable(output_dir)
    catalogue = cat.catalogue(num_classes, seed)
    names = catalogue.names
    _clear_previous(output_dir, names, overwrite)
    workers = max(1, min(num_workers or _default_workers(), num_classes))
    logging.info("Writing %d classes x %d images at %d px to %s with %d worker(s)",
                 num_classes, examples_per_class, image_size, output_dir, workers)
    start = time.monotonic()
    jobs = [(output_dir, i, num_classes, examples_per_class, image_size, seed)
            for i in range(num_classes)]
    _run_jobs(jobs, workers, progress)
    test = sorted(catalogue.test_names)
    write_text_atomic(os.path.join(output_dir, TRAIN_SPLIT_FILE),
                      "".join(f"{n}\n" for n in names if n not in catalogue.test_names))
    write_text_atomic(os.path.join(output_dir, TEST_SPLIT_FILE), "".join(f"{n}\n" for n in test))
    write_text_atomic(os.path.join(output_dir, MARKER_FILE), json.dumps(
        dict(_parameters(num_classes, examples_per_class, image_size, seed),
             num_test_classes=len(test)), indent=2, sort_keys=True) + "\n")
    logging.info("Wrote %d shards (%d test classes) in %.1f s", num_classes, len(test),
                 time.monotonic() - start)
    return names


def _is_complete(path: str, parameters: dict) -> bool:
    try:
        with open(os.path.join(path, MARKER_FILE), encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return False
    return all(recorded.get(k) == v for k, v in parameters.items())


def ensure_benchmark(cache_dir: Optional[str] = None, *, num_classes: int = 1000,
                     examples_per_class: int = 10, image_size: int = 224, seed: int = 0,
                     num_workers: Optional[int] = None) -> str:
    """Return a directory holding the benchmark for these parameters, generating it once.

    The directory is ``<cache_dir>/synthetic-fss-n{N}-e{E}-s{S}-seed{seed}`` (``cache_dir``
    defaults to ``metaseg.config.default_cache_dir()``); it is reused when its marker records
    the same parameters and generator version, and regenerated otherwise (e.g. after an
    interrupted run).
    """
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    path = os.path.join(cache_dir, f"synthetic-fss-n{num_classes}-e{examples_per_class}"
                                   f"-s{image_size}-seed{seed}")
    if _is_complete(path, _parameters(num_classes, examples_per_class, image_size, seed)):
        logging.info("Using the synthetic benchmark cached at %s", path)
        return path
    _make_writable(path, "set $METASEG_CACHE (or --cache_dir) to a writable directory")
    write_benchmark(path, num_classes=num_classes, examples_per_class=examples_per_class,
                    image_size=image_size, seed=seed, num_workers=num_workers, overwrite=True)
    return path
