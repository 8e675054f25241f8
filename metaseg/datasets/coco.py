"""COCO 2014 instance annotations to binary per-class shards for COCO-20i.

Input layout (COCO 2014 as downloaded from cocodataset.org)::

    coco/train2014/*.jpg     coco/annotations/instances_train2014.json
    coco/val2014/*.jpg       coco/annotations/instances_val2014.json

The 80 categories in category-id order are classes 1-80 (``folds.coco20i_test_indices``);
a shard is named after the category with spaces as underscores (``traffic_light``). An
image is an example of a class when the class's annotated area (``area``, crowd regions
included) is at least ``min_foreground_pixels`` and the mask is still visible at
``image_size``; its mask is the union of the class's instance masks (crowd included),
foreground 255. Decoding polygons and RLEs needs ``pycocotools`` (``pip install
'metaseg[coco]'``), unless a ``mask_fn`` is passed (tests do).
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from metaseg import jsonfile
from metaseg.data import image_io
from metaseg.data.image_lists import ImageList, image_key
from metaseg.data.progress import Progress
from metaseg.data.shards import SHARD_SUFFIX, write_shard
from metaseg.errors import ConfigError, DataError

NUM_CLASSES = 80
SPLITS = {"train": "train2014", "val": "val2014"}
MaskFn = Callable[[dict, int, int], np.ndarray]  # (annotation, H, W) -> 0/1 array [H, W]


def annotation_path(coco_dir: str, split: str) -> str:
    return os.path.join(coco_dir, "annotations", f"instances_{SPLITS[split]}.json")


def require_pycocotools():
    """``pycocotools.mask``; ConfigError saying how to install it if it is missing."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise ConfigError("converting COCO needs pycocotools: pip install 'metaseg[coco]'") \
            from None
    return mask_utils


def pycocotools_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] 0/1 mask of one annotation (polygons, RLE or compressed RLE)."""
    mask_utils = require_pycocotools()
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


class CocoSplit:
    """One annotation file: class names, images and their annotations by image id."""

    def __init__(self, path: str):
        data = jsonfile.read_json(path, "download annotations_trainval2014.zip (again) and "
                                  "unzip it into --coco_dir")
        categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        if len(categories) != NUM_CLASSES:
            raise DataError(f"{path} has {len(categories)} categories, not COCO's "
                            f"{NUM_CLASSES}; pass the instances_*2014.json files")
        self.path = path
        self.class_names = [c["name"].replace(" ", "_") for c in categories]
        self._class_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
        self.images = {im["id"]: im for im in data.get("images", [])}
        self.annotations: Dict[int, List[dict]] = {}
        for ann in data.get("annotations", []):
            self.annotations.setdefault(ann["image_id"], []).append(ann)

    def class_index(self, annotation: dict) -> int:
        return self._class_of[annotation["category_id"]]

    def index_classes(self, image_ids: Sequence[int], min_pixels: int) -> Dict[int, List[int]]:
        """{class 1-80: ids of the images whose annotated area of it is >= min_pixels}."""
        index: Dict[int, List[int]] = {}
        for image_id in image_ids:
            areas: Dict[int, float] = {}
            for ann in self.annotations.get(image_id, []):
                c = self.class_index(ann)
                areas[c] = areas.get(c, 0.0) + float(ann.get("area", 0.0))
            for c, area in sorted(areas.items()):
                if area >= max(min_pixels, 1e-9):
                    index.setdefault(c, []).append(image_id)
        return index


def select_images(split: CocoSplit, image_dir: str,
                  image_list: Optional[ImageList] = None) -> List[int]:
    """Annotated image ids (restricted by ``image_list`` on file stems); DataError naming
    the download if any of their files is missing from ``image_dir``."""
    ids = sorted(i for i in split.images if i in split.annotations)
    if image_list is not None:
        stems = {os.path.splitext(split.images[i]["file_name"])[0]: i for i in ids}
        ids = sorted(stems[s] for s in image_list.select(sorted(stems)))
    missing = [split.images[i]["file_name"] for i in ids
               if not os.path.isfile(os.path.join(image_dir, split.images[i]["file_name"]))]
    if missing:
        raise DataError(f"{len(missing)} of the {len(ids)} images annotated in {split.path} are "
                        f"missing from {image_dir} (first: {missing[0]}); download "
                        f"{os.path.basename(os.path.normpath(image_dir))}.zip from "
                        "cocodataset.org and unzip it there")
    return ids


def _pairs(split: CocoSplit, image_dir: str, class_index: int, ids: Sequence[int],
           size: int, mask_fn: MaskFn, written: List[int]):
    """(image uint8 [S, S, 3], mask uint8 [S, S]) of each id where the mask stays visible."""
    for image_id in ids:
        info = split.images[image_id]
        height, width = info["height"], info["width"]
        full = np.zeros((height, width), bool)
        for ann in split.annotations[image_id]:
            if split.class_index(ann) == class_index:
                full |= np.asarray(mask_fn(ann, height, width)) > 0
        mask = np.asarray(Image.fromarray(full.astype(np.uint8) * 255).resize(
            (size, size), Image.NEAREST))
        if mask.any():
            written.append(image_id)
            # The annotation's size decides whether the EXIF orientation applies.
            yield (image_io.load_square_rgb(os.path.join(image_dir, info["file_name"]), size,
                                            (width, height)),
                   mask, image_key(info["file_name"]))  # key: the file stem


def convert_split(split: CocoSplit, image_dir: str, output_dir: str, ids: Sequence[int], *,
                  image_size: int, min_pixels: int, overwrite: bool,
                  pool: concurrent.futures.Executor, mask_fn: MaskFn = pycocotools_mask,
                  what: str = "") -> Dict[str, int]:
    """One shard per class with examples; {class name: examples} (-1: existing, kept)."""
    os.makedirs(output_dir, exist_ok=True)
    index = split.index_classes(ids, min_pixels)

    def job(c):
        path = os.path.join(output_dir, split.class_names[c - 1] + SHARD_SUFFIX)
        if os.path.exists(path) and not overwrite:
            return -1
        written: List[int] = []
        try:
            return write_shard(path, _pairs(split, image_dir, c, index[c], image_size,
                                            mask_fn, written), overwrite=True)
        except DataError:
            if written:
                raise
            return 0  # every mask vanished at image_size: no shard

    progress = Progress(len(index), f"writing {what} shards", unit="shards")
    counts = {}
    for c, n in zip(sorted(index), pool.map(job, sorted(index))):
        if n:
            counts[split.class_names[c - 1]] = n
        progress.update()
    return counts
