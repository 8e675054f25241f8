"""Pseudo-tasks from unlabelled images (the unsupervised meta-training of UMTFSS, AAAI 2024).

Three streamed passes over a folder of images, none of which holds more than one batch of
images or features in memory:

1. *fit*: embed a batch of images (``pseudo_features``), sample a fixed quota of feature
   cells per image and feed them to a streaming mini-batch k-means (``pixel_clusters``);
2. *assign*: embed again and give every cell its nearest centroid; keep the label map of
   each image at feature resolution (uint16 [h, w]: small) and accumulate per-cluster
   statistics (``pseudo_stats``);
3. *write*: for every cluster that covers ``[min_coverage, max_coverage]`` of at least
   ``min_examples`` images, one shard ``cluster_<k>.tfrecord.gzip`` of those images
   (re-decoded) with the cluster's mask: opened at feature resolution to remove specks,
   upsampled nearest to the image size, foreground 255.

Then ``pseudo_tasks.json`` records the settings and the statistics of every cluster. The
shards are ordinary shards of our format: meta-training runs on them unchanged.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from metaseg.data import image_io
from metaseg.datasets import mask_ops, pixel_clusters, pseudo_features
from metaseg.data.image_lists import ImageList, find_images, image_key
from metaseg.data.progress import Progress
from metaseg.datasets.pseudo_stats import ClusterStats, Thresholds, cluster_name
from metaseg.data.shards import SHARD_SUFFIX, write_shard, write_text_atomic
from metaseg.errors import ConfigError, DataError

STATS_FILE = "pseudo_tasks.json"


@dataclasses.dataclass(frozen=True)
class PseudoTaskOptions:
    """Settings of ``make_pseudo_tasks`` (the flags of ``data_tools/make_pseudo_tasks.py``)."""

    image_size: int = 224
    feature_level: int = 3
    num_clusters: int = 50
    sample_pixels: int = 200_000
    min_coverage: float = 0.05
    max_coverage: float = 0.8
    min_examples: int = 10
    max_examples: int = 200
    opening_size: int = 3
    batch_size: int = 16
    kmeans_batch: int = 4096
    kmeans_passes: int = 1
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self):
        for name in ("num_clusters", "sample_pixels", "min_examples", "batch_size",
                     "kmeans_batch", "kmeans_passes", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.num_clusters < 2:
            raise ConfigError(f"--num_clusters must be at least 2, got {self.num_clusters}")
        if not 0.0 <= self.min_coverage <= self.max_coverage <= 1.0:
            raise ConfigError("need 0 <= --min_coverage <= --max_coverage <= 1, got "
                              f"{self.min_coverage} and {self.max_coverage}")
        if self.max_examples and self.max_examples < self.min_examples:
            raise ConfigError(f"--max_examples {self.max_examples} is below --min_examples "
                              f"{self.min_examples}; use 0 for no limit")
        mask_ops.check_opening_size(self.opening_size)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.min_coverage, self.max_coverage, self.min_examples,
                          self.max_examples, self.opening_size)


class ImageSource:
    """The images of a folder, decoded and resized in batches by a thread pool.

    Unreadable files are logged, recorded in ``skipped`` (path -> reason) and left out.
    """

    def __init__(self, input_dir: str, relative_paths: Sequence[str], image_size: int,
                 pool: concurrent.futures.Executor):
        self.paths = [os.path.join(input_dir, p) for p in relative_paths]
        self.image_size, self.pool = image_size, pool
        self.skipped: Dict[str, str] = {}

    def _load(self, index: int) -> Optional[np.ndarray]:
        try:
            return image_io.load_square_rgb(self.paths[index], self.image_size)
        except image_io.UnreadableImage as e:
            if self.paths[index] not in self.skipped:
                logging.warning("Skipping unreadable image %s", e)
            self.skipped[self.paths[index]] = e.args[1]
            return None

    def batches(self, batch_size: int,
                progress: Progress) -> Iterator[Tuple[List[int], np.ndarray]]:
        """(image indices, uint8 [B, S, S, 3]) for the readable images, in order."""
        for start in range(0, len(self.paths), batch_size):
            indices = list(range(start, min(start + batch_size, len(self.paths))))
            images = list(self.pool.map(self._load, indices))
            progress.update(len(indices))
            kept = [(i, im) for i, im in zip(indices, images) if im is not None]
            if kept:
                yield [i for i, _ in kept], np.stack([im for _, im in kept])


def _fit(source: ImageSource, features_of, options: PseudoTaskOptions, cells: int):
    """Pass 1: the fitted k-means (``options.kmeans_passes`` streamed passes)."""
    quotas = pixel_clusters.pixel_quotas(len(source.paths), cells, options.sample_pixels)
    if quotas.sum() < options.num_clusters:
        raise ConfigError(f"--num_clusters {options.num_clusters} is larger than the "
                          f"{int(quotas.sum())} pixels sampled (--sample_pixels "
                          f"{options.sample_pixels} over {len(source.paths)} images of {cells} "
                          "feature cells); lower --num_clusters or raise --sample_pixels")
    kmeans = pixel_clusters.StreamingKMeans(options.num_clusters, options.kmeans_batch,
                                            options.seed)
    for p in range(options.kmeans_passes):
        progress = Progress(len(source.paths), f"k-means pass {p + 1}/{options.kmeans_passes}")
        for indices, images in source.batches(options.batch_size, progress):
            for i, feats in zip(indices, features_of(images)):
                rng = np.random.default_rng([options.seed, p, i])
                kmeans.add(pixel_clusters.sample_cells(feats, int(quotas[i]), rng))
    if len(source.skipped) == len(source.paths):
        path, reason = next(iter(source.skipped.items()))
        raise DataError(f"none of the {len(source.paths)} image files could be read (first: "
                        f"{path}: {reason}); check the input folder")
    fitted = kmeans.finish()
    logging.info("k-means: %d clusters fitted on %d sampled pixels in %d steps",
                 options.num_clusters, kmeans.rows_seen, fitted.n_steps_)
    return fitted, kmeans.rows_seen


def _cluster_mask(labels: np.ndarray, cluster: int, opening_size: int) -> np.ndarray:
    """bool [h, w]: the cluster's cells with specks removed (feature resolution)."""
    return mask_ops.binary_opening(labels == cluster, opening_size)


