"""The state a checkpoint holds, and restoring it: the whole meta-training state (resume) or
the model weights alone (evaluation, adaptation, export).

A checkpoint stores the trainable weights, the non-trainable weights (batch-norm statistics
and the dropout seed state, i.e. the RNG state), the inner optimiser's state and the
iteration counter, by position in the model's variable lists (``layout``). Every value is
read before anything is assigned, so a truncated file is one ``CheckpointError`` line and
never a half-restored model.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from metaseg.checkpoints.layout import ITERATION_KEY, resolve
from metaseg.errors import CheckpointError
from metaseg.models.checkpoint_files import read_tensors
from metaseg.models.logits import logits_model


class MetaState:
    """The variables one meta-training run (or one adapted model) owns, and their checkpoint.

    ``opt_state``: the inner optimiser's state (its values are copied into variables of the
    checkpoint's ``optimizer`` bucket), or None for a checkpoint of the weights alone
    (joint training)."""

    def __init__(self, model: keras.Model, opt_state=None):
        net = logits_model(model)
        self.trainable = list(net.trainable_variables)
        self.non_trainable = list(net.non_trainable_variables)
        self.optimizer = [tf.Variable(t, trainable=False) for t in tf.nest.flatten(opt_state)] \
            if opt_state is not None else []
        self._opt_structure = opt_state
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False)
        buckets = dict(trainable=self.trainable, non_trainable=self.non_trainable,
                       iteration=self.iteration)
        if opt_state is not None:
            buckets["optimizer"] = self.optimizer
        self.checkpoint = tf.train.Checkpoint(**buckets)

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


def restore_state(state: MetaState, prefix: str) -> int:
    """Restore every bucket of ``state`` from checkpoint ``prefix`` (resuming meta-training);
    returns the restored iteration. A truncated checkpoint is one CheckpointError line."""
    read_tensors(prefix)  # every value read first: a damaged file is named, nothing assigned
    state.checkpoint.restore(prefix).assert_existing_objects_matched()
    return int(state.iteration.numpy())


def read_iteration(prefix: str) -> int:
    """The ``iteration`` stored in checkpoint ``prefix``."""
    return int(read_tensors(prefix)[ITERATION_KEY])


def restore_weights(model: keras.Model, path: str, *, skip_final_layer: bool = False) -> int:
    """Load the model weights (trainable and non-trainable) of the newest checkpoint of the
    folder ``path`` (or of the ``model.ckpt-N`` prefix ``path``).

    ``skip_final_layer`` keeps the model's own final 1x1 convolution (the original's
    ``--do_not_restore_final_layer_weights``). Returns the iteration the checkpoint was
    written at.
    """
    prefix, _ = resolve(path)
    if prefix is None:
        raise CheckpointError(f"no checkpoint found in {path}; pass the directory that "
                              "meta-training wrote with --checkpoint")
    net = logits_model(model)
    values = read_tensors(prefix)  # every value read: no half-restore
    skip = set()
    if skip_final_layer:
        final = [id(v) for v in final_layer_variables(model)]
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


def final_layer_variables(model: keras.Model, layer_name: Optional[str] = None):
    """The variables of the model's final 1x1 convolution, the layer
    ``--do_not_restore_final_layer_weights`` keeps."""
    layer_name = layer_name or getattr(model, "final_layer_name", "final_layer_weights")
    try:
        return model.get_layer(layer_name).trainable_variables
    except ValueError as e:
        raise CheckpointError(f"model {model.name} has no final layer {layer_name!r} to skip "
                              "(--do_not_restore_final_layer_weights)") from e
