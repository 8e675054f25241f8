"""TensorFlow Datasets builders of metaseg's datasets; importing this registers them.

    import metaseg.tfds, tensorflow_datasets as tfds
    tfds.load("metaseg_synthetic/tiny", data_dir=DIR)          # generated, no download
    python -m metaseg.tfds fss1000 --manual_dir fewshot_data --data_dir DIR
    tfds build fss1000 --imports metaseg.tfds --manual_dir fewshot_data --data_dir DIR

- ``metaseg_synthetic`` (configs ``tiny``, ``quickstart``, ``full``): the embedded benchmark;
- ``fss1000`` (manual download; configs ``default``, ``allow_skips``): the authors' split;
- ``pascal5i`` (manual download, VOC 2012 + SBD; configs ``fold0``-``fold3``).

Every example has ``image`` (uint8 [S, S, 3]), ``mask`` (uint8 [S, S, 1], 255 foreground,
0 background) and ``class_name``; splits ``train`` and ``test`` hold disjoint classes.
``python -m metaseg.tfds NAME[/CONFIG] --data_dir DIR [--manual_dir DIR]`` builds one with
metaseg's one-line errors (tfds's own ``tfds build`` of tfds 4.9.8-4.9.10 needs apache-beam
installed to start); ``run_metasegnet.py --dataset tfds:NAME[/CONFIG]
--tfds_data_dir DIR`` meta-trains on it.
"""

from typing import List, Optional, Tuple

from metaseg.quiet import import_tensorflow

import_tensorflow()  # before tensorflow_datasets imports it: no C++ start-up lines on stderr

# pylint: disable=wrong-import-position
from metaseg.data import tfds_source
from metaseg.data.tasks import Task
from metaseg.tfds.fss1000 import Fss1000
from metaseg.tfds.pascal5i import Pascal5i
from metaseg.tfds.synthetic import MetasegSynthetic

BUILDERS = {"fss1000": Fss1000, "metaseg_synthetic": MetasegSynthetic, "pascal5i": Pascal5i}


def list_tasks(dataset: str, data_dir: Optional[str] = None
               ) -> Tuple[List[Task], Optional[List[str]]]:
    """One task per class of a prepared tfds dataset (``--dataset tfds:NAME[/CONFIG]``),
    sorted by name, and the classes of its ``test`` split (None without one); the tasks
    load like shards' (``metaseg.data.tfds_source``), metaseg's builders registered."""
    return tfds_source.list_tasks(dataset, data_dir, registered=sorted(BUILDERS))


__all__ = ["BUILDERS", "Fss1000", "MetasegSynthetic", "Pascal5i", "list_tasks"]
