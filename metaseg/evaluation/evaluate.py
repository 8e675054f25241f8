"""Evaluating an initialisation: fine-tune on each task's support set, score its queries.

REFERENCE.md section 7. Every task starts from the model's full saved state: the
adaptation is a pure function of the model's variable values, so nothing is exported,
imported or restored per task and the model's variables are bit-identical afterwards. Each
task's fine-tuning is one call of the compiled adaptation (``metaseg.meta.adapt``), and its
episodes come from a prefetched tf.data pipeline.

Under a ``tf.distribute`` strategy with several replicas the tasks of a repetition are spread
over the replicas, R at a time: each replica adapts to one task and predicts its queries, and
the predictions of all replicas are gathered to every process, which scores them exactly as
on one device. Only the chief writes files.

Otherwise ``--concurrent_tasks N`` (default 0: two on a 2-core machine, else one;
``metaseg.threads.default_concurrent_tasks``) adapts N tasks at once, each in its own Python
thread calling the same compiled adaptation and prediction (TensorFlow releases the GIL inside
them; the ops of both share the process's intra-/inter-op thread pools). Every task starts
from the same saved state and nothing is shared between tasks, so each task's scores,
predictions and saved checkpoint are bit-identical to the one-at-a-time run under the same
thread settings; the main thread takes the results in task order, so progress lines,
scores, files and their order are those of the sequential run.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from metaseg import checkpoints, distribute, threads
from metaseg.config import EvalConfig, InnerConfig
from metaseg.data import episodes
from metaseg.data.progress import Progress
from metaseg.evaluation import metrics, predictions
from metaseg.evaluation.fold_metrics import FoldMetrics
from metaseg.meta.adapt import Adapter, AdaptState, predict_queries
from metaseg.specs import EpisodeSpec

RESULTS_FILE = "meta-test_results.json"
# Seconds between progress lines (tasks done, rate, ETA): on a terminal, and in a log file.
PROGRESS_EVERY_TTY, PROGRESS_EVERY_LOG = 5.0, 30.0


@dataclasses.dataclass
class EvalResults:
    """Scores of one evaluation: per-task lists over repetitions."""

    task_scores: Dict[str, List[float]]
    sample_means: List[float]  # mean task IoU of each repetition
    # The PASCAL-5i / COCO-20i scores (metaseg.evaluation.fold_metrics) over every query
    # image of every episode, each task a class; NaN when not computed.
    fold_miou: float = float("nan")
    fb_iou: float = float("nan")

    @property
    def mean_iou(self) -> float:
        """Mean over repetitions of the mean task IoU (NaNs ignored), as the original."""
        return float(np.nanmean(self.sample_means)) if self.sample_means else float("nan")

    @property
    def ci95(self) -> float:
        """95 % CI half-width over every (task, repetition) score."""
        return metrics.mean_and_ci95([s for v in self.task_scores.values() for s in v])[1]


class Evaluator:
    """Fine-tune-and-score evaluation of ``model``'s current weights."""

    def __init__(self, model: keras.Model, inner: InnerConfig, config: EvalConfig,
                 adapter: Optional[Adapter] = None, run_config: Optional[dict] = None,
                 strategy: Optional[tf.distribute.Strategy] = None):
        """``run_config`` (JSON-able) is written beside every saved adapted checkpoint so the
        model can be rebuilt from it. ``strategy``: spread tasks over its replicas (the model
        was built in its scope)."""
        self.model, self.inner, self.config = model, inner, config
        self.run_config = run_config
        self.adapter = adapter or Adapter(model, inner)
        self.strategy = strategy if distribute.is_distributed(strategy) else None
        self.is_chief = distribute.is_chief(self.strategy)
        self._saver = None
        self._replicated_predict = None
        self.concurrent_tasks = (config.concurrent_tasks
                                 or threads.default_concurrent_tasks(threads.usable_cores()))

    def evaluate(self, store, *, task_indices: Optional[Sequence[int]] = None,
                 num_samples: Optional[int] = None, serial: Optional[bool] = None,
                 learning_rate: Optional[float] = None, steps: Optional[int] = None,
                 save_dir: Optional[str] = None, label: str = "test") -> EvalResults:
        """Evaluate on the tasks of ``store``.

        ``num_samples`` repetitions (default ``eval_samples``); in each, every task once if
        ``serial`` (default ``serially_eval_all_test_tasks``) else one task drawn with the
        seed. ``save_dir`` saves each adapted model to ``<save_dir>/<task>/<sample>/``.
        """
        cfg = self.config
        num_samples = cfg.eval_samples if num_samples is None else num_samples
        serial = cfg.serially_eval_all_test_tasks if serial is None else serial
        steps = cfg.eval_iters if steps is None else steps
        lr = tf.constant(self.inner.learning_rate if learning_rate is None else learning_rate,
                         tf.float32)
        start = self.adapter.initial_state()  # the full saved state, never written back
        all_tasks = list(range(len(store))) if task_indices is None else list(task_indices)
        rng = np.random.default_rng(cfg.seed)
        fold = FoldMetrics([store.names[i] for i in all_tasks])
        scores: Dict[str, List[float]] = {}
        sample_means = []
        total = num_samples * (len(all_tasks) if serial else 1)
        progress = Progress(total, f"{label} evaluation", unit="tasks",
                            every=PROGRESS_EVERY_TTY if sys.stderr.isatty() else
                            PROGRESS_EVERY_LOG) if total > 1 else None  # not for one task
        for sample in range(num_samples):
            tasks = all_tasks if serial else [int(rng.choice(all_tasks))]
            sample_scores = []
            for element, end, probs in self._adapted(start, store, tasks, steps, sample, lr,
                                                     save_dir):
                name = store.names[int(element["task"])]
                score = self._score_task(start, element, lr, steps, name, sample, save_dir,
                                         fold, probs, end)
                scores.setdefault(name, []).append(score)
                sample_scores.append(score)
                if progress is not None:
                    progress.update()
            sample_means.append(float(np.nanmean(sample_scores)))
            logging.info("%s evaluation %d/%d: mean IoU %.4f", label, sample + 1, num_samples,
                         sample_means[-1])
        # Without --serially_eval_all_test_tasks a class no episode drew is left out of the
        # fold mIoU; only a full protocol run (several repetitions) is worth a warning.
        return EvalResults(scores, sample_means, fold_miou=fold.miou(warn=num_samples > 1),
                           fb_iou=fold.fb_iou())

    def _episodes(self, store, tasks, steps, sample):
        episode = EpisodeSpec.evaluation(self.config, self.inner, steps=steps)
        return episodes.evaluation_dataset(store, tasks, episode, seed=self.config.seed,
                                           sample=sample)

    def _adapted(self, start, store, tasks, steps, sample, lr, save_dir):
        """(episode, adapted state or None, query probabilities or None) per task, in task
        order; None: ``_score_task`` adapts.

        With several replicas, and nothing per task to save, each round of R tasks is one
        replicated adaptation whose predictions are gathered to every process. Else with
        ``self.concurrent_tasks`` > 1 that many tasks are adapted at once by threads."""
        elements = self._episodes(store, tasks, steps, sample)
        if (self.strategy is None or save_dir or self.config.save_predictions_dir
                or self.strategy.num_replicas_in_sync == 1):
            if self.concurrent_tasks > 1:
                yield from self._concurrently(start, elements, lr, steps)
                return
            for element in elements:
                yield element, None, None
            return
        replicas, batch = self.strategy.num_replicas_in_sync, []
        for element in list(elements) + [None]:
            if element is not None:
                batch.append(element)
            if batch and (len(batch) == replicas or element is None):
                padded = batch + [batch[-1]] * (replicas - len(batch))  # last round: repeat
                values = self.strategy.experimental_distribute_values_from_function(
                    lambda ctx, padded=padded: padded[ctx.replica_id_in_sync_group])
                try:
                    probs = self._replicated(values, lr, tf.constant(max(steps, 1)))
                except distribute.PEER_ERRORS as e:
                    raise distribute.peer_failure(e, "evaluation") from None
                queries = int(batch[0]["query_x"].shape[0])
                for i, done in enumerate(batch):
                    yield done, None, probs[i * queries:(i + 1) * queries]
                batch = []

    def _concurrently(self, start, elements, lr, steps):
        """``_adapted`` with ``concurrent_tasks`` threads: the episodes are read here (one
        tf.data iterator, one reader) and each adapted by a worker thread; one more episode
        than threads is in flight so a thread never waits for the scoring of the oldest."""
        width = self.concurrent_tasks
        pool = concurrent.futures.ThreadPoolExecutor(width, thread_name_prefix="metaseg-eval")
        pending = collections.deque()
        try:
            for element in elements:
                pending.append((element, pool.submit(self._adapt_task, start, element, lr,
                                                     steps)))
                if len(pending) > width:
                    element, future = pending.popleft()
                    yield (element, *future.result())
            while pending:
                element, future = pending.popleft()
                yield (element, *future.result())
        finally:  # an error or Ctrl-C: no new task starts, the running ones end first
            pool.shutdown(wait=True, cancel_futures=True)

    def _adapt_task(self, start, element, lr, steps):
        """(adapted state, query probabilities) of one episode from the saved ``start``."""
        end, _ = self.adapter.adapt(start, element["x"], element["y"], lr, tf.constant(0),
                                    tf.constant(max(steps, 1)))
        return end, self.predict(end, element["support_x"], element["query_x"])

    def _replicated(self, values, lr, steps):
        """Each replica adapts to its episode from the saved state; every query's probabilities."""
        if self._replicated_predict is None:
            def replica(element, lr, steps):
                end, _ = self.adapter.adapt(start_state(), element["x"], element["y"], lr,
                                            tf.constant(0), steps)
                return self.predict(end, element["support_x"], element["query_x"])

            def start_state():  # this replica's copy of the saved state
                return tf.nest.map_structure(tf.identity, self.adapter.initial_state())

            def run(values, lr, steps):
                probs = self.strategy.run(replica, args=(values, lr, steps))
                return self.strategy.gather(probs, axis=0)

            self._replicated_predict = tf.function(run)
        return self._replicated_predict(values, lr, steps)

    def _score_task(self, start: AdaptState, element, lr, steps, name, sample, save_dir,
                    fold: Optional[FoldMetrics] = None, probs=None, end=None) -> float:
        if probs is None:
            end, probs = self._adapt_task(start, element, lr, steps)
        ious = metrics.binary_iou(probs, element["query_y"]).numpy()
        if fold is not None:
            fold.add(name, np.asarray(probs), np.asarray(element["query_y"]))
        if save_dir and self.is_chief:
            self._save(end, os.path.join(save_dir, name, str(sample)), steps)
        if self.config.save_predictions_dir and self.is_chief:
            predictions.save_overlays(self.config.save_predictions_dir, name, sample,
                                      element["query_x"], probs, element["query_y"])
        return float(np.nanmean(ious))

    def predict(self, state: AdaptState, support_x, query_x) -> tf.Tensor:
        """Query probabilities [Q,S,S,2] in inference mode, transductive or not as
        ``--transductive`` says (``metaseg.meta.adapt.predict_queries``)."""
        return predict_queries(self.adapter.predict, state, support_x, query_x,
                               transductive=self.config.transductive)

    def _save(self, state: AdaptState, directory: str, steps: int) -> None:
        """Write an adapted state in metaseg's checkpoint layout (loadable by restore_weights)."""
        if self._saver is None:
            self._saver = checkpoints.Snapshot()
        self._saver.save(directory, state.trainable, state.non_trainable, steps,
                         config=self.run_config)


def write_results(directory: str, results: EvalResults, name: str = RESULTS_FILE) -> str:
    """Write ``<directory>/<name>`` and its summary atomically; return the results path.

    ``<name>`` holds the per-task score lists exactly as the original wrote them (task ->
    list of IoUs, one per repetition), so scripts written for it keep working; the mean IoU,
    its 95 % CI, the counts and the fold mIoU / FB-IoU go to ``<name minus .json>_summary.json``
    beside it.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    summary = {"mean_iou": results.mean_iou, "ci95": results.ci95,
               "num_tasks": len(results.task_scores), "num_samples": len(results.sample_means),
               # NaN (written as NaN, which Python's json reads) when not computed
               "fold_miou": results.fold_miou, "fb_iou": results.fb_iou}
    for target, content in ((path, results.task_scores),
                            (summary_path(path), summary)):
        with open(target + ".tmp", "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, sort_keys=True)
        os.replace(target + ".tmp", target)
    return path


def summary_path(results_path: str) -> str:
    """``.../meta-test_results.json`` -> ``.../meta-test_results_summary.json``."""
    root, ext = os.path.splitext(results_path)
    return f"{root}_summary{ext}"
