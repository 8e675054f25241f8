"""Binary-mask morphology and nearest-neighbour upsampling in plain numpy.

scipy is not a dependency, so the opening is built from sliding-window minima and maxima
(erosion and dilation with a square structuring element). The border is padded by
replicating the edge, so a region touching the image border is treated as continuing
beyond it rather than being eaten away from outside.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from metaseg.errors import ConfigError


def _window(mask: np.ndarray, size: int, reduce) -> np.ndarray:
    pad = size // 2
    padded = np.pad(mask, pad, mode="edge")
    return reduce(sliding_window_view(padded, (size, size)), axis=(-2, -1))


def check_opening_size(size: int) -> None:
    """ConfigError unless ``size`` is 0 or 1 (no cleaning) or an odd number >= 3."""
    if size < 0 or (size > 1 and size % 2 == 0):
        raise ConfigError(f"--opening_size must be 0/1 (off) or an odd kernel size >= 3, "
                          f"got {size}")


def binary_opening(mask: np.ndarray, size: int) -> np.ndarray:
    """Erode then dilate with a ``size`` x ``size`` square: removes specks and thin bridges.

    Args:
        mask: bool [H, W].
        size: odd kernel side; 0 or 1 returns the mask unchanged.
    Returns:
        bool [H, W]: every foreground pixel that lies in some ``size`` x ``size`` square
        entirely inside ``mask`` (edge-replicated beyond the border).
    """
    check_opening_size(size)
    mask = np.asarray(mask, dtype=bool)
    if size <= 1:
        return mask
    eroded = _window(mask, size, np.min)
    return _window(eroded, size, np.max) & mask


def upsample_nearest(labels: np.ndarray, factor: int) -> np.ndarray:
    """[h, w] -> [h * factor, w * factor], every cell repeated ``factor`` x ``factor``.

    This is nearest-neighbour resizing for an integer factor (the feature stride), exact
    and without the half-pixel ambiguities of a general resize.
    """
    if factor == 1:
        return labels
    return np.repeat(np.repeat(labels, factor, axis=0), factor, axis=1)
