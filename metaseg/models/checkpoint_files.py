"""Reading TensorFlow checkpoint files, metaseg's and the original's TF1 ones, in one place.

The lowest layer of checkpoint handling: it sits in ``models`` because the TF1 importer
(``tf1_checkpoint``, used while building a model with ``--restore_efficient_net_weights_from``)
reads files too; everything above (detecting a folder's kind, restoring, saving,
``config.json``) is ``metaseg.checkpoints``, which re-exports these functions.

A checkpoint is a prefix: ``<prefix>.index`` lists the tensors and ``<prefix>.data-*`` hold
their values. A half-written or truncated checkpoint (a ``.data`` file missing or short, a
damaged index) is a ``CheckpointError`` in one line naming the prefix, whichever command
reads it (``--pretrained``, ``metaseg adapt --init``, ``metaseg info``,
``make_pseudo_tasks.py --backbone``, resuming meta-training).
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import tensorflow as tf

from metaseg.errors import CheckpointError

# What TensorFlow raises for missing, short or corrupt files: an OpError (NotFound,
# DataLoss, ...), or IndexError ("Read less bytes than requested") for a short .data file.
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError)


def damaged(prefix: str, error: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint whose files cannot be read completely."""
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    return CheckpointError(
        f"checkpoint {prefix} is incomplete or damaged ({reason}); its .index and .data "
        "files were probably half-written or truncated (a killed copy or download, a full "
        "disk): copy them again, or point at another checkpoint")


def variable_shapes(prefix: str) -> Dict[str, List[int]]:
    """Name -> shape of every tensor listed in ``<prefix>.index`` (the values are not read)."""
    try:
        shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except READ_ERRORS as e:
        raise damaged(prefix, e) from None
    return {name: list(shape) for name, shape in shapes.items()}


def read_tensors(prefix: str) -> Dict[str, np.ndarray]:
    """Name -> value of every tensor of the checkpoint, all of them read (so a missing or
    short ``.data`` file, or a checksum mismatch, is found before anything is assigned)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except READ_ERRORS as e:
        raise damaged(prefix, e) from None
