"""Reading the user's image folders: query images and support image/mask pairs (where the
commands write: ``metaseg.cli.output``).

Support folders come in two layouts: flat, with ``x.jpg`` (any non-PNG image format) beside
its mask ``x.png``; or ``images/`` and ``masks/`` subfolders whose files pair by name stem
(any image format in either). Masks are read by ``metaseg.data.image_io.read_mask``, the
rules every tool shares (0/255; 0/1 label maps, grey levels thresholded at 128, colour and
alpha-only masks with a warning naming the file; refused, naming it, when the object would be
lost). A mask of another size than its image is resized (nearest neighbour, with a warning)
only when the aspect ratios agree to 1 %. Images are read upright (EXIF orientation applied,
unless only the unrotated image matches its mask's size) as RGB.

A ``--support`` may also be an annotation export (``metaseg.annotations``: COCO JSON,
LabelMe, CVAT segmentation masks) with one category: :func:`support_examples` turns either
into the same :class:`metaseg.annotations.Example` list, and :func:`read_support_set`
decodes, checks and resizes them by the rules above. An export's image without an object of
the category is skipped, named in a warning (the first ``MAX_NAMED_SKIPS``, the rest
counted; all in adaptation.json); none left is an error.
"""

from __future__ import annotations

import io
import os
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
from absl import logging
from PIL import Image

from metaseg import annotations
from metaseg.data import image_io, mask_to_two_channel, resize_examples
from metaseg.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MASK_EXTENSION = ".png"
ASPECT_TOLERANCE = 0.01  # relative difference of height/width still called "same aspect"
MAX_LISTED = 5
MAX_NAMED_SKIPS = 20  # warning lines naming skipped export images; the rest are counted


def _listing(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def decode_image(path, annotated_size=None, label: Optional[str] = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB, upright (``image_io.open_image``; ``annotated_size`` (w, h) of
    its mask, if any) of a file, or of encoded bytes (``label`` names them); DataError
    naming it if it cannot be decoded."""
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    try:
        return np.asarray(image_io.open_image(source, annotated_size).convert("RGB"))
    except image_io.UnreadableImage as e:
        raise DataError(f"cannot decode image {label or path}: {e.args[1]}") from None


def decode_mask(path: str) -> np.ndarray:
    """uint8 [H, W] in {0, 255} by ``image_io.read_mask`` (how it was read, if not plain
    0/255, is logged as a warning); DataError naming the file if it holds no usable mask."""
    try:
        mask, note = image_io.read_mask(path)
    except image_io.InvalidMask as e:
        raise DataError(f"mask {e}") from None
    except image_io.UnreadableImage as e:
        raise DataError(f"cannot decode image {path}: {e.args[1]}") from None
    if note:
        logging.warning("Support mask %s: %s", path, note)
    return mask


def image_files(directory: str, what: str) -> List[str]:
    """Sorted paths of the image files directly in ``directory`` (other files ignored)."""
    if not os.path.isdir(directory):
        raise DataError(f"{what} folder {directory} does not exist or is not a folder")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(directory, name)))


def query_images(directory: str, what: str = "query") -> List[str]:
    """The images to segment; DataError if there are none or two share a name stem."""
    paths = image_files(directory, what)
    if not paths:
        raise DataError(f"{what} folder {directory} holds no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); nothing to segment")
    stems = [_stem(p) for p in paths]
    clashes = {os.path.basename(p) for p, s in zip(paths, stems) if stems.count(s) > 1}
    if clashes:
        raise DataError(f"{what} folder {directory}: images {_listing(clashes)} share a name "
                        "stem, so their output masks would overwrite each other; rename them")
    return paths


def support_pairs(directory: str) -> List[Tuple[str, str]]:
    """[(image path, mask path)] sorted by stem, in either layout; DataError if unpaired."""
    images_dir, masks_dir = os.path.join(directory, "images"), os.path.join(directory, "masks")
    if os.path.isdir(images_dir) and os.path.isdir(masks_dir):
        images, masks = image_files(images_dir, "support"), image_files(masks_dir, "support")
        layout = "images/ and masks/ subfolders with the same file names (stems)"
    else:
        files = image_files(directory, "support")
        images = [p for p in files if not p.lower().endswith(MASK_EXTENSION)]
        masks = [p for p in files if p.lower().endswith(MASK_EXTENSION)]
        layout = "x.jpg images beside x.png masks, or images/ and masks/ subfolders"
    by_stem_image = {_stem(p): p for p in images}
    by_stem_mask = {_stem(p): p for p in masks}
    if len(by_stem_image) != len(images) or len(by_stem_mask) != len(masks):
        raise DataError(f"support folder {directory}: two images (or two masks) share a name "
                        "stem; keep one file per stem")
    lonely_images = set(by_stem_image) - set(by_stem_mask)
    lonely_masks = set(by_stem_mask) - set(by_stem_image)
    if lonely_images or lonely_masks:
        parts = []
        if lonely_images:
            parts.append(f"images without a mask: {_listing(lonely_images)}")
        if lonely_masks:
            parts.append(f"masks without an image: {_listing(lonely_masks)}")
        raise DataError(f"support folder {directory}: {'; '.join(parts)} (expected {layout})")
    if not by_stem_image:
        raise DataError(f"support folder {directory} holds no image/mask pairs (expected "
                        f"{layout})")
    return [(by_stem_image[s], by_stem_mask[s]) for s in sorted(by_stem_image)]


def check_mask(mask: np.ndarray, image_hw: Tuple[int, int], path: str) -> np.ndarray:
    """Validate mask uint8 [h, w]; return uint8 [H, W] in {0, 255} at the image's size."""
    bad = ~np.isin(mask, (0, 255))
    if bad.any():
        examples = ", ".join(str(v) for v in np.unique(mask[bad])[:5])
        raise DataError(
            f"mask {path} is not binary: {int(bad.sum())} of {mask.size} pixels have values "
            f"other than 0 and 255 (e.g. {examples}); save masks with 0 = background and "
            "255 = foreground (scale a 0/1 label map by 255)")
    (h, w), (height, width) = mask.shape, image_hw
    if (h, w) == (height, width):
        return mask
    if abs((h / w) / (height / width) - 1.0) > ASPECT_TOLERANCE:
        raise DataError(f"mask {path} is {w}x{h} pixels but its image is {width}x{height}, "
                        "a different aspect ratio; save the mask at the image's size")
    logging.warning("Mask %s is %dx%d pixels, its image %dx%d (same aspect ratio): resized "
                    "with nearest neighbour", path, w, h, width, height)
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))


