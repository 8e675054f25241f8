"""Checkpoints: the one owner of the checkpoint layout.

* ``layout``: the file names of a checkpoint folder, and the newest checkpoint it lists;
* ``detect``: what kind of checkpoint a path is (``detect(path) -> Found``: a meta-training
  run, an adapted model, a fine-tuned checkpoint, a TF1 checkpoint of the original code, a
  preset, or none), with the prefix to load;
* ``state``: ``MetaState`` (model weights, optimiser slots, iteration as one
  ``tf.train.Checkpoint``), restoring it (resume) or the weights alone;
* ``writer``: saving, atomically (tensors staged, the ``checkpoint`` index written last),
  rotation keeping the lowest-loss checkpoint;
* ``config_file``: ``config.json`` (one reader, one rule, one writer) and the JSON beside it;
* ``preset_files``: reading presets; ``sources``: opening any of these and loading it into a
  model, and saving adapted models.

The package sits above ``metaseg.models`` (TF1 checkpoints, and the low-level reader
``metaseg.models.checkpoint_files`` it re-exports) and below ``metaseg.meta``,
``evaluation``, ``pipeline`` and ``cli``, none of which it imports.
"""

from metaseg.checkpoints.config_file import (UHO_LEARNING_RATE, UHO_STEPS, check_same_settings,
                                             read_adaptation, read_config, read_run_config,
                                             run_config_from_dict, uho_values, write_config,
                                             write_json)
from metaseg.checkpoints.detect import Found, Kind, detect
from metaseg.checkpoints.layout import (ADAPTATION_FILE, ADAPTED_SUBDIR, CHECKPOINT_NAME,
                                        CONFIG_FILE, INDEX_FILE, ITERATION_KEY, LOSSES_FILE,
                                        latest, prefix_for, resolve)
from metaseg.checkpoints.preset_files import Preset
from metaseg.checkpoints.sources import (Source, architecture, build_and_restore, iteration_of,
                                         load_into, open_checkpoint, published_config,
                                         save_adapted, tf1_model_config)
from metaseg.checkpoints.state import (MetaState, final_layer_variables, read_iteration,
                                       restore_state, restore_weights)
from metaseg.checkpoints.writer import (Saved, Saver, Snapshot, listed, lowest_loss,
                                        remove_stale, stale_files, to_keep)
from metaseg.models.checkpoint_files import damaged, read_tensors, variable_shapes

__all__ = [
    "ADAPTATION_FILE", "ADAPTED_SUBDIR", "CHECKPOINT_NAME", "CONFIG_FILE", "Found",
    "INDEX_FILE", "ITERATION_KEY", "Kind", "LOSSES_FILE", "MetaState", "Preset", "Saved",
    "Saver", "Snapshot", "Source", "UHO_LEARNING_RATE", "UHO_STEPS", "architecture",
    "build_and_restore", "check_same_settings", "damaged", "detect", "final_layer_variables",
    "iteration_of", "latest", "listed", "load_into", "lowest_loss", "open_checkpoint",
    "prefix_for", "published_config", "read_adaptation", "read_config", "read_iteration",
    "read_run_config", "read_tensors", "remove_stale", "resolve", "restore_state",
    "restore_weights", "run_config_from_dict", "save_adapted", "stale_files",
    "tf1_model_config", "to_keep", "uho_values", "variable_shapes", "write_config",
    "write_json",
]