def _assign(source: ImageSource, features_of, kmeans, options: PseudoTaskOptions):
    """Pass 2: label maps uint16 [h, w] per readable image index, and the statistics."""
    stats = ClusterStats(options.num_clusters, options.thresholds)
    labels_of: Dict[int, np.ndarray] = {}
    progress = Progress(len(source.paths), "assigning pixels to clusters")
    for indices, images in source.batches(options.batch_size, progress):
        for i, labels in zip(indices, pixel_clusters.assign(kmeans, features_of(images))):
            labels_of[i] = labels
            counts = np.bincount(labels.ravel(), minlength=options.num_clusters)
            coverage = {int(c): float(_cluster_mask(labels, c, options.opening_size).mean())
                        for c in np.flatnonzero(counts)}
            stats.add(i, counts, coverage)
    return labels_of, stats


def _write_cluster(source: ImageSource, output_dir: str, cluster: int, images: List[int],
                   labels_of: Dict[int, np.ndarray], options: PseudoTaskOptions) -> int:
    factor = options.image_size // next(iter(labels_of.values())).shape[0]

    def pairs():
        for i in images:
            mask = _cluster_mask(labels_of[i], cluster, options.opening_size)
            mask = mask_ops.upsample_nearest(mask, factor).astype(np.uint8) * 255
            yield image_io.load_square_rgb(source.paths[i], options.image_size), mask

    path = os.path.join(output_dir, cluster_name(cluster) + SHARD_SUFFIX)
    return write_shard(path, pairs(), overwrite=True)


def _write_pseudo_classes(source: ImageSource, output_dir: str, stats: ClusterStats,
                          labels_of: Dict[int, np.ndarray], options: PseudoTaskOptions,
                          pool: concurrent.futures.Executor) -> Dict[int, int]:
    """Pass 3: one shard per qualifying cluster, in parallel; {cluster: examples written}."""
    chosen = {c: stats.chosen_examples(c, options.seed) for c in stats.pseudo_classes()}
    progress = Progress(len(chosen), "writing pseudo-class shards", unit="shards")
    written = {}
    for c, count in zip(chosen, pool.map(lambda c: _write_cluster(
            source, output_dir, c, chosen[c], labels_of, options), chosen)):
        written[c] = count
        progress.update()
    return written


