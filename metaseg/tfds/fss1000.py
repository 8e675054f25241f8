"""``fss1000``: FSS-1000 (Wei et al., CVPR 2020) from a manual download, split as its authors.

Reads ``manual_dir`` in the FSS-1000 layout, ``<manual_dir>/<class>/<n>.jpg`` + ``<n>.png``
(the mask's first channel), through the shard converter's own reader
(``metaseg.datasets.fss1000.read_class``): the same checks, resizing, mask
rules, seeded per-class order and bad-pair handling, so each class holds what its shard
would. Splits: the authors' 760 training and 240 test classes (the lists shipped in
``metaseg/resources``). Config ``default`` stops, listing them, if any file had to be
skipped (the converter's default); ``allow_skips`` leaves them out with a warning each
(the converter's ``--allow_skips``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import List, Sequence

import tensorflow_datasets as tfds
from absl import logging

from metaseg.data.tasks import name_list, read_class_list
from metaseg.datasets.fss1000 import ConvertOptions, find_class_dirs, read_class
from metaseg.errors import DataError
from metaseg.resources import FSS1000_TEST_CLASSES, FSS1000_TRAIN_CLASSES, resource_path
from metaseg.tfds import features

HOMEPAGE = "https://github.com/HKUSTCV/FSS-1000"
LAYOUT = "<class>/<n>.jpg + <n>.png"
MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
FSS-1000 is not downloaded automatically. Get it from {HOMEPAGE} (the download link in its
README: fewshot_data.zip, 1000 class folders of 10 image/mask pairs each), unzip it, and
pass the folder that holds the 1000 class folders ({LAYOUT}) as --manual_dir, e.g.
    python -m metaseg.tfds fss1000 --manual_dir fewshot_data --data_dir DIR
(or tfds build fss1000 --imports metaseg.tfds with the same options).
"""


@dataclasses.dataclass
class Fss1000Config(tfds.core.BuilderConfig):
    image_size: int = 224
    allow_skips: bool = False
    seed: int = 0  # the converter's --seed: the per-class order


def split_classes():
    """{"train": the authors' 760 training classes, "test": their 240 test classes}."""
    return {"train": read_class_list(resource_path(FSS1000_TRAIN_CLASSES)),
            "test": read_class_list(resource_path(FSS1000_TEST_CLASSES))}


def check_layout(manual_dir: str, splits) -> dict:
    """{class name: its folder}; DataError (one line) unless ``manual_dir`` holds exactly the
    class folders the split lists name."""
    hint = (f"pass --manual_dir the folder holding FSS-1000's 1000 class folders ({LAYOUT}), "
            f"from {HOMEPAGE}")
    try:
        dirs = find_class_dirs(manual_dir)
    except DataError as e:
        raise DataError(f"fss1000 manual_dir: {e}") from None
    folders = {os.path.basename(d): d for d in dirs}
    listed = [n for names in splits.values() for n in names]
    missing = [n for n in listed if n not in folders]
    unknown = sorted(set(folders) - set(listed))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the {len(listed)} FSS-1000 classes have no folder "
                         f"({name_list(missing)})")
        if unknown:
            parts.append(f"{len(unknown)} folders are not FSS-1000 classes "
                         f"({name_list(unknown)})")
        raise DataError(f"manual_dir {manual_dir} is not in the FSS-1000 layout: "
                        f"{'; '.join(parts)}; {hint}")
    return folders


class Fss1000(tfds.core.GeneratorBasedBuilder):
    """FSS-1000 few-shot segmentation: 1000 classes x 10 image/mask pairs (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        Fss1000Config(name="default", description="224 px; stop if any file is bad"),
        Fss1000Config(name="allow_skips", allow_skips=True,
                      description="224 px; leave bad files out, with a warning each"),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__, features=features.features(self.builder_config.image_size),
            homepage=HOMEPAGE, disable_shuffling=True,
            citation="Wei, Li, Chen, Tai, Tang: FSS-1000: A 1000-Class Dataset for Few-Shot "
                     "Segmentation. CVPR 2020.")

    def _split_generators(self, dl_manager):
        splits = split_classes()
        folders = check_layout(os.fspath(dl_manager.manual_dir), splits)
        return {split: self._generate_examples(split, [folders[n] for n in names])
                for split, names in splits.items()}

    def _generate_examples(self, split: str, class_dirs: Sequence[str]):
        c = self.builder_config
        options = ConvertOptions(image_size=c.image_size, seed=c.seed)
        skipped: List[tuple] = []
        for class_dir in class_dirs:
            examples, report = read_class(class_dir, options)
            for path, reason in report.skipped:
                logging.warning("fss1000: skipped %s: %s", path, reason)
            skipped += report.skipped
            for path, note in report.notes:  # masks that are not plain 0/255, as read
                logging.info("fss1000: %s: %s", path, note)
            for i, (image, mask, _) in enumerate(examples):
                yield features.keyed(report.name, i, image, mask)
        if skipped and not c.allow_skips:
            path, reason = skipped[0]
            raise DataError(f"fss1000 {split} split: {len(skipped)} files skipped (listed in "
                            f"the warnings above; first {path}: {reason}); fix them, or build "
                            "fss1000/allow_skips to leave them out")
