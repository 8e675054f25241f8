"""``metaseg_synthetic``: the embedded procedural benchmark (``metaseg.datasets.synthetic``).

Generated locally (no download), deterministically: a config's examples are byte-identical to
the shards ``data_tools/make_synthetic_fss.py`` (or ``--dataset synthetic``) writes for the
same classes, examples, size and seed, in the same order. Splits ``train`` and ``test``
are the benchmark's own (held-out shape/appearance combinations).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from metaseg.datasets.synthetic import render
from metaseg.tfds import features


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    num_classes: int = 12
    examples_per_class: int = 10
    image_size: int = 64
    seed: int = 0


def _config(name: str, num_classes: int, examples: int, size: int, what: str):
    return SyntheticConfig(name=name, num_classes=num_classes, examples_per_class=examples,
                           image_size=size, description=f"{num_classes} classes x {examples} "
                           f"images at {size} px, seed 0: {what}")


class MetasegSynthetic(tfds.core.GeneratorBasedBuilder):
    """The procedurally generated few-shot segmentation benchmark of metaseg (not photos)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release (synthetic generator version 1)."}
    BUILDER_CONFIGS = [
        _config("tiny", 12, 10, 64, "for tests"),
        _config("quickstart", 100, 10, 64, "the README quickstart's benchmark"),
        _config("full", 1000, 10, 224, "FSS-1000's shape (1000 classes, 24 % held out)"),
    ]
    DEFAULT_CONFIG_NAME = "tiny"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__, features=features.features(self.builder_config.image_size),
            homepage="https://github.com/ml4ai/mliis", disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        c = self.builder_config
        names = render.class_names(c.num_classes, c.seed)
        test = set(render.test_class_names(c.num_classes, c.seed))
        return {"train": self._generate_examples([n for n in names if n not in test]),
                "test": self._generate_examples(sorted(test))}

    def _generate_examples(self, class_names):
        c = self.builder_config
        index = {n: i for i, n in enumerate(render.class_names(c.num_classes, c.seed))}
        for name in class_names:
            images, masks = render.render_class(index[name], c.num_classes,
                                                c.examples_per_class, c.image_size, c.seed)
            for i, (image, mask) in enumerate(zip(images, masks)):
                yield features.keyed(name, i, image, mask)
