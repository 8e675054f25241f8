"""The names in a checkpoint folder, and the newest checkpoint a folder lists.

A metaseg checkpoint folder (meta-training's ``--checkpoint``, a ``--save_fine_tuned_checkpoints``
task folder, the ``model/`` folder of ``metaseg adapt --output``) holds::

    model.ckpt-<N>.index, model.ckpt-<N>.data-*   one checkpoint (TensorFlow's object-based
                                                 format), N = meta-iteration or steps
    checkpoint                                   TensorFlow's index of the checkpoints kept,
                                                 written last: what it lists is complete
    checkpoint_losses.json                       the mean training loss of each one kept
                                                 (meta-training and joint training)
    config.json                                  the resolved run configuration
    adaptation.json                              how ``metaseg adapt`` made the model

A checkpoint holds ``trainable/<i>``, ``non_trainable/<i>`` (batch-norm statistics and the
dropout seed state), ``optimizer/<i>`` (the inner optimiser's state; absent in fine-tuned and
joint-training checkpoints) and ``iteration``, by position in the model's variable lists.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import tensorflow as tf

CONFIG_FILE = "config.json"
CHECKPOINT_NAME = "model.ckpt"
INDEX_FILE = "checkpoint"  # TensorFlow's list of the checkpoints in a directory
LOSSES_FILE = "checkpoint_losses.json"
ADAPTED_SUBDIR = "model"  # where ``metaseg adapt`` puts the adapted model in --output
ADAPTATION_FILE = "adaptation.json"  # how an adapted model was made, beside config.json
ITERATION_KEY = "iteration/.ATTRIBUTES/VARIABLE_VALUE"
OPTIMIZER_PREFIX = "optimizer/"


def prefix_for(directory: str, iteration: int) -> str:
    """``<directory>/model.ckpt-<iteration>``."""
    return os.path.join(directory, f"{CHECKPOINT_NAME}-{int(iteration)}")


def latest(directory: str) -> Optional[str]:
    """Path prefix of the newest checkpoint the index of ``directory`` lists, or None."""
    if not directory or not os.path.isdir(directory):
        return None
    return tf.train.latest_checkpoint(directory)


def resolve(path: str) -> Tuple[Optional[str], str]:
    """(checkpoint prefix, directory holding its config.json) for a checkpoint directory
    (its newest checkpoint) or one ``model.ckpt-N`` prefix in it; the prefix is None when
    there is no checkpoint."""
    if tf.io.gfile.exists(path + ".index"):
        return path, os.path.dirname(path) or "."
    return latest(path), path
