"""Tiny generated shards for the data tests (and the episode tests built on them)."""
import numpy as np
import pytest

from metaseg.data.shards import SHARD_SUFFIX, write_shard

TINY_CLASSES = 6
TINY_EXAMPLES = 8
TINY_SIZE = 32


def synthetic_pairs(n: int, size: int, seed: int, kind: int = 0):
    """n distinct image/mask pairs: images uint8 [n, size, size, 3], masks uint8 [n, size, size].

    The foreground is a disc, square or diamond (by ``kind``) of random centre and radius,
    always well inside the image, so every mask holds both foreground (255) and background
    (0); the n masks are pairwise different.
    The image is dark noise with a class-coloured, brighter object where the mask is 255.
    """
    rng = np.random.default_rng([seed, kind])
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = rng.integers(0, 100, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    colour = np.array([(60 * kind) % 156 + 100, 200 - 15 * kind, 100 + 20 * kind], np.uint8)
    seen = set()
    for i in range(n):
        while True:  # redraw until this mask differs from the earlier ones
            cy, cx = rng.uniform(0.35, 0.65, 2) * size
            r = rng.uniform(0.15, 0.3) * size
            dy, dx = np.abs(yy - cy), np.abs(xx - cx)
            inside = [dy ** 2 + dx ** 2 < r ** 2, np.maximum(dy, dx) < r, dy + dx < r][kind % 3]
            if inside.tobytes() not in seen:
                break
        seen.add(inside.tobytes())
        masks[i][inside] = 255
        images[i][inside] = colour
    return images, masks


@pytest.fixture(scope="session")
def make_pairs():
    """The ``synthetic_pairs(n, size, seed, kind=0)`` generator, for tests in any file."""
    return synthetic_pairs


@pytest.fixture(scope="session")
def tiny_shard_data():
    """{class name: (images uint8 [8, 32, 32, 3], masks uint8 [8, 32, 32])} for 6 classes."""
    return {f"class_{k}": synthetic_pairs(TINY_EXAMPLES, TINY_SIZE, seed=k, kind=k)
            for k in range(TINY_CLASSES)}


@pytest.fixture(scope="session")
def tiny_shard_dir(tmp_path_factory, tiny_shard_data):
    """A read-only folder of 6 shards ``class_<k>.tfrecord.gzip``, 8 examples of 32 px each."""
    directory = tmp_path_factory.mktemp("tiny_shards")
    for name, (images, masks) in tiny_shard_data.items():
        write_shard(directory / (name + SHARD_SUFFIX), zip(images, masks))
    return directory
