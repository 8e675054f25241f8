"""The embedded few-shot segmentation benchmark: a procedural stand-in for FSS-1000.

Each class is an object kind, a ``(shape family, appearance family)`` combination with its own
shape parameters and two-colour palette (``catalog``); each image shows one object of the class
(the target, 10-40 % of the image, varied in position, scale, rotation, aspect, mirroring,
colour and texture phase) among 1-3 distractor objects of other training classes on a
textured background (``scene``); only the visible target is in the mask. Test classes are
combinations never seen in training, made of families that are (``catalog``), so a model
must adapt from a few examples to tell the target from distractors that share its shape or
its texture. ``writer`` writes it as shards of the original format, byte-identical for a
seed, in parallel over classes.
"""

from metaseg.datasets.synthetic.catalog import MIN_CLASSES, TEST_FRACTION
from metaseg.datasets.synthetic.render import (class_names, render_class, render_examples,
                                               test_class_names, train_class_names)
from metaseg.datasets.synthetic.writer import (MARKER_FILE, TEST_SPLIT_FILE,
                                               TRAIN_SPLIT_FILE, default_cache_dir,
                                               ensure_benchmark, write_benchmark)

__all__ = ["MARKER_FILE", "MIN_CLASSES", "TEST_FRACTION", "TEST_SPLIT_FILE",
           "TRAIN_SPLIT_FILE", "class_names", "default_cache_dir", "ensure_benchmark",
           "render_class", "render_examples", "test_class_names", "train_class_names",
           "write_benchmark"]
