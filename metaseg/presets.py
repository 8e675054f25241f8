"""Presets, keras-hub style: a folder that rebuilds a model by itself, and named ones shipped.

A preset folder holds three files (four with a quality calibration), written together (into
a temporary folder renamed into place, so a preset is only ever complete or absent):

- ``config.json``: the run configuration, as a checkpoint's ``config.json`` (it rebuilds the
  model; UHO's values, when stored, sit beside the settings);
- ``model.weights.h5``: the weights in Keras's ``save_weights`` layout (``load_weights``
  reads it), kernels stored as float16 to halve the size, vectors (biases, batch-norm
  parameters and statistics) as float32; loading casts back to the model's float32;
- ``metadata.json``: what the preset is (architecture, image size, how and on what it was
  trained, UHO values, metaseg version) and ``format_version``;
- ``quality.json``, when the source has one: the calibration of the per-mask quality
  estimate (``metaseg.evaluation.quality``), copied so that ``metaseg adapt --init PRESET``
  still writes calibrated estimated IoUs; ``metadata.json``'s ``quality_calibration`` says
  whether it is there.

``load_preset(NAME or DIR)`` rebuilds the model. Names are the presets shipped in
``metaseg/shipped_presets/`` (``metaseg preset list``); ``kaggle://`` and ``hf://`` handles
are recognised but never downloaded: metaseg works offline, so they end in one line naming
what would have been downloaded. Wherever a checkpoint is accepted (``metaseg adapt --init``,
``metaseg info``, ``run_metasegnet.py --pretrained --checkpoint``), a preset folder or name
is too (``metaseg.checkpoints.detect``).

This module writes presets; reading them (``find``, ``read``, ``load_weights``, re-exported
here) is ``metaseg.checkpoints.preset_files``, with the other checkpoint kinds.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import List, Optional

import metaseg
from metaseg import checkpoints
from metaseg.checkpoints.preset_files import (  # noqa: F401  (the reading half, re-exported)
    FORMAT_VERSION, HANDLES, METADATA_FILE, PRESET_FILES, SHIPPED_DIR, WEIGHTS_FILE, Preset,
    find, load_weights, looks_like_preset, read, refuse_handle, shipped)
from metaseg.errors import CheckpointError
from metaseg.evaluation import quality

CONFIG_FILE = checkpoints.CONFIG_FILE
QUALITY_FILE = quality.QUALITY_FILE  # copied when the source has one

FLOAT16_MIN_NDIM = 2  # arrays of this many dimensions or more (kernels) are stored as float16


def list_presets() -> List[Preset]:
    """The shipped presets, read and checked, by name."""
    return [read(d) for d in shipped().values()]


def load_preset(name_or_dir: str):
    """The model a preset (folder or shipped name) describes, with its weights."""
    return checkpoints.build_and_restore(checkpoints.open_checkpoint(name_or_dir, "preset"))


# --- saving ---------------------------------------------------------------------------------

def _metaseg_version() -> str:
    return metaseg.__version__


def metadata_for(config, raw: dict, *, name: str, description: str, trained_on: str,
                 source: str, iteration: Optional[int], num_weights: int) -> dict:
    """metadata.json of a preset of ``config`` (a RunConfig; ``raw`` its config.json)."""
    lr, steps = checkpoints.uho_values(raw)
    meta, data = config.meta, config.data
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "trained_on": trained_on,
        "architecture": checkpoints.architecture(config),
        "model": dataclasses.asdict(config.model),
        "image_size": data.image_size,
        "training": {
            "how": f"meta-trained with {meta.algorithm}"
                   + (f" for {iteration} of {meta.meta_iters} meta-iterations"
                      if iteration is not None else ""),
            "algorithm": meta.algorithm, "meta_iterations": iteration,
            "meta_batch": meta.meta_batch, "train_shots": meta.train_shots,
            "inner_iters": meta.inner_iters, "inner_batch": meta.inner_batch,
            "meta_step": meta.meta_step, "meta_step_final": meta.meta_step_final,
            "seed": meta.seed, "dataset": data.dataset, "data_dir": data.data_dir,
            **({"synthetic": {k: v for k, v in dataclasses.asdict(config.synthetic).items()
                              if k != "cache_dir"}} if data.dataset == "synthetic"
               and not data.data_dir else {}),
        },
        "evaluation": {"shots": config.eval.shots, "steps": config.eval.eval_iters,
                       "learning_rate": config.inner.learning_rate},
        "uho": {"learning_rate": lr, "steps": steps},
        "weights": {"file": WEIGHTS_FILE, "count": num_weights,
                    "stored_as": f"float16 for arrays of {FLOAT16_MIN_NDIM}+ dimensions "
                                 "(kernels), float32 otherwise; loaded as float32"},
        "metaseg_version": _metaseg_version(),
        "saved_from": source,
    }


def _compact_copy(source: str, target: str) -> None:
    """Copy a Keras ``.weights.h5`` with kernels as float16 (gzip-compressed datasets)."""
    import h5py  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name, item):
            if isinstance(item, h5py.Group):
                dst.require_group(name).attrs.update(item.attrs)
                return
            value = item[()]
            if value.dtype == np.float32 and value.ndim >= FLOAT16_MIN_NDIM:
                value = value.astype(np.float16)
            kwargs = dict(compression="gzip", compression_opts=9) if value.ndim else {}
            dst.create_dataset(name, data=value, **kwargs).attrs.update(item.attrs)

        src.visititems(copy)


def _check_target(directory: str, overwrite: bool) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"preset target {directory} is a file; choose a folder name")
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise CheckpointError(f"preset target {directory} already exists and is not empty; "
                              "pass --overwrite to replace it or choose another folder")


def _publish(tmp: str, directory: str) -> None:
    """Rename the finished ``tmp`` folder to ``directory`` (replacing what was there)."""
    old = None
    if os.path.isdir(directory):
        old = f"{tmp}.old"
        os.rename(directory, old)
    try:
        os.rename(tmp, directory)
    except BaseException:
        if old:
            os.rename(old, directory)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def save_preset(model_or_run_dir, directory: str, *, config=None, name: Optional[str] = None,
                description: str = "", trained_on: str = "", overwrite: bool = False) -> Preset:
    """Write a preset of ``model_or_run_dir`` into ``directory``; returns it, read back.

    ``model_or_run_dir``: anything ``metaseg adapt --init`` accepts (a meta-training
    checkpoint folder, a ``metaseg adapt`` output, a TF1 checkpoint, another preset), or a
    Keras model built by ``metaseg.models.build_model``, then with ``config`` (its
    ``RunConfig``). ``trained_on`` says on what data, in words, for the metadata.
    """
    directory = os.path.abspath(os.fspath(directory))
    _check_target(directory, overwrite)
    if isinstance(model_or_run_dir, (str, os.PathLike)):
        source = checkpoints.open_checkpoint(os.fspath(model_or_run_dir), "SRC")
        calibration = quality.read(source.directory)  # a damaged one: refused before building
        model = checkpoints.build_and_restore(source)
        run_config, raw, iteration = source.config, source.raw, checkpoints.iteration_of(source)
        where = os.path.abspath(source.directory)
        trained_on = trained_on or (source.preset.metadata.get("trained_on", "")
                                    if source.preset else "")
    else:
        if config is None:
            raise CheckpointError("save_preset(model, DIR) needs config=RunConfig (the "
                                  "settings the model was built with)")
        model, run_config, iteration, where = model_or_run_dir, config, None, "a Keras model"
        calibration = None
        raw = dataclasses.asdict(config)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.", suffix=".tmp", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make a shipped preset private
        full = os.path.join(tmp, "full.weights.h5")
        model.save_weights(full)
        _compact_copy(full, os.path.join(tmp, WEIGHTS_FILE))
        os.remove(full)
        checkpoints.write_config(tmp, raw)
        num_weights = int(sum(int(v.numpy().size) for v in model.weights))
        metadata = metadata_for(
            run_config, raw, name=name or os.path.basename(directory), description=description,
            trained_on=trained_on or "not recorded", source=where, iteration=iteration,
            num_weights=num_weights)
        metadata["quality_calibration"] = QUALITY_FILE if calibration else None
        if calibration is not None:  # the estimated IoU stays calibrated from the preset
            quality.write(tmp, calibration.value)
        checkpoints.write_json(os.path.join(tmp, METADATA_FILE), metadata)
        _publish(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read(directory)
