"""``pascal5i``: PASCAL-5i (Shaban et al., 2017) from VOC 2012 + SBD, one config per fold.

Reads ``manual_dir`` as ``data_tools/pascal5i_to_tfrecord.py`` reads ``--voc_dir``
(``metaseg.datasets.voc``: the same layout checks, image selection and binary masks):
``<manual_dir>/JPEGImages/<id>.jpg``, ``<manual_dir>/SegmentationClassAug/<id>.png`` and
``<manual_dir>/ImageSets/Segmentation/val.txt``. Config ``fold<i>``: split ``train`` holds
the training images (SegmentationClassAug minus val.txt) of the 15 training classes, split
``test`` the val.txt images of the fold's 5 test classes (VOC indices 5i+1 .. 5i+5); an
image is an example of every class it shows, with that class's binary mask.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import tensorflow_datasets as tfds

from metaseg.datasets import folds, voc
from metaseg.data.image_lists import ImageList
from metaseg.tfds import features

HOMEPAGE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
PASCAL-5i needs two manual downloads: VOC 2012 (VOCtrainval_11-May-2012.tar from {HOMEPAGE})
and SegmentationClassAug (the SBD-augmented class labels, 10582 training images; e.g.
SegmentationClassAug.zip from the DeepLab/PANet instructions) unzipped into VOC2012/.
Pass VOCdevkit/VOC2012 (holding JPEGImages/, SegmentationClassAug/ and
ImageSets/Segmentation/val.txt) as --manual_dir, e.g.
    python -m metaseg.tfds pascal5i/fold0 --manual_dir VOCdevkit/VOC2012 --data_dir DIR
(or tfds build pascal5i/fold0 --imports metaseg.tfds with the same options).
"""


@dataclasses.dataclass
class Pascal5iConfig(tfds.core.BuilderConfig):
    fold: int = 0
    image_size: int = 224
    min_foreground_pixels: int = 1


class Pascal5i(tfds.core.GeneratorBasedBuilder):
    """PASCAL-5i binary per-class segmentation tasks (manual download: VOC 2012 + SBD)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        Pascal5iConfig(name=f"fold{f}", fold=f, description=(
            f"fold {f}: test classes {', '.join(folds.pascal5i_test_classes(f))}; 224 px"))
        for f in range(folds.NUM_FOLDS)]
    DEFAULT_CONFIG_NAME = "fold0"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__, features=features.features(self.builder_config.image_size),
            homepage=HOMEPAGE, disable_shuffling=True,
            citation="Shaban, Bansal, Liu, Essa, Boots: One-Shot Learning for Semantic "
                     "Segmentation. BMVC 2017.")

    def _split_generators(self, dl_manager):
        voc_dir = os.fspath(dl_manager.manual_dir)
        val_list = voc.check_layout(voc_dir, None)
        ids = voc.split_ids(voc_dir, ImageList.read(val_list))
        test = set(folds.pascal5i_test_classes(self.builder_config.fold))
        train = [c for c in folds.PASCAL_CLASSES if c not in test]
        return {"train": self._generate_examples(voc_dir, ids["train"], train, "train"),
                "test": self._generate_examples(voc_dir, ids["val"], sorted(
                    test, key=folds.PASCAL_CLASSES.index), "val")}

    def _generate_examples(self, voc_dir, ids, class_names, what):
        c = self.builder_config
        options = voc.VocOptions(c.image_size, c.min_foreground_pixels)
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            index = voc.index_classes(voc_dir, ids, options, pool, what)
        for name in class_names:
            class_index = folds.PASCAL_CLASSES.index(name) + 1
            for image, mask, image_id in voc.class_examples(voc_dir, class_index,
                                                            index.get(class_index, []), options):
                yield f"{name}/{image_id}", features.example(name, image, mask)
