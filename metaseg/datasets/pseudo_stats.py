"""Per-cluster statistics of the assignment pass, and which clusters become pseudo-classes.

For every (image, cluster) pair where the cluster is present, the cluster's cleaned mask
covers some fraction of the image. The image becomes an example of the pseudo-class
``cluster_<k>`` when that coverage lies in ``[min_coverage, max_coverage]``; a cluster with
at least ``min_examples`` such images becomes a pseudo-class (at most ``max_examples`` of
them are written, a seeded random subset).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List

import numpy as np

from metaseg.errors import DataError

COVERAGE_BINS = 10  # histogram of coverage over [0, 1] in steps of 0.1


def cluster_name(cluster: int) -> str:
    return f"cluster_{cluster}"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    min_coverage: float
    max_coverage: float
    min_examples: int
    max_examples: int  # 0: no limit
    opening_size: int


class ClusterStats:
    """Accumulated over the assignment pass, one image at a time.

    Attributes:
        pixels: int64 [k], feature cells assigned to each cluster (before cleaning).
        present: int64 [k], images holding at least one cell of the cluster.
        histogram: int64 [k, 10], coverage (after cleaning) of the images it is present in.
        below, above: int64 [k], images where the coverage fell below / above the range.
        candidates: per cluster, the indices of the images within the coverage range.
    """

    def __init__(self, num_clusters: int, thresholds: Thresholds):
        self.thresholds = thresholds
        self.pixels = np.zeros(num_clusters, np.int64)
        self.present = np.zeros(num_clusters, np.int64)
        self.histogram = np.zeros((num_clusters, COVERAGE_BINS), np.int64)
        self.below = np.zeros(num_clusters, np.int64)
        self.above = np.zeros(num_clusters, np.int64)
        self.candidates: List[List[int]] = [[] for _ in range(num_clusters)]

    def add(self, image_index: int, counts: np.ndarray, coverage: Dict[int, float]) -> None:
        """One image: raw cell counts int [k], and the cleaned coverage of each present cluster."""
        t = self.thresholds
        self.pixels += counts
        for cluster, fraction in coverage.items():
            self.present[cluster] += 1
            self.histogram[cluster, min(int(fraction * COVERAGE_BINS), COVERAGE_BINS - 1)] += 1
            if fraction < t.min_coverage:
                self.below[cluster] += 1
            elif fraction > t.max_coverage:
                self.above[cluster] += 1
            else:
                self.candidates[cluster].append(image_index)

    def pseudo_classes(self) -> List[int]:
        """Clusters with at least ``min_examples`` candidate images, in index order."""
        return [c for c, images in enumerate(self.candidates)
                if len(images) >= self.thresholds.min_examples]

    def chosen_examples(self, cluster: int, seed: int) -> List[int]:
        """The candidate images written for ``cluster``: all, or a seeded random
        ``max_examples`` of them, in image order."""
        images = self.candidates[cluster]
        limit = self.thresholds.max_examples
        if not limit or len(images) <= limit:
            return list(images)
        pick = np.random.default_rng([seed, cluster]).choice(len(images), limit, replace=False)
        return sorted(images[i] for i in pick)

    def no_pseudo_class_error(self) -> DataError:
        """The one-line error when no cluster qualifies, naming the thresholds to relax."""
        t = self.thresholds
        best = int(np.argmax([len(c) for c in self.candidates]))
        return DataError(
            f"no cluster yields a pseudo-class: the best, {cluster_name(best)}, covers between "
            f"--min_coverage {t.min_coverage} and --max_coverage {t.max_coverage} of only "
            f"{len(self.candidates[best])} images, fewer than --min_examples {t.min_examples} "
            f"({int(self.below.sum())} image-cluster pairs fell below --min_coverage, "
            f"{int(self.above.sum())} above --max_coverage); lower --min_examples, widen the "
            "coverage range, use a smaller --opening_size or fewer --num_clusters, or add images")

    def summary(self, written: Dict[int, int]) -> dict:
        """JSON-able statistics of every cluster; ``written``: cluster -> examples written."""
        t = self.thresholds
        total = max(int(self.pixels.sum()), 1)
        clusters = []
        for c in range(len(self.pixels)):
            n = len(self.candidates[c])
            reason = None if c in written else (
                f"{n} images in the coverage range, fewer than --min_examples {t.min_examples}")
            clusters.append({
                "name": cluster_name(c), "pseudo_class": c in written,
                "examples_written": written.get(c, 0), "images_in_range": n,
                "images_present": int(self.present[c]),
                "images_below_min_coverage": int(self.below[c]),
                "images_above_max_coverage": int(self.above[c]),
                "pixel_share": float(self.pixels[c]) / total,
                "coverage_histogram": self.histogram[c].tolist(), "dropped_because": reason})
        return {"thresholds": dataclasses.asdict(t),
                "coverage_histogram_bins": np.linspace(0, 1, COVERAGE_BINS + 1).round(2).tolist(),
                "pseudo_classes": [cluster_name(c) for c in sorted(written)],
                "clusters": clusters}
