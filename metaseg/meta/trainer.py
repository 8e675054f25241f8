"""The meta-training driver: outer loop, checkpoints, resume, TensorBoard, progress.

One meta-iteration takes ``meta_batch`` consecutive episodes from the training stream
(element ``j`` of the stream is a pure function of (seed, j)), adapts to each with the
compiled inner loop, and applies the algorithm's outer update to the model's trainable
weights. Because episodes are indexed and the dropout seed state lives in the model's
non-trainable weights (checkpointed), a run resumed from checkpoint ``i`` replays exactly
what an uninterrupted run would have done from iteration ``i`` on.

A meta-iteration is one call of the compiled meta-step (``metaseg.meta.step``), the same
under every ``tf.distribute`` strategy (``--distribution_strategy``; the default strategy on
one device): it spreads the meta-batch over the replicas, carries batch-norm statistics and
optimiser slots between tasks by the ``--carry_over`` policy (``metaseg.meta.carry_over``),
and assigns the outer update only if it is finite. Each worker builds only its own replicas'
episodes, and only the chief writes checkpoints, ``config.json`` and TensorBoard logs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Dict, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from metaseg import checkpoints, distribute
from metaseg.config import InnerConfig, MetaConfig
from metaseg.data import episodes
from metaseg.errors import CheckpointError, MetasegError
from metaseg.meta.adapt import Adapter
from metaseg.meta.algorithms import annealed_meta_step, make_algorithm
from metaseg.meta.carry_over import choose_policy
from metaseg.meta.step import MetaStep
from metaseg.specs import EpisodeSpec

# Settings a resumed run must share with the run that wrote the checkpoint.
RESUME_KEYS = ("model",)

Evaluator = Callable[[keras.Model], Mapping[str, float]]


class NonFiniteLossError(MetasegError):
    """Meta-training produced a NaN or inf; no checkpoint of it is written."""


class MetaTrainer:
    """Meta-trains ``model`` on the tasks of ``store``.

    Args:
      model: the network (its variables are updated in place).
      store: a ``metaseg.data.TaskStore`` of training tasks.
      meta, inner: the meta-training and inner-loop settings.
      checkpoint_dir: where checkpoints, ``config.json`` and TensorBoard logs go.
      total_inner_steps: the ``total`` of the cosine schedule (the eval inner iterations).
      config: the resolved run configuration (JSON-able dict) written beside checkpoints.
      evaluators: name -> callable(model) returning scalars (e.g. {"IoU": 0.6}); run every
        ``meta.eval_interval`` iterations and logged under ``<checkpoint_dir>/<name>``. A
        ``"tasks"`` entry (how many tasks were scored) is not a scalar: the log line says it.
      adapter: the compiled adaptation to use (e.g. the evaluator's, so it is traced once).
      strategy: a ``tf.distribute`` strategy the model was built under (None: the default
        strategy, one device).
    """

    def __init__(self, model: keras.Model, store, *, meta: MetaConfig, inner: InnerConfig,
                 checkpoint_dir: str, total_inner_steps: int, config: Optional[dict] = None,
                 evaluators: Optional[Dict[str, Evaluator]] = None,
                 adapter: Optional[Adapter] = None,
                 strategy: Optional[tf.distribute.Strategy] = None):
        self.model, self.store, self.meta, self.inner = model, store, meta, inner
        self.checkpoint_dir = checkpoint_dir
        self.total_inner_steps = tf.constant(max(int(total_inner_steps), 1))
        self.config = config or {}
        self.evaluators = evaluators or {}
        self.adapter = adapter or Adapter(model, inner)  # share one to trace once
        self.algorithm = make_algorithm(meta.algorithm)
        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        self.is_chief = distribute.is_chief(self.strategy)
        with self.strategy.scope():
            self.state = checkpoints.MetaState(model, self.adapter.initial_state().opt)
        self.carry_over = choose_policy(
            meta.carry_over, meta.reset_state_per_task,
            distributed=distribute.is_distributed(self.strategy),
            replicas=self.strategy.num_replicas_in_sync)
        self._step = MetaStep(self.strategy, self.adapter, self.algorithm, self.state,
                              meta_batch=meta.meta_batch, policy=self.carry_over)
        self._replica_ids = distribute.local_replica_ids(self.strategy)
        self.saver = checkpoints.Saver(self.state.checkpoint, checkpoint_dir,
                                       meta.keep_checkpoints)
        self._writers = {}

    # -- resume ------------------------------------------------------------------------------
    def restore(self, source: Optional[str] = None) -> int:
        """Restore the newest checkpoint of our own directory or, when it holds none, of
        ``source`` (``--continue_training_from_checkpoint``: a directory or one
        ``model.ckpt-N`` prefix in it). Returns the restored iteration (0: nothing)."""
        prefix, directory = checkpoints.latest(self.checkpoint_dir), self.checkpoint_dir
        if prefix is None and source:
            found = checkpoints.detect(source)
            prefix, directory = found.prefix, found.directory
            if not found.kind.is_metaseg:
                raise CheckpointError(
                    f"--continue_training_from_checkpoint {source} holds no metaseg checkpoint; "
                    "pass a directory meta-training wrote, or one of its model.ckpt-N")
        elif prefix is not None and source:
            logging.info("--checkpoint %s already holds this run's checkpoint %s: resuming "
                         "from it, not from --continue_training_from_checkpoint %s",
                         self.checkpoint_dir, prefix, source)
        if prefix is None:
            return 0
        stored = checkpoints.read_config(directory)
        if stored is not None and self.config:
            checkpoints.check_same_settings(directory, stored, self.config, RESUME_KEYS)
        iteration = checkpoints.restore_state(self.state, prefix)  # damaged: one line
        logging.info("Resumed meta-training from %s at iteration %d", prefix, iteration)
        return iteration

    # -- the loop ----------------------------------------------------------------------------
    def train(self, resume_from: Optional[str] = None) -> int:
        """Run meta-training to ``meta.meta_iters``, resuming from our own newest checkpoint
        or else from ``resume_from`` (see ``restore``); returns the final iteration."""
        meta = self.meta
        if self.is_chief:  # staging folders and .tmp files of a killed or failed run
            checkpoints.remove_stale(self.checkpoint_dir)
        start = self.restore(resume_from)
        if start >= meta.meta_iters:
            logging.info("Checkpoint is already at iteration %d of %d; nothing to train",
                         start, meta.meta_iters)
            return start
        if self.config and self.is_chief:
            checkpoints.write_config(self.checkpoint_dir, self.config)
        stream = iter(self._episodes(start))
        progress = _Progress(meta.meta_iters, start)
        losses = []  # since the last checkpoint: its loss, for rotation (checkpoints.Saver)
        for iteration in range(start, meta.meta_iters):
            tic = time.perf_counter()
            epsilon = annealed_meta_step(iteration, meta.meta_iters, meta.meta_step,
                                         meta.meta_step_final)
            loss = self._meta_step(stream, iteration, epsilon)
            self.state.iteration.assign(iteration + 1)
            seconds = time.perf_counter() - tic
            self._log_scalars("train", iteration + 1, {
                "loss": loss, "meta_step_size": epsilon, "seconds_per_meta_iteration": seconds})
            done = iteration + 1
            losses.append(float(loss))
            if done % meta.eval_interval == 0 or done == meta.meta_iters:
                self._evaluate(done, epsilon)
            if done % meta.checkpoint_every == 0 or done == meta.meta_iters:
                if self.is_chief:
                    self.saver.save(done, sum(losses) / len(losses))
                losses = []
            progress.update(done, loss)
        return meta.meta_iters

    def _episodes(self, start_iteration: int) -> tf.data.Dataset:
        meta, inner, keep = self.meta, self.inner, None
        per, ids = self._step.tasks_per_replica, self._replica_ids
        if len(ids) * per < meta.meta_batch:  # this worker's share of each meta-batch
            keep = (meta.meta_batch, ids[0] * per, len(ids) * per)
        dataset = episodes.meta_training_dataset(
            self.store, EpisodeSpec.training(meta, inner), seed=meta.seed,
            start_index=start_iteration * meta.meta_batch, keep=keep)
        return dataset.batch(per, drop_remainder=True)  # one element: one replica's tasks

    def _meta_step(self, stream, iteration: int, epsilon: float) -> float:
        """Adapt to the next ``meta_batch`` episodes and apply the outer update (one compiled
        call, ``metaseg.meta.step``); the mean loss."""
        chunks = [next(stream) for _ in self._replica_ids]  # one per local replica, in order
        first = self._replica_ids[0]
        values = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: chunks[ctx.replica_id_in_sync_group - first])
        try:
            result = self._step(values, tf.constant(self.inner.learning_rate, tf.float32),
                                self.total_inner_steps, epsilon)
        except distribute.PEER_ERRORS as e:
            raise distribute.peer_failure(e, f"meta-iteration {iteration + 1}") from None
        if not result.finite:
            self._non_finite(iteration, result)
        return result.loss

    def _non_finite(self, iteration: int, result) -> None:
        """Raise the one error line: the task(s) whose loss was not finite (all of the
        meta-batch's when only the updated weights were), and what is on disk."""
        names = [self.store.names[int(t)] for t in result.tasks]
        bad = list(dict.fromkeys(n for n, loss in zip(names, result.task_losses, strict=True)
                                 if not np.isfinite(loss)))
        if len(bad) == 1:
            where = f"task {bad[0]!r}"
        elif bad:
            where = "tasks " + ", ".join(map(repr, bad))
        else:
            where = "one of the tasks " + ", ".join(map(repr, dict.fromkeys(names)))
        raise NonFiniteLossError(
            f"non-finite loss at meta-iteration {iteration + 1} on {where}; nothing of it was "
            f"saved; {_saved_summary(self.checkpoint_dir)}; try a smaller --learning-rate "
            "or --meta-step")

    # -- logging -----------------------------------------------------------------------------
    def _evaluate(self, iteration: int, epsilon: float) -> None:
        results = {}
        for name, evaluate in self.evaluators.items():
            scalars = dict(evaluate(self.model))
            tasks = scalars.pop("tasks", None)
            scalars["meta_step_size"] = epsilon
            self._log_scalars(name, iteration, scalars)
            if tasks is not None:  # e.g. test(1 task)=0.41: one random task, not the test set
                name = f"{name}({int(tasks)} task{'' if int(tasks) == 1 else 's'})"
            results[name] = scalars.get("IoU", float("nan"))
        if results:
            logging.info("batch %d: %s", iteration,
                         " ".join(f"{k}={v:.4f}" for k, v in results.items()))

    def _log_scalars(self, name: str, step: int, scalars: Mapping[str, float]) -> None:
        if not self.is_chief:
            return
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(
                os.path.join(self.checkpoint_dir, name))
        with self._writers[name].as_default(step=step):
            for key, value in scalars.items():
                tf.summary.scalar(key, float(value))


def _saved_summary(directory: str) -> str:
    """What is on disk to go back to, said plainly: the newest checkpoint and, when the
    loss has risen since, the lowest-loss one rotation kept."""
    saved = checkpoints.listed(directory)
    if not saved:
        return f"no checkpoint was written to {directory} yet"
    newest, best = saved[-1], checkpoints.lowest_loss(saved)
    text = f"newest checkpoint: {newest.describe()}"
    if best is not None and best != newest:
        text += (f"; lowest-loss checkpoint (kept out of rotation): {best.describe()}, to "
                 f"continue from it pass --continue_training_from_checkpoint {best.prefix} "
                 "with a new --checkpoint directory")
    return text


class _Progress:
    """A Keras progress bar on a terminal; a log line every ~5 % otherwise (CI, files)."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.t0 = total, start, time.perf_counter()
        self.bar = keras.utils.Progbar(total, stateful_metrics=["loss"]) if sys.stderr.isatty() \
            else None
        self.every = max(1, (total - start) // 20)

    def update(self, done: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(done, values=[("loss", loss)])
            return
        if (done - self.start) % self.every == 0 or done == self.total:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / (done - self.start) * (self.total - done)
            logging.info("meta-iteration %d/%d loss=%.4f elapsed=%.0fs ETA=%.0fs",
                         done, self.total, loss, elapsed, eta)
