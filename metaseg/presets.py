"""Presets, keras-hub style: a folder that rebuilds a model by itself, and named ones shipped.

A preset folder holds three files, written together (into a temporary folder renamed into
place, so a preset is only ever complete or absent):

- ``config.json``: the run configuration, as a checkpoint's ``config.json`` (it rebuilds the
  model; UHO's values, when stored, sit beside the settings);
- ``model.weights.h5``: the weights in Keras's ``save_weights`` layout (``load_weights``
  reads it), kernels stored as float16 to halve the size, vectors (biases, batch-norm
  parameters and statistics) as float32; loading casts back to the model's float32;
- ``metadata.json``: what the preset is (architecture, image size, how and on what it was
  trained, UHO values, metaseg version) and ``format_version``.

``load_preset(NAME or DIR)`` rebuilds the model. Names are the presets shipped in
``metaseg/shipped_presets/`` (``metaseg preset list``); ``kaggle://`` and ``hf://`` handles
are recognised but never downloaded: metaseg works offline, so they end in one line naming
what would have been downloaded. Wherever a checkpoint is accepted (``metaseg adapt --init``,
``metaseg info``, ``run_metasegnet.py --pretrained --checkpoint``), a preset folder or name
is too (``metaseg/cli/checkpoint.py``).

This module imports TensorFlow only in the functions that build or write models.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional

from metaseg.errors import CheckpointError

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.json", "model.weights.h5", "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped_presets")
# handle prefix -> (what it names, the URL it would be fetched from, how to fetch it yourself)
HANDLES = {
    "kaggle://": ("a Kaggle Models preset", "https://www.kaggle.com/models/{}",
                  "kagglehub.model_download('{}')"),
    "hf://": ("a Hugging Face Hub preset", "https://huggingface.co/{}",
              "huggingface-cli download {} --local-dir DIR"),
}
FLOAT16_MIN_NDIM = 2  # arrays of this many dimensions or more (kernels) are stored as float16


@dataclasses.dataclass(frozen=True)
class Preset:
    """A checked preset folder: its config.json and metadata.json as stored."""

    directory: str
    config: dict
    metadata: dict

    @property
    def weights_path(self) -> str:
        return os.path.join(self.directory, WEIGHTS_FILE)

    @property
    def name(self) -> str:
        return self.metadata.get("name") or os.path.basename(os.path.normpath(self.directory))


def shipped() -> Dict[str, str]:
    """{name: folder} of the presets shipped with metaseg, sorted by name."""
    if not os.path.isdir(SHIPPED_DIR):
        return {}
    return {n: os.path.join(SHIPPED_DIR, n) for n in sorted(os.listdir(SHIPPED_DIR))
            if os.path.isfile(os.path.join(SHIPPED_DIR, n, METADATA_FILE))}


def looks_like_preset(path: str) -> bool:
    """True for a folder holding a preset's metadata or weights file (complete or not)."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in (METADATA_FILE, WEIGHTS_FILE))


def refuse_handle(handle: str) -> None:
    """CheckpointError (one line) for a ``kaggle://`` / ``hf://`` handle; no-op otherwise."""
    for prefix, (what, url, fetch) in HANDLES.items():
        if handle.startswith(prefix):
            rest = handle[len(prefix):].strip("/")
            raise CheckpointError(
                f"{handle} names {what}; metaseg downloads nothing (it works offline), so "
                f"{url.format(rest)} was not fetched: download it yourself (e.g. "
                f"{fetch.format(rest)}) and pass the folder")


def find(path: str) -> Optional[Preset]:
    """The preset ``path`` names: a preset folder, or the name of a shipped preset (when no
    folder of that name is a preset). None if it is neither; CheckpointError for a handle
    or a damaged preset folder."""
    refuse_handle(path)
    if looks_like_preset(path):
        return read(path)
    if os.sep not in path and path in shipped():
        return read(shipped()[path])
    return None


def _read_json(directory: str, name: str) -> dict:
    path = os.path.join(directory, name)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"preset {directory}: {name} is not valid JSON ({e}); save the "
                              "preset again with metaseg preset save") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"preset {directory}: {name} must hold a JSON object")
    return value


