"""Facts shipped with metaseg, each file opening with a ``#`` line saying where it came from.

- ``fss1000_test_classes.txt``, ``fss1000_train_classes.txt``: the FSS-1000 authors' 240 test
  and 760 training classes (``--test_tasks_file`` for the published evaluation; ``run.sh``
  uses the test list by default).
- ``fpk_test_classes.txt``: the five FP-k classes.
- ``original_flags.md``: the original's flag table (name, type, default, meaning).
- ``efficientlab_b0_rsd24_tf1_variables.tsv``: every TF1 variable of the published
  EfficientLab-B0 ``--rsd 2 4`` (name, shape, trainable), in creation order.

The class lists are read with :func:`metaseg.data.tasks.read_class_list`, which skips the
``#`` line.
"""

import importlib.resources
import pathlib

from metaseg.errors import DataError

FSS1000_TEST_CLASSES = "fss1000_test_classes.txt"
FSS1000_TRAIN_CLASSES = "fss1000_train_classes.txt"
FPK_TEST_CLASSES = "fpk_test_classes.txt"
ORIGINAL_FLAGS = "original_flags.md"
TF1_VARIABLES = "efficientlab_b0_rsd24_tf1_variables.tsv"


def resource_path(name: str) -> pathlib.Path:
    """The path of a shipped file (the package is installed as files, never zipped)."""
    path = pathlib.Path(str(importlib.resources.files(__name__) / name))
    if not path.is_file():
        raise DataError(f"metaseg resource {name} is missing from {path.parent}; "
                                "reinstall metaseg")
    return path