class SupportSource(NamedTuple):
    """What ``--support`` holds: examples to read, and how to name them in reports."""

    kind: str  # "folder", "COCO", "LabelMe" or "CVAT"
    path: str
    category: Optional[str]  # the export's category adapted to (None for a folder)
    examples: List[annotations.Example]
    skipped: List[str]  # export images with no annotation of the category


class SupportSet(NamedTuple):
    """A decoded support set at the model's size, compact: 4 bytes per pixel and shot."""

    images: np.ndarray  # uint8 [n, S, S, 3]
    masks: np.ndarray  # uint8 [n, S, S] in {0, 255}
    names: List[str]  # the image file names, in order (adaptation.json's "support")
    source: SupportSource
    skipped: List[str]  # export images left out: no object of the category


def pair_examples(pairs) -> List[annotations.Example]:
    """[(image path, mask path)] as examples whose masks are read by :func:`decode_mask`."""
    return [annotations.Example(os.path.basename(image), image, image, mask,
                                lambda mask=mask: decode_mask(mask), True)
            for image, mask in pairs]


def support_examples(path: str, category: Optional[str] = None,
                     images_dir: Optional[str] = None) -> SupportSource:
    """The support set ``path`` names: a folder of pairs (``support_pairs``) or an export
    (``annotations.read_export``); DataError/ConfigError naming what is wrong."""
    kind = annotations.detect_format(path)
    if kind == "folder":
        for flag, value in (("--category", category), ("--support_images", images_dir)):
            if value is not None:
                raise ConfigError(f"{flag} applies only to annotation exports (a COCO .json, "
                                  f"a LabelMe or CVAT folder); {path} is a folder of "
                                  f"image/mask pairs: drop {flag}")
        return SupportSource("folder", path, None, pair_examples(support_pairs(path)), [])
    export = annotations.read_export(path, category, images_dir)
    return SupportSource(export.kind, path, export.category, export.examples, export.skipped)


def _report_skipped(source: SupportSource, skipped: List[str], usable: int) -> None:
    """A warning naming each skipped image (up to ``MAX_NAMED_SKIPS``), then the count;
    DataError when nothing is left."""
    what, total = f"{source.kind} {source.path}", usable + len(skipped)
    if not usable:
        raise DataError(f"{what}: none of its {total} images has a "
                        f"{source.category!r} object; choose another --category")
    for name in skipped[:MAX_NAMED_SKIPS]:
        logging.warning("%s: image %s has no %r object: skipped", what, name, source.category)
    if len(skipped) > MAX_NAMED_SKIPS:
        logging.warning("%s: %d more images without a %r object skipped (adaptation.json "
                        "lists them all under support_skipped)", what,
                        len(skipped) - MAX_NAMED_SKIPS, source.category)
    if skipped:
        logging.warning("%s: %d of %d images have a %r object: adapting on those", what,
                        usable, total, source.category)


def read_support_set(source: SupportSource, image_size: int) -> SupportSet:
    """Decode, validate and resize a support set (any kind), in order.

    Images are resized exactly as shards are (bilinear with antialiasing), masks by nearest
    neighbour, to S = ``image_size``. A mask that is empty: kept with a warning for a mask
    file, skipped (and named) for an export's image.
    """
    n, count = len(source.examples), 0
    images = np.zeros((n, image_size, image_size, 3), np.uint8)
    masks = np.zeros((n, image_size, image_size), np.uint8)
    names, skipped = [], list(source.skipped)
    for example in source.examples:
        mask = example.draw()
        if not mask.any():
            if not example.keep_empty:
                skipped.append(example.name)
                continue
            logging.warning("Support mask %s is empty (all background)", example.mask_label)
        image = decode_image(example.image, mask.shape[::-1], example.image_label)
        mask = check_mask(mask, image.shape[:2], example.mask_label)
        small_image, small_mask = resize_examples(image[None], mask[None], image_size)
        try:
            image_io.check_mask_survives(mask, small_mask[0], example.mask_label)
        except image_io.InvalidMask as e:
            raise DataError(f"mask {e}") from None
        images[count], masks[count] = small_image[0], small_mask[0]
        names.append(example.name)
        count += 1
    if source.kind != "folder":
        _report_skipped(source, skipped, count)
    elif not count:
        raise DataError(f"support folder {source.path} holds no image/mask pairs")
    return SupportSet(images[:count], masks[:count], names, source, skipped)


def read_support(pairs, image_size: int):
    """:func:`read_support_set` of image/mask pairs, as float32 images [n, S, S, 3] in
    [0, 255] and float32 one-hot masks [n, S, S, 2] (channel 1 foreground)."""
    support = read_support_set(SupportSource("folder", "", None, pair_examples(pairs), []),
                               image_size)
    return (support.images.astype(np.float32),
            np.asarray(mask_to_two_channel(support.masks), np.float32))
