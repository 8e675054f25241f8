"""``config.json`` (and the other small JSON files beside a checkpoint): one reader, one
writer, one rule for turning a stored file into a ``RunConfig``.

The rule (``run_config_from_dict``): fields this metaseg does not know (values a newer
metaseg or UHO stored beside the settings) are ignored and logged, missing fields take
today's defaults, and anything else that does not validate is one ``CheckpointError``
naming the file. Meta-training, ``--pretrained``, ``metaseg adapt/info/predict/export``,
presets and ``make_pseudo_tasks.py --backbone`` all read the file through ``read_config``.
A resumed run must match the stored ``model`` section (``check_same_settings``); every
other setting (``--meta-iters`` included) may change between runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Tuple

from absl import logging

from metaseg import jsonfile
from metaseg.checkpoints.layout import ADAPTATION_FILE, CONFIG_FILE
from metaseg.config import RunConfig
from metaseg.data.shards import write_text_atomic
from metaseg.errors import CheckpointError, MetasegError

# Where UHO's chosen values are looked up in config.json: these keys at the top level, then
# inside the "uho" section. Absent keys fall back to eval.eval_iters / inner.learning_rate.
UHO_LEARNING_RATE, UHO_STEPS = "uho_learning_rate", "uho_steps"


def _write_failure(path: str, error: OSError) -> CheckpointError:
    return CheckpointError(f"could not write {path}: {error.strerror or error}; free some "
                           "space or choose another --checkpoint directory")


def write_json(path: str, value, failure=_write_failure) -> None:
    """Write ``value`` as sorted, indented JSON atomically (temporary name, then rename); on
    a write error (e.g. a full disk) no temporary file is left and the error is one
    CheckpointError (or ``failure(path, os_error)``)."""
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True), failure)


def write_config(directory: str, config: dict) -> None:
    """Write ``<directory>/config.json`` (``config`` JSON-able) atomically."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise _write_failure(directory, e) from None
    write_json(os.path.join(directory, CONFIG_FILE), config)


def read_json(path: str, what: str) -> Optional[dict]:
    """The JSON object in ``path``, or None if there is no such file; CheckpointError (one
    line) for a file that is unreadable or holds no object."""
    if not os.path.exists(path):
        return None
    return jsonfile.read_json(path, f"restore it from the {what}", CheckpointError)


def read_config(directory: str) -> Optional[dict]:
    """``config.json`` of ``directory`` as stored (JSON lists, not tuples), or None if absent.

    The one reader of the file: everything that needs a stored configuration starts here
    (``read_run_config`` for a typed ``RunConfig``)."""
    return read_json(os.path.join(directory, CONFIG_FILE), "run that wrote the checkpoint")


def read_adaptation(directory: str) -> Optional[dict]:
    """``adaptation.json`` of an adapted model's folder (how ``metaseg adapt`` made it)."""
    return read_json(os.path.join(directory, ADAPTATION_FILE), "metaseg adapt output")


def run_config_from_dict(raw: dict, where: str) -> RunConfig:
    """A RunConfig from a stored config.json, ignoring (and logging) fields it does not know,
    e.g. values a newer metaseg stored beside the run's settings; missing fields take
    today's defaults. ``where``: the file, for messages."""
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
        raise CheckpointError(f"{where}: {e}") from None


def read_run_config(directory: str) -> Optional[RunConfig]:
    """``config.json`` of ``directory`` as a ``RunConfig`` (see ``run_config_from_dict``)."""
    raw = read_config(directory)
    return None if raw is None else run_config_from_dict(
        raw, os.path.join(directory, CONFIG_FILE))


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


def uho_values(raw: dict) -> Tuple[Optional[float], Optional[int]]:
    """(learning rate, steps) UHO stored in config.json, each None if absent."""
    places = [raw, raw.get("uho") if isinstance(raw.get("uho"), dict) else {}]
    lr = next((p[UHO_LEARNING_RATE] for p in places if p.get(UHO_LEARNING_RATE) is not None),
              None)
    steps = next((p[UHO_STEPS] for p in places if p.get(UHO_STEPS) is not None), None)
    return (None if lr is None else float(lr)), (None if steps is None else int(steps))
