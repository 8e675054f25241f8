"""Copy one network's weights into a variant of it built with other dropout layers.

A Keras ``Dropout`` layer's rate is a Python float read when the graph is traced, and a
network built with rate 0 has no dropout layer at all, so UHO (REFERENCE.md section 8), which
searches the final-layer dropout rate, rebuilds the network per rate and copies the weights
across. Weights are matched by path (layer names are deterministic); dropout seed states,
whose paths carry a global counter, are matched by the layer that owns them.
"""

from __future__ import annotations

from typing import Dict, Iterator, Tuple

import keras
import numpy as np

from metaseg.models import logits_model


def _layers(model, prefix: str = "") -> Iterator[Tuple[str, object]]:
    """(path, layer) of every layer, nested models included."""
    for layer in model.layers:
        yield prefix + layer.name, layer
        if hasattr(layer, "layers"):
            yield from _layers(layer, f"{prefix}{layer.name}/")


def _seed_states(model) -> Dict[str, object]:
    """{owning layer path: seed-generator state variable} (dropout, stochastic depth)."""
    return {path: layer.seed_generator.state for path, layer in _layers(model)
            if getattr(layer, "seed_generator", None) is not None}


def _by_path(variables, skip_ids) -> Dict[str, object]:
    out = {}
    for var in variables:
        if id(var) in skip_ids:
            continue
        if var.path in out:
            raise ValueError(f"two variables share the path {var.path}; cannot match by path")
        out[var.path] = var
    return out


def copy_weights(source: keras.Model, target: keras.Model, rng: np.random.Generator) -> None:
    """Assign every variable of ``target`` from ``source``.

    Both are the same architecture up to dropout layers (which hold no weights). A seed
    state of a dropout layer only ``target`` has gets a fresh state drawn from ``rng``.
    ValueError if any other variable has no counterpart of the same shape.
    """
    src_net, dst_net = logits_model(source), logits_model(target)
    src_seeds, dst_seeds = _seed_states(src_net), _seed_states(dst_net)
    src = _by_path(src_net.variables, {id(v) for v in src_seeds.values()})
    dst = _by_path(dst_net.variables, {id(v) for v in dst_seeds.values()})
    missing = sorted(set(dst) ^ set(src))
    if missing:
        raise ValueError(f"the networks differ in more than dropout: {missing[:5]}")
    for path, var in dst.items():
        if tuple(var.shape) != tuple(src[path].shape):
            raise ValueError(f"{path}: shape {var.shape} vs {src[path].shape}")
        var.assign(src[path].value)
    for owner, var in dst_seeds.items():
        if owner in src_seeds:
            var.assign(src_seeds[owner].value)
        else:
            fresh = np.zeros(var.shape, np.int64)
            fresh.flat[0] = rng.integers(1, 2**31 - 1)
            var.assign(fresh.astype(var.dtype))
