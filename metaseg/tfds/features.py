"""The features every metaseg tfds builder writes, and one example in their terms.

``image`` uint8 [S, S, 3] RGB; ``mask`` uint8 [S, S, 1], 255 on the class's foreground and
0 elsewhere (the shard format's convention, so a tfds dataset and the equivalent shards
hold the same bytes); ``class_name`` the few-shot task the example belongs to. Both images
are stored as PNG, which is lossless: what is read back is what the converters write.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds

IMAGE, MASK, CLASS_NAME = "image", "mask", "class_name"
MASK_DOC = ("uint8 [S, S, 1] binary segmentation mask: 255 = foreground (the class named by "
            "class_name), 0 = background")


def features(image_size: Optional[int]) -> tfds.features.FeaturesDict:
    """The feature dict of a dataset stored at ``image_size`` px (None: any square size)."""
    side = image_size
    return tfds.features.FeaturesDict({
        IMAGE: tfds.features.Image(shape=(side, side, 3), dtype=np.uint8, encoding_format="png",
                                   doc="uint8 [S, S, 3] RGB image"),
        MASK: tfds.features.Image(shape=(side, side, 1), dtype=np.uint8, encoding_format="png",
                                  doc=MASK_DOC),
        CLASS_NAME: tfds.features.Text(doc="the class (few-shot task) of the example"),
    })


def example(class_name: str, image: np.ndarray, mask: np.ndarray) -> Dict[str, object]:
    """One example: ``image`` uint8 [S, S, 3], ``mask`` uint8 [S, S] in {0, 255}."""
    return {IMAGE: np.asarray(image, np.uint8), MASK: np.asarray(mask, np.uint8)[..., None],
            CLASS_NAME: class_name}


def keyed(class_name: str, index: int, image, mask) -> Tuple[str, Dict[str, object]]:
    """(a unique key, the example): the ``index``-th example of ``class_name``."""
    return f"{class_name}/{index:05d}", example(class_name, image, mask)
