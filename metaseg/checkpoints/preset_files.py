"""Reading presets, keras-hub style folders that rebuild a model by themselves.

A preset folder holds ``config.json`` (the run configuration, read by the one reader of
``config_file``), ``model.weights.h5`` (Keras's ``save_weights`` layout, kernels stored as
float16) and ``metadata.json`` (what the preset is, and ``format_version``). A preset is
named by its folder or, for those shipped in ``metaseg/shipped_presets/``, by its name;
``kaggle://`` and ``hf://`` handles are recognised but never downloaded. Writing presets is
``metaseg.presets``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional

from metaseg import jsonfile
from metaseg.checkpoints.config_file import read_config
from metaseg.checkpoints.layout import CONFIG_FILE
from metaseg.checkpoints.state import final_layer_variables
from metaseg.errors import CheckpointError

FORMAT_VERSION = 1
WEIGHTS_FILE, METADATA_FILE = "model.weights.h5", "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "shipped_presets")
# handle prefix -> (what it names, the URL it would be fetched from, how to fetch it yourself)
HANDLES = {
    "kaggle://": ("a Kaggle Models preset", "https://www.kaggle.com/models/{}",
                  "kagglehub.model_download('{}')"),
    "hf://": ("a Hugging Face Hub preset", "https://huggingface.co/{}",
              "huggingface-cli download {} --local-dir DIR"),
}


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


def _read_metadata(directory: str) -> dict:
    return jsonfile.read_json(os.path.join(directory, METADATA_FILE),
                              "save the preset again with metaseg preset save", CheckpointError)


def read(directory: str) -> Preset:
    """Check and read a preset folder; CheckpointError (one line) if a file is missing or
    it was written in a newer format than this metaseg reads."""
    missing = [f for f in PRESET_FILES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        raise CheckpointError(f"preset {directory} has no {' or '.join(missing)} (a preset "
                              f"holds {', '.join(PRESET_FILES)}); copy the whole folder again "
                              "or re-save it with metaseg preset save")
    metadata = _read_metadata(directory)
    version = metadata.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"preset {directory}: {METADATA_FILE} has no valid "
                              f"format_version (got {version!r}); re-save the preset")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"preset {directory} has format version {version}; this metaseg "
                              f"reads up to version {FORMAT_VERSION}: upgrade metaseg")
    return Preset(directory, read_config(directory), metadata)


def load_weights(model, preset: Preset, *, skip_final_layer: bool = False) -> None:
    """Load the preset's weights into ``model`` (built for its config); CheckpointError if
    the model's layers do not match. ``skip_final_layer`` keeps the model's final layer."""
    kept = [(v, v.numpy()) for v in final_layer_variables(model)] if skip_final_layer else []
    try:
        model.load_weights(preset.weights_path)
    except (ValueError, KeyError, OSError) as e:
        reason = " ".join(str(e).split())[:300]
        raise CheckpointError(f"preset {preset.directory}: {WEIGHTS_FILE} does not fit the "
                              f"model ({reason}); the preset was saved for another "
                              "architecture than its config.json builds, or is damaged") from None
    for variable, value in kept:
        variable.assign(value)