def read(directory: str) -> Preset:
    """Check and read a preset folder; CheckpointError (one line) if a file is missing or
    it was written in a newer format than this metaseg reads."""
    missing = [f for f in PRESET_FILES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        raise CheckpointError(f"preset {directory} has no {' or '.join(missing)} (a preset "
                              f"holds {', '.join(PRESET_FILES)}); copy the whole folder again "
                              "or re-save it with metaseg preset save")
    metadata = _read_json(directory, METADATA_FILE)
    version = metadata.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"preset {directory}: {METADATA_FILE} has no valid "
                              f"format_version (got {version!r}); re-save the preset")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"preset {directory} has format version {version}; this metaseg "
                              f"reads up to version {FORMAT_VERSION}: upgrade metaseg")
    return Preset(directory, _read_json(directory, CONFIG_FILE), metadata)


def list_presets() -> List[Preset]:
    """The shipped presets, read and checked, by name."""
    return [read(d) for d in shipped().values()]


# --- loading --------------------------------------------------------------------------------

def load_weights(model, preset: Preset, *, skip_final_layer: bool = False) -> None:
    """Load the preset's weights into ``model`` (built for its config); CheckpointError if
    the model's layers do not match. ``skip_final_layer`` keeps the model's final layer."""
    from metaseg.meta import checkpoints  # pylint: disable=import-outside-toplevel
    kept = []
    if skip_final_layer:
        # the layer --do_not_restore_final_layer_weights keeps, as restore_weights finds it
        final = checkpoints._final_layer_variables(model)  # pylint: disable=protected-access
        kept = [(v, v.numpy()) for v in final]
    try:
        model.load_weights(preset.weights_path)
    except (ValueError, KeyError, OSError) as e:
        reason = " ".join(str(e).split())[:300]
        raise CheckpointError(f"preset {preset.directory}: {WEIGHTS_FILE} does not fit the "
                              f"model ({reason}); the preset was saved for another "
                              "architecture than its config.json builds, or is damaged") from None
    for variable, value in kept:
        variable.assign(value)


def load_preset(name_or_dir: str):
    """The model a preset (folder or shipped name) describes, with its weights."""
    from metaseg.cli import checkpoint  # pylint: disable=import-outside-toplevel
    return checkpoint.build_and_restore(checkpoint.open_checkpoint(name_or_dir, "preset"))


# --- saving ---------------------------------------------------------------------------------

def _metaseg_version() -> str:
    import metaseg  # pylint: disable=import-outside-toplevel
    return metaseg.__version__


def metadata_for(config, raw: dict, *, name: str, description: str, trained_on: str,
                 source: str, iteration: Optional[int], num_weights: int) -> dict:
    """metadata.json of a preset of ``config`` (a RunConfig; ``raw`` its config.json)."""
    from metaseg.cli import checkpoint, info  # pylint: disable=import-outside-toplevel
    lr, steps = checkpoint.uho_values(raw)
    meta, data = config.meta, config.data
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "trained_on": trained_on,
        "architecture": info.architecture(config),
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


def _write_json(path: str, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


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
    from metaseg.cli import checkpoint  # pylint: disable=import-outside-toplevel
    directory = os.path.abspath(os.fspath(directory))
    _check_target(directory, overwrite)
    if isinstance(model_or_run_dir, (str, os.PathLike)):
        source = checkpoint.open_checkpoint(os.fspath(model_or_run_dir), "SRC")
        model = checkpoint.build_and_restore(source)
        run_config, raw, iteration = source.config, source.raw, checkpoint.iteration_of(source)
        where = os.path.abspath(source.directory)
        trained_on = trained_on or (source.preset.metadata.get("trained_on", "")
                                    if source.preset else "")
    else:
        if config is None:
            raise CheckpointError("save_preset(model, DIR) needs config=RunConfig (the "
                                  "settings the model was built with)")
        model, run_config, iteration, where = model_or_run_dir, config, None, "a Keras model"
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
        _write_json(os.path.join(tmp, CONFIG_FILE), raw)
        num_weights = int(sum(int(v.numpy().size) for v in model.weights))
        _write_json(os.path.join(tmp, METADATA_FILE), metadata_for(
            run_config, raw, name=name or os.path.basename(directory), description=description,
            trained_on=trained_on or "not recorded", source=where, iteration=iteration,
            num_weights=num_weights))
        _publish(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read(directory)
