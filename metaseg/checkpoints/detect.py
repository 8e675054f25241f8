"""What kind of checkpoint a path is: the one place that decides it (``detect``).

Every command that takes a checkpoint (``--pretrained --checkpoint``,
``--continue_training_from_checkpoint``, ``metaseg adapt --init``, ``metaseg info``,
``predict``/``export --model``, ``metaseg preset save``, ``make_pseudo_tasks.py --backbone``,
the app) asks ``detect`` and loads what it found.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Optional

import tensorflow as tf

from metaseg.checkpoints import preset_files
from metaseg.checkpoints.layout import (ADAPTATION_FILE, ADAPTED_SUBDIR, ITERATION_KEY,
                                        OPTIMIZER_PREFIX, resolve)
from metaseg.models.checkpoint_files import variable_shapes
from metaseg.models.tf1_checkpoint import is_tf1_checkpoint, resolve_checkpoint_prefix


class Kind(enum.Enum):
    """What a checkpoint path holds."""

    RUN = "metaseg run"  # meta-training's --checkpoint: weights, optimiser state, config.json
    ADAPTED = "adapted model"  # metaseg adapt --output (or its model/): + adaptation.json
    FINE_TUNED = "fine-tuned"  # weights without optimiser state: --save_fine_tuned_checkpoints
    #                            (and joint training)
    TF1 = "tf1"  # a checkpoint of the original TF1 code (its variable names, no config.json)
    PRESET = "preset"  # a preset folder, or the name of a shipped one (metaseg.presets)
    NONE = "none"  # none of these

    @property
    def is_metaseg(self) -> bool:
        """A checkpoint in metaseg's own layout (``layout``), rebuilt from its config.json."""
        return self in (Kind.RUN, Kind.ADAPTED, Kind.FINE_TUNED)

    @property
    def family(self) -> str:
        """"metaseg", "tf1", "preset" or "none": the ``kind`` adaptation.json records."""
        return "metaseg" if self.is_metaseg else self.value


@dataclasses.dataclass(frozen=True)
class Found:
    """What ``detect`` found at ``path``."""

    kind: Kind
    path: str  # as given
    directory: str  # metaseg: the folder of config.json; TF1: ``path``; preset: its folder
    prefix: Optional[str] = None  # the checkpoint to load (metaseg and TF1)
    preset: Optional[preset_files.Preset] = None  # PRESET: its files, read and checked


def detect(path) -> Found:
    """The kind of checkpoint ``path`` (a folder, a ``model.ckpt-N`` prefix, a preset name)
    holds. Tried in this order: metaseg's layout at ``path``, then in ``path/model/``
    (``metaseg adapt --output``), a TF1 checkpoint, a preset. CheckpointError (one line) for
    a damaged checkpoint index or preset, and for a ``kaggle://`` / ``hf://`` handle."""
    path = os.fspath(path)
    preset_files.refuse_handle(path)  # kaggle:// and hf://: one line, nothing downloaded
    if not os.path.exists(path) and not tf.io.gfile.exists(path + ".index"):
        preset = preset_files.find(path)  # the name of a shipped preset
        if preset is not None:
            return Found(Kind.PRESET, path, preset.directory, preset=preset)
        return Found(Kind.NONE, path, path)
    for candidate in (path, os.path.join(path, ADAPTED_SUBDIR)):
        found = _metaseg(path, candidate)
        if found is not None:
            return found
    if is_tf1_checkpoint(path):
        return Found(Kind.TF1, path, path, resolve_checkpoint_prefix(path))
    preset = preset_files.find(path)
    if preset is not None:
        return Found(Kind.PRESET, path, preset.directory, preset=preset)
    return Found(Kind.NONE, path, path)


def _metaseg(path: str, candidate: str) -> Optional[Found]:
    prefix, directory = resolve(candidate) if os.path.isdir(candidate) or \
        tf.io.gfile.exists(candidate + ".index") else (None, candidate)
    if prefix is None:
        return None
    names = variable_shapes(prefix)  # a damaged index: one line naming the prefix
    if ITERATION_KEY not in names:
        return None  # a TF1 checkpoint, or a TF2 one of something else
    if os.path.exists(os.path.join(directory, ADAPTATION_FILE)):
        kind = Kind.ADAPTED
    elif any(n.startswith(OPTIMIZER_PREFIX) for n in names):
        kind = Kind.RUN
    else:
        kind = Kind.FINE_TUNED
    return Found(kind, path, directory, prefix)