def _select_images(input_dir: str, image_list: Optional[ImageList]) -> List[str]:
    """The image files under ``input_dir`` (relative paths), restricted by ``image_list``."""
    found = find_images(input_dir)
    if not found:
        raise DataError(f"input directory {input_dir} holds no JPEG/PNG images")
    if image_list is None:
        return found
    chosen = set(image_list.select([image_key(p) for p in found]))
    return [p for p in found if image_key(p) in chosen]


def _existing_shards(output_dir: str) -> List[str]:
    if not os.path.isdir(output_dir):
        return []
    return sorted(f for f in os.listdir(output_dir)
                  if f.startswith("cluster_") and f.endswith(SHARD_SUFFIX))


def _write_json(path: str, content: dict) -> None:
    write_text_atomic(path, json.dumps(content, indent=2))


def make_pseudo_tasks(input_dir: str, output_dir: str, options: PseudoTaskOptions,
                      backbone: str = pseudo_features.PIXELS,
                      encoder_name: str = "efficientnet-b0",
                      image_list: Optional[ImageList] = None,
                      num_workers: Optional[int] = None,
                      feature_fn: Optional[pseudo_features.FeatureFn] = None) -> dict:
    """Cluster the images of ``input_dir`` into pseudo-classes written to ``output_dir``.

    ``feature_fn`` (default: built from ``backbone``) maps uint8 [N, S, S, 3] to L2-normalised
    float32 [N, S / 2**r, S / 2**r, C] with r = ``options.feature_level``.

    Returns the content of ``pseudo_tasks.json``. Raises ConfigError/DataError (one line)
    for: no readable image, more clusters than sampled pixels, no cluster yielding a
    pseudo-class (``pseudo_tasks.json`` is still written, to show why), existing
    ``cluster_*`` shards without ``options.overwrite``.
    """
    pseudo_features.check_settings(backbone, options.feature_level, options.image_size)
    found = _select_images(input_dir, image_list)
    existing = _existing_shards(output_dir)
    if existing and not options.overwrite:
        raise DataError(f"{output_dir} already holds {len(existing)} cluster_* shards; pass "
                        "--overwrite to replace them or choose another --output_dir")
    features_of = feature_fn or pseudo_features.make_feature_fn(
        backbone, options.feature_level, options.image_size, encoder_name)
    os.makedirs(output_dir, exist_ok=True)  # after the backbone loaded: a bad one leaves none
    cells = (options.image_size // pseudo_features.stride(options.feature_level)) ** 2
    logging.info("Clustering %d images into %d clusters (%s backbone, feature level %d, "
                 "%d feature cells per image)", len(found), options.num_clusters, backbone,
                 options.feature_level, cells)
    with concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
        source = ImageSource(input_dir, found, options.image_size, pool)
        kmeans, sampled = _fit(source, features_of, options, cells)
        labels_of, stats = _assign(source, features_of, kmeans, options)
        written = _write_pseudo_classes(source, output_dir, stats, labels_of, options, pool)
    summary = {"input_dir": os.path.abspath(input_dir), "backbone": backbone,
               "encoder": encoder_name, "settings": dataclasses.asdict(options),
               "images_listed": len(found), "images_used": len(labels_of),
               "skipped": sorted(source.skipped.items()), "pixels_sampled": sampled,
               **stats.summary(written)}
    _write_json(os.path.join(output_dir, STATS_FILE), summary)
    if not written:
        raise stats.no_pseudo_class_error()
    for stale in set(existing) - {cluster_name(c) + SHARD_SUFFIX for c in written}:
        os.remove(os.path.join(output_dir, stale))  # from an earlier run (--overwrite)
    logging.info("Wrote %d pseudo-classes (%d examples) to %s", len(written),
                 sum(written.values()), output_dir)
    return summary
