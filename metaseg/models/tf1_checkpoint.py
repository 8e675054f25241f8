"""Load checkpoints written by the original TF1 code into an EfficientLab.

``path`` is a checkpoint directory (with the ``checkpoint`` index file TF1 savers write,
paths relative as the authors' were, or absolute from another machine) or a checkpoint
prefix. Names come from ``tf1_names`` (derived from the model's structure). Optimiser
slots, power accumulators, EMA shadows and the global step are ignored. Every mismatch
is a CheckpointError in one line: what differs, up to 10 names with the count, and the
flag that probably differs.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import tensorflow as tf
from absl import logging

from metaseg.errors import CheckpointError, ConfigError
from metaseg.models import checkpoint_files
from metaseg.models.efficientlab import EfficientLab
from metaseg.models.tf1_names import ENCODER, FINAL, tf1_variables

MAX_LISTED = 10
# Optimiser/EMA bookkeeping the original's savers wrote next to the weights.
_IGNORED_LEAVES = {"Adam", "Adam_1", "Momentum", "RMSProp", "RMSProp_1",
                   "ExponentialMovingAverage"}
_IGNORED_NAMES = {"beta1_power", "beta2_power", "global_step", "learning_rate"}
_ASPP_POOLED_KERNEL = "decode/spatial_pyramid_pooling/branch_2/conv2d/kernel"
# Where a name lives -> the flag that decides whether/how the model has it.
_FLAG_HINTS = ((r"^efficientnet-b\d+/", "--feature_extractor_name"),
               (r"^decode/spatial_pyramid_pooling/", "--spatial_pyramid_pooling"),
               (r"^decode/decode_skip_connections/", "--skip_decoding"),
               (r"^decode/decode_skip_connections_\d+/", "--rsd"),
               (r"^decode/final_layer_weights/", "--do_not_restore_final_layer_weights"))


def _is_ignored(name: str) -> bool:
    return (name in _IGNORED_NAMES or name.rsplit("/", 1)[-1] in _IGNORED_LEAVES
            or name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"))


def _prefix_from_directory(directory: str) -> Optional[str]:
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as e:  # a malformed 'checkpoint' text file
        raise CheckpointError(f"unreadable 'checkpoint' index file in {directory}: {e}")
    if state is None or not state.model_checkpoint_path:
        return None
    # TF resolves relative paths against the directory; absolute paths written on the
    # authors' machines do not exist here, so fall back to the same file name beside it.
    for candidate in (state.model_checkpoint_path,
                      os.path.join(directory, os.path.basename(state.model_checkpoint_path))):
        if tf.io.gfile.exists(candidate + ".index"):
            return candidate
    return None


def resolve_checkpoint_prefix(path: str) -> str:
    """Directory or prefix -> an existing checkpoint prefix; CheckpointError otherwise."""
    path = str(path)
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if tf.io.gfile.isdir(path):
        prefix = _prefix_from_directory(path)
        if prefix:
            return prefix
        raise CheckpointError(
            f"no checkpoint in directory {path}: expected a 'checkpoint' index file naming "
            "a prefix whose .index and .data files sit in that directory")
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise CheckpointError(f"no checkpoint at {path}: give a checkpoint directory or a "
                          f"prefix such as model.ckpt-1000 (with model.ckpt-1000.index)")


def read_checkpoint_shapes(prefix: str) -> Dict[str, List[int]]:
    """Variable name -> shape of every weight in the checkpoint (bookkeeping dropped)."""
    shapes = checkpoint_files.variable_shapes(prefix)
    return {n: s for n, s in shapes.items() if not _is_ignored(n)}


def is_tf1_checkpoint(path: str) -> bool:
    """True if ``path`` holds a name-based TF1 checkpoint in the original's naming
    (as opposed to an object-based TF2 checkpoint or no checkpoint at all)."""
    try:
        prefix = resolve_checkpoint_prefix(path)
        names = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except Exception:
        return False
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in names:
        return False
    return any(n.startswith(("efficientnet-", "decode/")) for n in names)


def _flag_hint(names: List[str]) -> str:
    flags = []
    for pattern, flag in _FLAG_HINTS:
        if any(re.match(pattern, n) for n in names) and flag not in flags:
            flags.append(flag)
    return f"; check {' / '.join(flags)}" if flags else ""


def _listing(names: List[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    return f"{len(names)} ({shown}{more})"


def _check_names(prefix, wanted, available, unexpected) -> None:
    missing = [n for n in wanted if n not in available]
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        parts.append(f"not in the model: {_listing(unexpected)}")
    raise CheckpointError(f"checkpoint {prefix} does not match the model's architecture: "
                          + "; ".join(parts) + _flag_hint(missing + unexpected))


def _check_backbone(prefix, backbone: str, shapes) -> None:
    found = sorted({n.split("/", 1)[0] for n in shapes if n.startswith("efficientnet-")})
    if found and backbone not in found:
        raise CheckpointError(f"checkpoint {prefix} holds backbone {found[0]} but the "
                              f"model uses {backbone}; set --feature_extractor_name "
                              f"{found[0]}")


def _check_shapes(prefix, wanted, shapes) -> None:
    for name, variable in wanted.items():
        if list(variable.shape) == shapes[name]:
            continue
        if name == _ASPP_POOLED_KERNEL and shapes[name][2] == 1:
            raise CheckpointError(
                f"checkpoint {prefix}: {name} has shape {shapes[name]}: the original's ASPP "
                "pooled branch convolved a [N, C, 1, 1] tensor (a bug); metaseg builds the "
                "documented branch, so original checkpoints trained with "
                "--spatial_pyramid_pooling cannot be loaded")
        raise CheckpointError(
            f"checkpoint {prefix}: {name} has shape {shapes[name]} but the model needs "
            f"{list(variable.shape)}{_flag_hint([name])}")


def load_tf1_checkpoint(model, path: str, *, skip_final_layer: bool = False,
                        encoder_only: bool = False) -> int:
    """Assign a TF1 checkpoint's values to ``model``'s variables; return how many.

    Args:
      model: an EfficientLab.
      path: checkpoint directory or prefix.
      skip_final_layer: leave ``decode/final_layer_weights`` untouched
        (``--do_not_restore_final_layer_weights``).
      encoder_only: restore only the backbone and ignore every other name, e.g. an
        ImageNet EfficientNet checkpoint (``--restore_efficient_net_weights_from``).
    Raises:
      CheckpointError: no checkpoint, names that do not match, or a shape mismatch.
      ConfigError: ``model`` is not an EfficientLab.
    """
    if not isinstance(model, EfficientLab):
        raise ConfigError(f"TF1 checkpoints hold EfficientLab weights; the model is "
                          f"{type(model).__name__} (set --model_name efficientlab)")
    prefix = resolve_checkpoint_prefix(path)
    shapes = read_checkpoint_shapes(prefix)
    named = tf1_variables(model)
    skip = {FINAL} if skip_final_layer else set()
    wanted = {v.name: v.variable for v in named
              if v.section not in skip and (v.section == ENCODER or not encoder_only)}
    _check_backbone(prefix, model.backbone, shapes)
    known = {v.name for v in named}
    unexpected = [] if encoder_only else sorted(n for n in shapes if n not in known)
    _check_names(prefix, list(wanted), shapes, unexpected)
    _check_shapes(prefix, wanted, shapes)
    values = checkpoint_files.read_tensors(prefix)  # all read before any is assigned
    for name, variable in wanted.items():
        variable.assign(values[name])
    logging.info("Restored %d variables from TF1 checkpoint %s", len(wanted), prefix)
    return len(wanted)
