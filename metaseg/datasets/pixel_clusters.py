"""Streaming k-means over pixel embeddings: memory bounded by one mini-batch, not the data.

Each image contributes a fixed quota of randomly chosen feature cells (``pixel_quotas``);
the sampled rows are buffered only until a mini-batch is full and then fed to
scikit-learn's ``MiniBatchKMeans.partial_fit``. The first call initialises the centroids
(k-means++) on a buffer of at least ``3 k`` rows, as ``MiniBatchKMeans.fit`` uses an
initialisation sample of three mini-batches.
"""

from __future__ import annotations

from typing import List

import numpy as np
from sklearn.cluster import MiniBatchKMeans

from metaseg.errors import DataError


def pixel_quotas(num_images: int, cells_per_image: int, sample_pixels: int) -> np.ndarray:
    """int64 [num_images]: how many feature cells to sample from each image.

    ``sample_pixels`` is split as evenly as possible (the first ``sample_pixels %
    num_images`` images take one more), capped at the cells an image has.
    """
    base, extra = divmod(int(sample_pixels), max(int(num_images), 1))
    quotas = np.full(num_images, base, np.int64)
    quotas[:extra] += 1
    return np.minimum(quotas, cells_per_image)


def sample_cells(features: np.ndarray, quota: int, rng: np.random.Generator) -> np.ndarray:
    """``quota`` distinct random rows of one image's features float32 [h, w, C] -> [quota, C]."""
    flat = features.reshape(-1, features.shape[-1])
    return flat[rng.choice(len(flat), size=quota, replace=False)]


class StreamingKMeans:
    """``MiniBatchKMeans`` fed by ``add`` in arbitrary chunks; ``finish`` flushes the rest.

    Args:
        num_clusters: k.
        batch_size: rows per ``partial_fit`` step (each step is one mini-batch update).
        seed: ``random_state`` of the k-means++ initialisation and reassignments.
    """

    def __init__(self, num_clusters: int, batch_size: int, seed: int):
        self.num_clusters, self.batch_size = num_clusters, max(batch_size, 1)
        self.kmeans = MiniBatchKMeans(n_clusters=num_clusters, batch_size=self.batch_size,
                                      random_state=seed, n_init=3)
        self._buffer: List[np.ndarray] = []
        self._buffered = 0
        self.fitted = False
        self.rows_seen = 0

    def _threshold(self) -> int:
        return self.batch_size if self.fitted else max(self.batch_size, 3 * self.num_clusters)

    def add(self, rows: np.ndarray) -> None:
        """Buffer float32 rows [m, C]; run ``partial_fit`` steps once a batch is full."""
        self._buffer.append(np.asarray(rows, np.float32))
        self._buffered += len(rows)
        self.rows_seen += len(rows)
        if self._buffered >= self._threshold():
            self._flush()

    def _flush(self) -> None:
        data = np.concatenate(self._buffer)
        self._buffer, self._buffered = [], 0
        if not self.fitted:
            self.kmeans.partial_fit(data)  # initialise on the whole (>= 3k rows) buffer
            self.fitted = True
            return
        for start in range(0, len(data), self.batch_size):
            self.kmeans.partial_fit(data[start:start + self.batch_size])

    def finish(self) -> MiniBatchKMeans:
        """Fit the buffered rest; DataError if fewer than k rows were seen in all."""
        if not self.fitted and self._buffered < self.num_clusters:
            raise DataError(f"only {self._buffered} pixels could be sampled from the readable "
                            f"images, fewer than --num_clusters {self.num_clusters}; lower "
                            "--num_clusters or add images")
        if self._buffered:
            self._flush()
        return self.kmeans

    @property
    def centroids(self) -> np.ndarray:
        """float32 [k, C] cluster centres (not renormalised)."""
        return self.kmeans.cluster_centers_.astype(np.float32)


def assign(kmeans: MiniBatchKMeans, features: np.ndarray) -> np.ndarray:
    """Nearest centroid of every cell: float32 [N, h, w, C] -> uint16 [N, h, w]."""
    n, h, w, c = features.shape
    labels = kmeans.predict(features.reshape(-1, c).astype(np.float32))
    return labels.reshape(n, h, w).astype(np.uint16)
