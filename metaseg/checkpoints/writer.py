"""Writing checkpoints: complete or not at all, the index last, rotated, losses recorded.

Every metaseg checkpoint (meta-training, joint training, ``--save_fine_tuned_checkpoints``,
``metaseg adapt``) is written by ``Saver.save``:

1. the tensors go to a staging prefix, ``.model.ckpt-N.staging`` (TensorFlow itself stages
   them in ``<that>_temp/`` and merges them into ``.index`` / ``.data-*``);
2. the staged files are renamed to ``model.ckpt-N.*`` (the ``.data`` files first, the
   ``.index`` last), and the files that belong beside it (``config.json``,
   ``adaptation.json``) are written atomically;
3. only then is ``model.ckpt-N`` listed, in ``checkpoint_losses.json`` and finally in the
   ``checkpoint`` index file (both written under a temporary name and renamed).

So a kill or an error at any point leaves the checkpoints listed before loadable, and
lists nothing half-written. A failed write (a full disk, a read-only file system) removes
what it had written and ends in one ``CheckpointError``; staging files and temporary files a
killed run left behind are removed when a run starts and after every save.

Rotation keeps the newest ``keep`` checkpoints plus the one whose training loss (the mean
over the iterations since the checkpoint before it) is the lowest so far: a run that
diverges slowly would otherwise rotate out every healthy checkpoint before its loss turns
NaN. The losses of the kept checkpoints are recorded in ``checkpoint_losses.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
import re
from typing import Dict, List, Mapping, Optional

import tensorflow as tf
from tensorflow.io import gfile

from metaseg.checkpoints.config_file import write_json
from metaseg.checkpoints.layout import (ADAPTATION_FILE, CHECKPOINT_NAME, CONFIG_FILE,
                                        INDEX_FILE, LOSSES_FILE, prefix_for)
from metaseg.data.shards import write_text_atomic
from metaseg.errors import CheckpointError

_NUMBERED = re.compile(re.escape(CHECKPOINT_NAME) + r"-(\d+)$")
STAGING_SUFFIX = ".staging"


@dataclasses.dataclass(frozen=True)
class Saved:
    """One checkpoint on disk."""

    prefix: str  # <directory>/model.ckpt-N
    iteration: int  # N
    loss: Optional[float]  # mean training loss before it (None: not recorded)

    def describe(self) -> str:
        loss = "loss not recorded" if self.loss is None else f"mean training loss {self.loss:.4g}"
        return f"{self.prefix} (meta-iteration {self.iteration}, {loss})"


def _staging_prefix(directory: str, iteration: int) -> str:
    return os.path.join(directory, f".{CHECKPOINT_NAME}-{int(iteration)}{STAGING_SUFFIX}")


def stale_files(directory: str) -> List[str]:
    """What interrupted writes leave in a checkpoint directory: staging files, TensorFlow's
    ``model.ckpt-N_temp/`` folders, and the temporary files of atomic writes."""
    patterns = [f".{CHECKPOINT_NAME}-*{STAGING_SUFFIX}*", f"{CHECKPOINT_NAME}-*_temp",
                f"{INDEX_FILE}.tmp*"]  # TensorFlow's own index writer (older metaseg)
    for name in (INDEX_FILE, CONFIG_FILE, LOSSES_FILE, ADAPTATION_FILE):
        patterns += [f"{name}.*.tmp", f"{name}.tmp"]
    return sorted({p for pattern in patterns
                   for p in gfile.glob(os.path.join(directory, pattern))})


def remove_stale(directory: str) -> None:
    for path in stale_files(directory):
        _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(tf.errors.OpError):  # gone already
        if gfile.isdir(path):
            gfile.rmtree(path)
        elif gfile.exists(path):
            gfile.remove(path)


def _remove_checkpoint(prefix: str) -> None:
    for path in gfile.glob(glob.escape(prefix) + ".*") + [prefix + "_temp"]:
        _remove(path)


def _publish(staging: str, prefix: str) -> None:
    """Rename the staged checkpoint's files to ``prefix``: the data first, the index last."""
    data = gfile.glob(glob.escape(staging) + ".data-*")
    for path in data + [staging + ".index"]:
        gfile.rename(path, prefix + path[len(staging):], overwrite=True)


def _read_text(path: str) -> Optional[str]:
    with contextlib.suppress(OSError, tf.errors.OpError):
        with gfile.GFile(path) as f:
            return f.read()
    return None


def _put_back(directory: str, previous: Mapping[str, Optional[str]]) -> None:
    """The files beside the checkpoints as they were before a failed save (best effort: the
    failure may be a full disk)."""
    for name, text in previous.items():
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError, tf.errors.OpError):
            if text is None:
                _remove(path)
            elif _read_text(path) != text:
                write_text_atomic(path, text, _as_is)


def listed(directory: str) -> List[Saved]:
    """The checkpoints the index file of ``directory`` lists, oldest first."""
    state = tf.train.get_checkpoint_state(directory) if gfile.isdir(directory) else None
    names = [os.path.basename(p) for p in (state.all_model_checkpoint_paths if state else [])]
    if state and state.model_checkpoint_path and \
            os.path.basename(state.model_checkpoint_path) not in names:
        names.append(os.path.basename(state.model_checkpoint_path))
    losses = _read_losses(directory)
    saved = [Saved(os.path.join(directory, n), int(m.group(1)), losses.get(n))
             for n in names if (m := _NUMBERED.match(n))]
    return sorted(saved, key=lambda s: s.iteration)


def _read_losses(directory: str) -> Dict[str, float]:
    try:
        with gfile.GFile(os.path.join(directory, LOSSES_FILE)) as f:
            raw = json.load(f)
    except (OSError, ValueError, tf.errors.OpError):
        return {}  # absent (a run of an older metaseg) or unreadable: rotate by age only
    return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))} \
        if isinstance(raw, dict) else {}


