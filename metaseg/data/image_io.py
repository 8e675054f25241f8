"""Decoding JPEG/PNG files of any size: upright images, binary masks, square arrays.

Every image file metaseg reads goes through :func:`open_image`, which applies the EXIF
orientation (a phone photo stored sideways is read the way viewers show it). The one
exception is an annotated image whose annotation (mask, label map, COCO size) matches
only the stored pixel layout: it was annotated unrotated, so it is read unrotated (logged).

Every mask file (a binary object mask, not a class label map) goes through
:func:`read_mask`, which returns uint8 0/255 or refuses the file naming it; see there for
the rules. Whole images are resized to ``size`` x ``size`` (aspect ratio not kept, as the
FSS-1000 shards and the usual PASCAL-5i pipelines do at this stage): bilinear for images
(antialiased when shrinking), nearest neighbour for label maps so class indices survive.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from absl import logging
from PIL import Image, ImageOps

from metaseg.errors import DataError

MASK_THRESHOLD = 128  # grey levels >= this are foreground in a mask that is not 0/255
_ORIENTATION_TAG = 0x0112


class UnreadableImage(DataError):
    """A file that is not a decodable JPEG/PNG: ``args == (path, reason)``."""

    def __str__(self) -> str:
        return f"{self.args[0]}: {self.args[1]}"


class InvalidMask(UnreadableImage):
    """A decodable mask file that holds no usable binary mask: ``args == (path, reason)``."""


def open_image(path: str, annotated_size: Optional[Tuple[int, int]] = None) -> Image.Image:
    """Fully decoded PIL image, upright by its EXIF orientation.

    Args:
        path: the file.
        annotated_size: (width, height) of the annotation made for this image, if any. When
            it matches the stored pixels but not the upright image, the annotation was made
            on the stored pixels, and they are returned unrotated (with a logged note).
    Raises:
        UnreadableImage for a missing, corrupt or truncated file.
    """
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            stored = im.copy()
            upright = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(path, "corrupt or truncated image: "
                              + " ".join(str(e).split())) from None
    if (annotated_size is not None and upright.size != tuple(annotated_size)
            and stored.size == tuple(annotated_size)):
        logging.warning("%s: EXIF orientation %s not applied: its annotation is %dx%d, the "
                        "stored (unrotated) pixels' size", path,
                        stored.getexif().get(_ORIENTATION_TAG), *annotated_size)
        return stored
    return upright


def _colour_channels(im: Image.Image) -> Tuple[np.ndarray, Optional[np.ndarray], str]:
    """(grey values [H, W], alpha [H, W] or None, what the grey values are) of a mask."""
    if im.mode == "P":  # palette: the colours the user sees (and its transparency)
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    pixels = np.asarray(im)
    alpha = None
    if "A" in im.getbands():
        pixels, alpha = pixels[..., :-1], pixels[..., -1]
    if pixels.ndim == 2:
        return pixels, alpha, "grey"
    if pixels.shape[-1] == 1 or (pixels == pixels[..., :1]).all():
        return pixels[..., 0], alpha, "grey"
    # As the original converter: the first channel. Refused below if the object is elsewhere.
    return pixels[..., 0], alpha, "red channel of a colour mask"


def _binary(values: np.ndarray, path: str, what: str) -> Tuple[np.ndarray, Optional[str]]:
    """uint8 0/255 from grey values by the rules of :func:`read_mask`, and a note."""
    present = set(np.unique(values).tolist())
    if present <= {0, 255}:
        return values.astype(np.uint8), None
    if present <= {0, 1}:
        return (values * 255).astype(np.uint8), f"0/1 label map ({what}): 1 read as foreground"
    top = max(present)
    if values.dtype != np.uint8 and present <= {0, top} and top in (65535, 2 ** 32 - 1):
        return np.where(values > 0, 255, 0).astype(np.uint8), None  # 16/32-bit 0/max
    if top > 255:
        raise InvalidMask(path, f"{what} values up to {top}: not an 8-bit mask; save it with "
                                "0 = background, 255 = foreground")
    foreground = values >= MASK_THRESHOLD
    if not foreground.any():
        examples = ", ".join(str(v) for v in sorted(present - {0})[:5])
        raise InvalidMask(path, f"no {what} value is >= {MASK_THRESHOLD} (non-zero values: "
                                f"{examples}): not a 0/255 mask, and thresholding would leave "
                                "it empty; "
                                "save it with 0 = background, 255 = foreground (one mask per "
                                "class, if it is a label map of several classes)")
    other = int(np.count_nonzero((values != 0) & (values != 255)))
    return (np.where(foreground, 255, 0).astype(np.uint8),
            f"{other} pixels with values other than 0/255 thresholded at {MASK_THRESHOLD} "
            f"({what})")


def read_mask(path: str) -> Tuple[np.ndarray, Optional[str]]:
    """The binary object mask stored in ``path``: uint8 [H, W] in {0, 255}, and a note.

    The note (None for a plain 0/255 mask) says how the file was read, for the caller to
    report naming the file. The rules, the same for every tool:

    - grey 0/255 (or a 1-bit PNG): as stored;
    - a 0/1 label map: 1 is foreground (note);
    - other grey levels (anti-aliased edges, JPEG noise): thresholded at 128 (note with the
      count); refused if no pixel reaches 128 (e.g. a label map 0/1/2): it would be empty;
    - a colour mask: grey if its channels agree, else the first (red) channel, as the
      original converter read FSS-1000 (note); refused if the object is only in the others;
    - a palette PNG: read by its colours (what viewers show), then as above;
    - an alpha channel: ignored if constant; it is the mask (note) if the colour channels
      are constant (an object drawn only in transparency); refused if both vary and
      disagree;
    - the EXIF orientation is applied as for images (``open_image``).
    An all-background file is returned as it is (the caller decides whether to warn).
    Raises:
        UnreadableImage for a file that cannot be decoded; InvalidMask (naming the file and
        what to do) for one that holds no usable binary mask.
    """
    grey, alpha, what = _colour_channels(open_image(path))
    if alpha is not None and alpha.min() != alpha.max():
        if grey.min() == grey.max():
            mask, note = _binary(alpha, path, "alpha channel")
            return mask, (note or "object read from the alpha channel (the colour channels "
                                  "are constant)")
        from_colour, _ = _binary(grey, path, what)
        if not np.array_equal(from_colour, _binary(alpha, path, "alpha channel")[0]):
            raise InvalidMask(path, "its alpha channel and its colours mark different objects; "
                                    "save the mask without transparency (grey, 0 = background, "
                                    "255 = foreground)")
    mask, note = _binary(grey, path, what)
    if what != "grey" and not mask.any():
        raise InvalidMask(path, "colour mask whose red channel is empty: the object is in "
                                "another channel; save the mask grey (0 = background, "
                                "255 = foreground)")
    if what != "grey" and note is None:
        note = f"read the {what}"
    return mask, note


def check_mask_survives(mask: np.ndarray, resized: np.ndarray, path: str) -> None:
    """InvalidMask if resizing ``mask`` to ``resized`` erased its whole object."""
    if mask.any() and not resized.any():
        raise InvalidMask(path, f"its object ({int(np.count_nonzero(mask))} pixels at "
                                f"{mask.shape[1]}x{mask.shape[0]}) vanishes when resized to "
                                f"{resized.shape[-1]}x{resized.shape[-2]}; use a larger "
                                "--image_size or leave the pair out")


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


def load_square_rgb(path: str, size: int,
                    annotated_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """``square_rgb(open_image(path, annotated_size), size)``: uint8 [size, size, 3]."""
    return square_rgb(open_image(path, annotated_size), size)
