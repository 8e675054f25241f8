"""Write checkpoints in the original's TF1 naming scheme, as its savers laid them out."""

import os

import numpy as np
import tensorflow as tf

from metaseg.resources import TF1_VARIABLES, resource_path


def read_tsv():
    """[(name, shape list, trainable bool)] in creation order, from the shipped table
    (its first line, a ``#`` comment, says where it came from)."""
    rows = []
    for line in resource_path(TF1_VARIABLES).read_text().splitlines():
        if line.startswith("#"):
            continue
        name, shape, trainable = line.split("\t")
        rows.append((name, [int(s) for s in shape.strip("[]").split(",")], trainable == "1"))
    return rows


def random_value(name, shape, rng):
    """Plausible weights: He-scaled kernels, moving variances positive."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf in ("kernel", "depthwise_kernel"):
        fan_in = shape[0] * shape[1] * (1 if leaf == "depthwise_kernel" else shape[2])
        return rng.normal(0, np.sqrt(2.0 / fan_in), shape)
    if leaf == "gamma":
        return rng.uniform(0.5, 1.5, shape)
    if leaf == "moving_variance":
        return rng.uniform(0.5, 2.0, shape)
    return rng.normal(0, 0.2, shape)  # beta, bias, moving_mean


def random_weights(rows, seed=0):
    rng = np.random.default_rng(seed)
    return {name: random_value(name, shape, rng).astype(np.float32)
            for name, shape, _ in rows}


def save_tf1_checkpoint(directory, weights, *, step=7, adam_slots_for=(), extra=None):
    """Write ``<directory>/model.ckpt-<step>`` with SaveV2 plus a relative 'checkpoint'
    index file; optional Adam slots, power accumulators and global step as TF1 did."""
    os.makedirs(directory, exist_ok=True)
    tensors = dict(weights)
    for name in adam_slots_for:
        tensors[f"{name}/Adam"] = np.zeros_like(weights[name])
        tensors[f"{name}/Adam_1"] = np.ones_like(weights[name])
    if adam_slots_for:
        tensors.update(beta1_power=np.float32(0.0), beta2_power=np.float32(0.99),
                       global_step=np.int64(step))
    tensors.update(extra or {})
    names = sorted(tensors)
    prefix = os.path.join(str(directory), f"model.ckpt-{step}")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.convert_to_tensor(tensors[n]) for n in names])
    with open(os.path.join(str(directory), "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "model.ckpt-{step}"\n'
                f'all_model_checkpoint_paths: "model.ckpt-{step}"\n')
    return prefix