def lowest_loss(saved: List[Saved]) -> Optional[Saved]:
    """The checkpoint with the lowest recorded finite loss (the newest of equals)."""
    finite = [s for s in saved if s.loss is not None and math.isfinite(s.loss)]
    return min(reversed(finite), key=lambda s: s.loss) if finite else None


def to_keep(saved: List[Saved], keep: int) -> List[Saved]:
    """The newest ``keep`` of ``saved`` (oldest first) plus the lowest-loss one."""
    kept = saved[-keep:]
    best = lowest_loss(saved)
    if best is not None and best not in kept:
        kept = [best] + kept
    return kept


class Saver:
    """Writes ``checkpoint`` (a ``tf.train.Checkpoint``) as ``<directory>/model.ckpt-N``,
    keeping ``keep`` of them (plus the lowest-loss one).

    ``save_counter``: write the checkpoint's save counter too, as tf.train.CheckpointManager
    did (meta-training, joint training, adapted models), so that old and new checkpoints
    restore alike; fine-tuned checkpoints never had one."""

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, keep: int, *,
                 save_counter: bool = True):
        self.checkpoint, self.directory, self.keep = checkpoint, directory, keep
        if save_counter:
            checkpoint.save_counter  # pylint: disable=pointless-statement

    def save(self, iteration: int, loss: Optional[float] = None,
             beside: Optional[Mapping[str, dict]] = None) -> Saved:
        """Write checkpoint ``iteration`` (its ``loss`` is recorded for rotation) and the JSON
        files ``beside`` it ({file name: JSON-able value}, e.g. config.json), then list it."""
        before = listed(self.directory)
        prefix = prefix_for(self.directory, iteration)
        new = Saved(prefix, int(iteration), None if loss is None else float(loss))
        others = [s for s in before if s.iteration != new.iteration]
        kept = to_keep(others + [new], self.keep)
        staging = _staging_prefix(self.directory, iteration)
        unlisted = len(others) == len(before)  # model.ckpt-N is not (or no longer) listed
        previous = {name: _read_text(os.path.join(self.directory, name))
                    for name in [*(beside or {}), LOSSES_FILE]}  # put back if this fails
        try:
            gfile.makedirs(self.directory)
            _remove_checkpoint(staging)
            self.checkpoint.write(staging)
            if not unlisted:  # replacing a listed checkpoint: unlist it first
                self._write_index(others)
                unlisted = True
            _publish(staging, prefix)
            for name, value in (beside or {}).items():
                write_json(os.path.join(self.directory, name), value, _as_is)
            self._write_index(kept)
        except BaseException as e:  # a full disk, or Ctrl-C: leave nothing half-written
            _remove_checkpoint(staging)
            if unlisted:
                _remove_checkpoint(prefix)
            _put_back(self.directory, previous)
            remove_stale(self.directory)
            if isinstance(e, (tf.errors.OpError, OSError)):
                newest = others[-1].describe() if others else "none"
                raise CheckpointError(
                    f"could not write checkpoint {prefix}: {_reason(e)}; nothing of it was "
                    f"left behind; the newest complete checkpoint is {newest}; free some "
                    "space (or choose another --checkpoint) and rerun the same command to "
                    "resume") from None
            raise
        for old in others:
            if old not in kept:
                _remove_checkpoint(old.prefix)
        remove_stale(self.directory)
        return new

    def _write_index(self, kept: List[Saved]) -> None:
        """The losses file, then TensorFlow's index file (text protobuf), both atomically;
        an index of nothing is no index file."""
        losses = {os.path.basename(s.prefix): s.loss for s in kept if s.loss is not None}
        losses_path = os.path.join(self.directory, LOSSES_FILE)
        if losses or gfile.exists(losses_path):
            write_json(losses_path, losses, _as_is)
        index = os.path.join(self.directory, INDEX_FILE)
        if not kept:
            _remove(index)
            return
        names = [json.dumps(os.path.basename(s.prefix)) for s in kept]
        write_text_atomic(index, "".join(
            [f"model_checkpoint_path: {names[-1]}\n"]
            + [f"all_model_checkpoint_paths: {n}\n" for n in names]), _as_is)


def _as_is(path: str, error: OSError) -> OSError:
    del path
    return error  # Saver.save reports it, saying what is left on disk


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split())[:200] or type(error).__name__


class Snapshot:
    """Adapted states (tensors, not the model's variables) written in the checkpoint layout,
    as ``--save_fine_tuned_checkpoints`` does (``<dir>/<task>/<sample>/model.ckpt-<steps>``,
    loadable by ``restore_weights``). The variables the values are copied into are made
    once, on the first save."""

    def __init__(self):
        self._variables = None

    def save(self, directory: str, trainable, non_trainable, steps: int,
             config: Optional[dict] = None) -> Saved:
        """Write one checkpoint of ``trainable`` / ``non_trainable`` (lists of tensors) at
        ``steps`` into ``directory`` (replacing what it held), ``config`` as its config.json."""
        if self._variables is None:
            shadow = [[tf.Variable(t, trainable=False) for t in values]
                      for values in (trainable, non_trainable)]
            iteration = tf.Variable(0, dtype=tf.int64)
            self._variables = (shadow[0] + shadow[1], iteration, tf.train.Checkpoint(
                trainable=shadow[0], non_trainable=shadow[1], iteration=iteration))
        variables, iteration, checkpoint = self._variables
        for var, value in zip(variables, list(trainable) + list(non_trainable), strict=True):
            var.assign(value)
        iteration.assign(steps)
        return Saver(checkpoint, directory, keep=1, save_counter=False).save(
            steps, beside=None if config is None else {CONFIG_FILE: config})
