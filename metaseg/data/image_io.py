"""Decoding JPEG/PNG files of any size into the square arrays shards store.

Whole images are resized to ``size`` x ``size`` (aspect ratio not kept, as the FSS-1000
shards and the usual PASCAL-5i pipelines do at this stage): bilinear for images
(antialiased when shrinking), nearest neighbour for label maps so class indices survive.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from metaseg.errors import DataError


class UnreadableImage(DataError):
    """A file that is not a decodable JPEG/PNG: ``args == (path, reason)``."""

    def __str__(self) -> str:
        return f"{self.args[0]}: {self.args[1]}"


def open_image(path: str) -> Image.Image:
    """Fully decoded PIL image; UnreadableImage for a missing, corrupt or truncated file."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            return im.copy()
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(path, "corrupt or truncated image: "
                              + " ".join(str(e).split())) from None


def square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [size, size, 3] RGB: the whole image resized bilinearly."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def square_labels(labels: Image.Image, size: int, path: str = "label map") -> np.ndarray:
    """uint8 [size, size] class indices of a palette or grey PNG, resized nearest.

    A palette ("P") PNG keeps its indices (not the palette colours): that is how VOC's
    ``SegmentationClass`` and ``SegmentationClassAug`` store classes.
    """
    if labels.mode not in ("P", "L"):
        raise UnreadableImage(path, "label PNG must be 8-bit palette or grey, not mode "
                              f"{labels.mode}")
    if labels.size != (size, size):
        labels = labels.resize((size, size), Image.NEAREST)
    return np.asarray(labels, dtype=np.uint8)


def load_square_rgb(path: str, size: int) -> np.ndarray:
    """``square_rgb(open_image(path), size)``: uint8 [size, size, 3]."""
    return square_rgb(open_image(path), size)
