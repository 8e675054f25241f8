"""The meta-training driver: outer loop, checkpoints, resume, TensorBoard, progress.

One meta-iteration takes ``meta_batch`` consecutive episodes from the training stream
(element ``j`` of the stream is a pure function of (seed, j)), adapts to each with the
compiled inner loop, and applies the algorithm's outer update to the model's trainable
weights. Because episodes are indexed and the dropout seed state lives in the model's
non-trainable weights (checkpointed), a run resumed from checkpoint ``i`` replays exactly
what an uninterrupted run would have done from iteration ``i`` on.

Under a ``tf.distribute`` strategy (``--distribution_strategy``) the meta-batch is spread
over the replicas by ``metaseg.meta.replicated`` (see there for how batch-norm statistics
carry over); each worker builds only its own replicas' episodes, and only the chief writes
checkpoints, ``config.json`` and TensorBoard logs.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Dict, Mapping, Optional

import keras
import tensorflow as tf
from absl import logging

from metaseg import checkpoints, distribute
from metaseg.config import InnerConfig, MetaConfig
from metaseg.data import episodes
from metaseg.errors import CheckpointError, MetasegError
from metaseg.meta import weights
from metaseg.meta.adapt import Adapter, AdaptState
from metaseg.meta.algorithms import annealed_meta_step, make_algorithm, outer_update
from metaseg.meta.replicated import ReplicatedMetaStep

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
      strategy: a ``tf.distribute`` strategy the model was built under (None: one device).
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
        self.strategy = strategy if distribute.is_distributed(strategy) else None
        self.is_chief = distribute.is_chief(self.strategy)
        with (self.strategy or tf.distribute.get_strategy()).scope():
            self.state = checkpoints.MetaState(model, self.adapter.initial_state().opt)
        self._replicated = None
        if self.strategy is not None:
            self._tasks_per_replica = distribute.tasks_per_replica(meta.meta_batch, self.strategy)
            self._replica_ids = distribute.local_replica_ids(self.strategy)
            self._replicated = ReplicatedMetaStep(
                self.strategy, self.adapter, self.algorithm, self.state,
                meta_batch=meta.meta_batch, reset_state_per_task=meta.reset_state_per_task)
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
            if self._replicated is None:
                loss = self._meta_step(stream, iteration, epsilon)
            else:
                loss = self._replicated_meta_step(stream, iteration, epsilon)
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
        if self.strategy is not None:  # this worker's share of each meta-batch, per replica
            per, ids = self._tasks_per_replica, self._replica_ids
            keep = (meta.meta_batch, ids[0] * per, len(ids) * per)
        dataset = episodes.meta_training_dataset(
            self.store, train_shots=meta.train_shots, inner_iters=meta.inner_iters,
            inner_batch=meta.inner_batch, replacement=inner.replacement, augment=inner.augment,
            aug_rate=inner.aug_rate, foml_tail=meta.foml_tail,
            tail_with_replacement=meta.sample_foml_train_val_with_replacement,
            seed=meta.seed, start_index=start_iteration * meta.meta_batch, keep=keep)
        return dataset if keep is None else dataset.batch(self._tasks_per_replica)

    def _replicated_meta_step(self, stream, iteration: int, epsilon: float) -> float:
        """The meta-step spread over the strategy's replicas (``metaseg.meta.replicated``)."""
        chunks = [next(stream) for _ in self._replica_ids]  # one per local replica, in order
        first = self._replica_ids[0]
        values = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: chunks[ctx.replica_id_in_sync_group - first])
        try:
            result = self._replicated(values, tf.constant(self.inner.learning_rate, tf.float32),
                                      self.total_inner_steps, epsilon)
        except distribute.PEER_ERRORS as e:
            raise distribute.peer_failure(e, f"meta-iteration {iteration + 1}") from None
        if not result.finite:
            tasks = sorted({self.store.names[int(t)] for c in chunks for t in c["task"]})
            self._non_finite(iteration, None, tasks)
        return result.loss

    def _meta_step(self, stream, iteration: int, epsilon: float) -> float:
        """Adapt to ``meta_batch`` episodes and apply the outer update; the mean loss."""
        theta = [v.value for v in self.state.trainable]
        start_nt = [v.value for v in self.state.non_trainable]
        opt = self.state.opt_state()
        learning_rate = tf.constant(self.inner.learning_rate, tf.float32)
        directions, end_states, task_losses = [], [], []
        for _ in range(self.meta.meta_batch):
            episode = next(stream)
            if self.meta.reset_state_per_task:
                state = AdaptState(theta, start_nt, self.adapter.optimizer.init(theta))
            else:  # The original carries BN statistics and optimiser slots across tasks.
                state = AdaptState(theta, *(end_states[-1][1:] if end_states else (start_nt, opt)))
            direction, end, step_losses = self.algorithm.task_direction(
                self.adapter, state, episode, learning_rate, self.total_inner_steps)
            mean_loss = float(tf.reduce_mean(step_losses))
            if not math.isfinite(mean_loss):
                self._non_finite(iteration, episode)
            directions.append(direction)
            end_states.append(end)
            task_losses.append(mean_loss)
        new_theta = outer_update(theta, directions, tf.constant(epsilon, tf.float32))
        if not bool(weights.all_finite(new_theta)):
            self._non_finite(iteration, episode)
        for var, value in zip(self.state.trainable, new_theta, strict=True):
            var.assign(value)
        for var, value in zip(self.state.non_trainable, self._next_statistics(end_states),
                              strict=True):
            var.assign(value)
        if not self.meta.reset_state_per_task:
            self.state.assign_opt_state(end_states[-1].opt)
        return sum(task_losses) / len(task_losses)

    def _next_statistics(self, end_states):
        """Non-trainable weights after a meta-step.

        Carry-over (the original): the last task's. Reset per task: every task started from
        the same statistics, so keep their mean (floating) and the last seed state (integer),
        which does not depend on the order of the tasks.
        """
        if not self.meta.reset_state_per_task:
            return end_states[-1].non_trainable
        columns = zip(*[s.non_trainable for s in end_states])
        return [tf.add_n(list(c)) / len(c) if c[0].dtype.is_floating else c[-1]
                for c in (list(col) for col in columns)]

    def _non_finite(self, iteration: int, episode, tasks=None) -> None:
        where = (f"task {self.store.names[int(episode['task'])]!r}" if episode is not None
                 else f"one of the tasks {', '.join(tasks)}")
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
