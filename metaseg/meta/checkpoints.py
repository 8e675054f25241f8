"""metaseg checkpoints: every bucket of state, ``config.json``, and reading them back.

A checkpoint directory holds ``model.ckpt-<iteration>`` files (the newest few and the
lowest-loss one, written by ``saving.py``), the usual ``checkpoint`` index, and
``config.json``, the resolved run configuration. A checkpoint stores the trainable weights,
the non-trainable weights (batch-norm statistics and the dropout seed state, i.e. the RNG
state), the inner optimiser's state and the iteration counter, by position in the model's
variable lists; ``config.json`` says which model they belong to and is checked before
anything is restored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Tuple

import keras
import tensorflow as tf
from absl import logging

from metaseg import checkpoint_reader
from metaseg.config import RunConfig
from metaseg.errors import CheckpointError, MetasegError

CONFIG_FILE = "config.json"
CHECKPOINT_NAME = "model.ckpt"
ITERATION_KEY = "iteration/.ATTRIBUTES/VARIABLE_VALUE"


class MetaState:
    """The variables one meta-training run owns, and their checkpoint."""

    def __init__(self, model: keras.Model, opt_state):
        net = getattr(model, "logits_model", model)
        self.trainable = list(net.trainable_variables)
        self.non_trainable = list(net.non_trainable_variables)
        self.optimizer = [tf.Variable(t, trainable=False) for t in tf.nest.flatten(opt_state)]
        self._opt_structure = opt_state
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            trainable=self.trainable, non_trainable=self.non_trainable,
            optimizer=self.optimizer, iteration=self.iteration)

    @property
    def opt_structure(self):
        """The optimiser state's structure (its leaves are placeholders)."""
        return self._opt_structure

    def opt_state(self):
        """The optimiser state as the optimiser's NamedTuple of current values."""
        return tf.nest.pack_sequence_as(self._opt_structure, [v.value() for v in self.optimizer])

    def assign_opt_state(self, opt_state) -> None:
        for var, value in zip(self.optimizer, tf.nest.flatten(opt_state), strict=True):
            var.assign(value)


def write_config(directory: str, config: dict) -> None:
    """Write ``config.json`` atomically (temporary name, then rename); on a write error
    (e.g. a full disk) no ``.tmp`` file is left and the error is one CheckpointError."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CONFIG_FILE)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CheckpointError(f"could not write {path}: {e.strerror or e}; free some space "
                              "or choose another --checkpoint directory") from None


def read_config(directory: str) -> Optional[dict]:
    """``config.json`` of ``directory`` as stored (JSON lists, not tuples), or None if absent.

    The one reader of the file: everything that needs a stored configuration starts here
    (``read_run_config`` for a typed ``RunConfig``)."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}); restore it from the run that "
                              "wrote the checkpoint") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a JSON object; restore it from the run that "
                              "wrote the checkpoint")
    return raw


def run_config_from_dict(raw: dict, where: str) -> RunConfig:
    """A RunConfig from a stored config.json, ignoring (and logging) fields it does not know,
    e.g. values a newer metaseg stored beside the run's settings; missing fields take
    today's defaults."""
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    sections = RunConfig.sections()
    kept, ignored = {}, []
    for name, value in raw.items():
        if name not in fields:
            ignored.append(name)
        elif name in sections and isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(sections[name])}
            kept[name] = {k: v for k, v in value.items() if k in known}
            ignored += [f"{name}.{k}" for k in value if k not in known]
        else:
            kept[name] = value
    if ignored:
        logging.info("%s: fields not used to rebuild the model: %s", where, ", ".join(ignored))
    try:
        return RunConfig.from_json(json.dumps(kept))
    except MetasegError as e:
        raise CheckpointError(f"{where}/{CONFIG_FILE}: {e}") from None


def read_run_config(directory: str) -> Optional[RunConfig]:
    """``config.json`` of ``directory`` as a ``RunConfig`` (see ``run_config_from_dict``)."""
    raw = read_config(directory)
    return None if raw is None else run_config_from_dict(raw, directory)


def _normalised(value):
    """``value`` as config.json stores it (tuples become lists), so a setting read back
    from the file compares equal to the same setting of a live config."""
    return json.loads(json.dumps(value, sort_keys=True))


def check_same_settings(directory: str, stored: dict, current: dict, keys) -> None:
    """Raise CheckpointError naming every setting under ``keys`` that differs."""
    stored, current = _normalised(stored), _normalised(current)
    differences = []
    for key in keys:
        old, new = stored.get(key, {}), current.get(key, {})
        if not isinstance(old, dict) or not isinstance(new, dict):
            old, new = {key: old}, {key: new}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                differences.append(f"{name}: checkpoint {old.get(name)!r} vs now {new.get(name)!r}")
    if differences:
        raise CheckpointError(
            f"checkpoint directory {directory} was written by a different model configuration "
            f"({'; '.join(differences)}); use the same flags or another --checkpoint directory")


def latest(directory: str) -> Optional[str]:
    """Path prefix of the newest metaseg checkpoint in ``directory``, or None."""
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


def is_metaseg_checkpoint(directory: str) -> bool:
    """True when ``directory`` holds a checkpoint written by metaseg (not the TF1 code)."""
    prefix = latest(directory)
    if prefix is None:
        return False
    return ITERATION_KEY in checkpoint_reader.variable_shapes(prefix)


def restore_weights(model: keras.Model, directory: str, *, skip_final_layer: bool = False):
    """Load the model weights (trainable and non-trainable) of the newest checkpoint.

    ``skip_final_layer`` keeps the model's own final 1x1 convolution (the original's
    ``--do_not_restore_final_layer_weights``). Returns the iteration the checkpoint was
    written at.
    """
    prefix = latest(directory)
    if prefix is None:
        raise CheckpointError(f"no checkpoint found in {directory}; pass the directory that "
                              "meta-training wrote with --checkpoint")
    net = getattr(model, "logits_model", model)
    values = checkpoint_reader.read_tensors(prefix)  # every value read: no half-restore
    skip = set()
    if skip_final_layer:
        final = [id(v) for v in _final_layer_variables(model)]
        skip = {i for i, v in enumerate(net.trainable_variables) if id(v) in final}
    for bucket, variables in (("trainable", net.trainable_variables),
                              ("non_trainable", net.non_trainable_variables)):
        for i, var in enumerate(variables):
            if bucket == "trainable" and i in skip:
                continue
            key = f"{bucket}/{i}/.ATTRIBUTES/VARIABLE_VALUE"
            if key not in values:
                raise CheckpointError(f"checkpoint {prefix} has no {bucket} variable {i} "
                                      f"({var.path}); it was written for another model")
            value = values[key]
            if tuple(value.shape) != tuple(var.shape):
                raise CheckpointError(
                    f"checkpoint {prefix}: {bucket} variable {i} ({var.path}) has shape "
                    f"{tuple(value.shape)}, the model needs {tuple(var.shape)}; check --rsd "
                    "and --feature_extractor_name against the checkpoint's config.json")
            var.assign(value)
    return int(values[ITERATION_KEY])


def _final_layer_variables(model: keras.Model):
    layer_name = getattr(model, "final_layer_name", "final_layer_weights")
    try:
        return model.get_layer(layer_name).trainable_variables
    except ValueError as e:
        raise CheckpointError(f"model {model.name} has no final layer {layer_name!r} to skip "
                              "(--do_not_restore_final_layer_weights)") from e
