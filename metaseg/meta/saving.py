"""Writing meta-training checkpoints: complete or not at all, rotated, losses recorded.

``model.ckpt-N`` is written by TensorFlow's saver (which stages the values in
``model.ckpt-N_temp/`` and then merges them into ``model.ckpt-N.index`` / ``.data-*``) and
only then listed in the ``checkpoint`` index file, so the newest listed checkpoint is always
complete. A failed write (a full disk, a read-only file system) removes what it had written
and ends in one ``CheckpointError``; staging folders and temporary files a killed run left
behind are removed when a run starts and after every save.

Rotation keeps the newest ``keep`` checkpoints plus the one whose meta-training loss (the
mean over the iterations since the checkpoint before it) is the lowest so far: a run that
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
from typing import Dict, List, Optional

import tensorflow as tf
from tensorflow.io import gfile

from metaseg.errors import CheckpointError
from metaseg.meta.checkpoints import CHECKPOINT_NAME, CONFIG_FILE

INDEX_FILE = "checkpoint"  # TensorFlow's list of the checkpoints in a directory
LOSSES_FILE = "checkpoint_losses.json"
_NUMBERED = re.compile(re.escape(CHECKPOINT_NAME) + r"-(\d+)$")


@dataclasses.dataclass(frozen=True)
class Saved:
    """One checkpoint on disk."""

    prefix: str  # <directory>/model.ckpt-N
    iteration: int  # N
    loss: Optional[float]  # mean meta-training loss before it (None: not recorded)

    def describe(self) -> str:
        loss = "loss not recorded" if self.loss is None else f"mean training loss {self.loss:.4g}"
        return f"{self.prefix} (meta-iteration {self.iteration}, {loss})"


def stale_files(directory: str) -> List[str]:
    """What interrupted writes leave in a checkpoint directory: ``model.ckpt-N_temp/``
    staging folders and the ``.tmp`` files of atomic writes."""
    patterns = (f"{CHECKPOINT_NAME}-*_temp", f"{INDEX_FILE}.tmp*", f"{CONFIG_FILE}.tmp",
                f"{LOSSES_FILE}.tmp")
    return sorted(p for pattern in patterns for p in gfile.glob(os.path.join(directory, pattern)))


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


def _write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    try:
        with gfile.GFile(tmp, "w") as f:
            f.write(text)
        gfile.rename(tmp, path, overwrite=True)
    finally:
        _remove(tmp)


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
    """Writes ``checkpoint`` (a ``tf.train.Checkpoint``) as ``<directory>/model.ckpt-N``."""

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, keep: int):
        self.checkpoint, self.directory, self.keep = checkpoint, directory, keep
        # Written too, as CheckpointManager did, so that old and new checkpoints restore alike.
        checkpoint.save_counter  # pylint: disable=pointless-statement

    def save(self, iteration: int, loss: float) -> Saved:
        """Write checkpoint ``iteration``; its ``loss`` is recorded for rotation."""
        before = listed(self.directory)
        prefix = os.path.join(self.directory, f"{CHECKPOINT_NAME}-{iteration}")
        new = Saved(prefix, iteration, float(loss))
        kept = to_keep([s for s in before if s.iteration != iteration] + [new], self.keep)
        try:
            gfile.makedirs(self.directory)
            self.checkpoint.write(prefix)
            self._write_index(kept)
        except BaseException as e:  # a full disk, or Ctrl-C: leave nothing half-written
            if all(s.prefix != prefix for s in before):
                _remove_checkpoint(prefix)
            remove_stale(self.directory)
            if isinstance(e, (tf.errors.OpError, OSError)):
                newest = before[-1].describe() if before else "none"
                raise CheckpointError(
                    f"could not write checkpoint {prefix}: {_reason(e)}; nothing of it was "
                    f"left behind; the newest complete checkpoint is {newest}; free some "
                    "space (or choose another --checkpoint) and rerun the same command to "
                    "resume") from None
            raise
        for old in before:
            if old.iteration != iteration and old not in kept:
                _remove_checkpoint(old.prefix)
        remove_stale(self.directory)
        return new

    def _write_index(self, kept: List[Saved]) -> None:
        """The losses file, then TensorFlow's index file (text protobuf), both atomically."""
        _write_atomically(os.path.join(self.directory, LOSSES_FILE), json.dumps(
            {os.path.basename(s.prefix): s.loss for s in kept if s.loss is not None},
            indent=2, sort_keys=True))
        names = [json.dumps(os.path.basename(s.prefix)) for s in kept]
        _write_atomically(os.path.join(self.directory, INDEX_FILE), "".join(
            [f"model_checkpoint_path: {names[-1]}\n"]
            + [f"all_model_checkpoint_paths: {n}\n" for n in names]))


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split())[:200] or type(error).__name__
