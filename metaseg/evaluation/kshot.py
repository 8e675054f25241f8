"""FP-k k-shot learning curves: ``--run_k_shot_learning_curves_experiment`` (REFERENCE.md s. 9).

For each FP-k task (the five synonym-merged classes of section 2) and each repetition
(``--eval-samples``, the original's ``m``), k_max + 20 distinct examples are drawn once: the
last 20 are the query set and the k-shot support set is the first k of the rest, so the
support sets of one repetition are nested, as in the original. Every k in 1, 5, 10, 50, 100,
200, 400 that the task can supply (k + 20 examples; the others are skipped with a log line)
is scored: the model's saved state is fine-tuned with the compiled ``Adapter.adapt`` on
``--eval-batch`` batches from ``make_inner_batches`` (the model is never modified), then the
20 queries are scored by mean binary IoU (section 7).

Step counts:

- ``--k_shot_iter_range``: every listed count is evaluated (one row each), each a fresh
  adaptation from the saved state. (The original paired the list with the ks, then ignored it.)
- otherwise, k >= 10: early stopping on a 20 % split of the k examples, with UHO's rules and
  code: the first 80 % train for up to ``--max_steps`` steps in one compiled call that
  scores the last 20 % after every step inside the graph (``Adapter.scoring_adaptation``);
  ``early_stopping.scan`` picks the best count (patience 50, never below ``--min_steps``);
  then a fresh adaptation on all k examples for that count. (The original capped the search
  at 500 steps, minimum 1.)
- otherwise (k < 10): ``--eval-iters``.

Queries (and the early-stopping split) are predicted in inference mode as one batch: batch
norm then uses its moving statistics, so an image's prediction does not depend on the rest of
the batch and this equals the original's non-transductive feeding of support + query, without
a 420-image forward pass at k = 400. The final adaptation builds its inner batches
``CHUNK_STEPS`` steps at a time to bound memory (each chunk starts a freshly shuffled pass
through the support set); the early-stopping search holds all ``--max_steps`` at once.
Results: ``<checkpoint>/k-shot-results.csv`` (task, k, sample, steps, mIoU) and a PNG plot
of mIoU against k when matplotlib is installed (``pip install 'metaseg[plot]'``).
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from metaseg.config import RunConfig
from metaseg.data import FPK_SYNONYMS, Task, TaskStore, list_tasks, merge_fpk_tasks
from metaseg.data.augment import as_seed, fold_seed, split_seed
from metaseg.data.episodes import make_inner_batches, sample_task_examples
from metaseg.data.tasks import name_list
from metaseg.errors import DataError
from metaseg.evaluation import early_stopping, metrics
from metaseg.evaluation.kshot_report import (PLOT_NAME, KShotResults, KShotRow, mean_by_k,
                                             plot_curves, write_csv)
from metaseg.meta.adapt import Adapter, AdaptState
from metaseg.specs import BatchSpec

K_RANGE = (1, 5, 10, 50, 100, 200, 400)
QUERY_IMAGES = 20
EARLY_STOPPING_MIN_K = 10
VALIDATION_FRACTION = 0.2
PATIENCE = early_stopping.PATIENCE
CHUNK_STEPS = 50  # at 224 px and batch 8, 50 steps of batches take ~0.4 GB
_KSHOT_STREAM = 3  # random numbers of their own: not the training (1) or evaluation (2) ones


def load_fpk_store(data_dir: str, image_size: int,
                   training_tasks: Sequence[Task] = ()) -> TaskStore:
    """The five FP-k tasks of ``data_dir`` decoded at ``image_size`` px (those present).

    DataError naming every synonym looked for when no shard matches; a warning when FP-k
    shards were also meta-training tasks (``--fp_k_test_set`` holds them out).
    """
    tasks = list_tasks(data_dir)
    synonyms = [s for names in FPK_SYNONYMS.values() for s in names]
    # merge_fpk_tasks's rule (a synonym in the shard's file name), checked first so the
    # error names this experiment rather than --fp_k_test_set.
    if not any(s in os.path.basename(p) for t in tasks for p in t.paths for s in synonyms):
        raise DataError(f"--run_k_shot_learning_curves_experiment needs the FP-k classes, but "
                        f"no shard file name in {data_dir} contains any of "
                        f"{', '.join(synonyms)}; add their shards to --data-dir")
    tasks = merge_fpk_tasks(tasks)
    fpk_paths = {p for task in tasks for p in task.paths}
    seen = sorted(t.name for t in training_tasks if fpk_paths.intersection(t.paths))
    if seen:
        logging.warning("k-shot: %d FP-k shards were meta-training tasks (%s); pass "
                        "--fp_k_test_set to hold them out", len(seen), name_list(seen))
    return TaskStore.load(tasks, image_size, min_examples=1)


def plan(store: TaskStore, k_range: Sequence[int] = K_RANGE) -> Dict[int, Tuple[int, ...]]:
    """{task index: the ks it can supply (k + 20 examples)}; skipped ks are logged per task."""
    planned = {}
    for i, name in enumerate(store.names):
        count = store.num_examples(i)
        ks = tuple(k for k in k_range if k + QUERY_IMAGES <= count)
        skipped = [str(k) for k in k_range if k not in ks]
        if skipped:
            logging.info("k-shot: task %s has %d examples; skipping k = %s (k + %d query "
                         "images needed)", name, count, ", ".join(skipped), QUERY_IMAGES)
        if ks:
            planned[i] = ks
    if not planned:
        counts = [f"{n} ({store.num_examples(i)})" for i, n in enumerate(store.names)]
        raise DataError(f"no FP-k task has the {min(k_range) + QUERY_IMAGES} examples the "
                        f"smallest k needs (k + {QUERY_IMAGES} query images): "
                        f"{name_list(counts)}")
    return planned


class KShotExperiment:
    """Fine-tune-and-score of one model's saved state over the k range (never written back)."""

    def __init__(self, adapter: Adapter, config: RunConfig):
        self.adapter, self.config = adapter, config
        self.start = adapter.initial_state()
        self.learning_rate = tf.constant(config.inner.learning_rate, tf.float32)

    def run(self, store: TaskStore) -> KShotResults:
        """Every (repetition, task, feasible k[, step count]) row; writes the CSV and plot."""
        planned = plan(store)
        rows: List[KShotRow] = []
        for sample in range(self.config.eval.eval_samples):
            for task, ks in planned.items():
                rows.extend(self.task_rows(store, task, ks, sample))
        directory = self.config.checkpoint
        results = KShotResults(rows, write_csv(directory, rows))
        results.plot_path = plot_curves(rows, os.path.join(directory, PLOT_NAME),
                                        by_steps=self.config.kshot.iter_range is not None)
        for k, miou in sorted(mean_by_k(rows).items()):
            logging.info("k-shot: k = %d, mean query IoU %.4f", k, miou)
        logging.info("k-shot results: %s", results.csv_path)
        return results

    def task_rows(self, store: TaskStore, task: int, ks: Sequence[int],
                  sample: int) -> List[KShotRow]:
        """One repetition on one task: nested support sets, one fixed 20-image query set."""
        seed = fold_seed(fold_seed(fold_seed(as_seed(self.config.eval.seed), _KSHOT_STREAM),
                                   sample), task)
        images, masks = sample_task_examples(store, task, max(ks) + QUERY_IMAGES, seed)
        query = images[-QUERY_IMAGES:], masks[-QUERY_IMAGES:]
        rows = []
        for k in ks:
            search_seed, fit_seed = tf.unstack(split_seed(fold_seed(seed, k), 2))
            support = images[:k], masks[:k]
            for steps in self.step_counts(k, *support, search_seed):
                state = self.adapt_for(*support, steps, fit_seed)
                miou = self.score(state, *query)
                rows.append(KShotRow(store.names[task], k, sample, steps, miou))
                logging.info("k-shot: %s k = %d sample %d: %d steps, query IoU %.4f",
                             store.names[task], k, sample, steps, miou)
        return rows

    def step_counts(self, k: int, images, masks, seed) -> Tuple[int, ...]:
        """``--k_shot_iter_range``, else early stopping for k >= 10, else ``--eval-iters``."""
        if self.config.kshot.iter_range is not None:
            return self.config.kshot.iter_range
        if k < EARLY_STOPPING_MIN_K:
            return (self.config.eval.eval_iters,)
        held_out = int(VALIDATION_FRACTION * k)
        steps, _ = self.estimate_steps(images[:-held_out], masks[:-held_out],
                                       images[-held_out:], masks[-held_out:], seed)
        return (steps,)

    def estimate_steps(self, images, masks, val_images, val_masks, seed) -> Tuple[int, float]:
        """(best step count, its validation mIoU) by early stopping (UHO's rules and code).

        Up to ``--max_steps`` steps on (images, masks) run in one compiled call that scores
        (val_images, val_masks) after every step inside the graph; ``early_stopping.scan``
        then reads the scores as stopping early would have.
        """
        uho = self.config.uho
        x, y = self.batches(images, masks, uho.max_steps, seed)
        scoring = self.adapter.scoring_adaptation(metrics.binary_iou, transductive=True)
        scores = scoring(self.start, x, y, images, val_images, val_masks, self.learning_rate,
                         tf.constant(uho.max_steps))
        found = early_stopping.scan(scores.numpy().tolist(), patience=PATIENCE,
                                    min_steps=uho.min_steps)
        logging.info("k-shot: early stopping on %d examples chose %d steps (validation IoU "
                     "%.4f on %d)", images.shape[0], found.best_steps, found.best_score,
                     val_images.shape[0])
        return found.best_steps, found.best_score

    def adapt_for(self, images, masks, steps: int, seed) -> AdaptState:
        """The saved state fine-tuned ``steps`` steps on images float32 [n, S, S, 3] in
        [0, 255] and masks float32 [n, S, S, 2] (schedule total ``steps``), built and run
        ``CHUNK_STEPS`` steps at a time."""
        state, total = self.start, tf.constant(max(steps, 1))
        for chunk, first in enumerate(range(0, steps, CHUNK_STEPS)):
            x, y = self.batches(images, masks, min(CHUNK_STEPS, steps - first),
                                fold_seed(seed, chunk))
            state, _ = self.adapter.adapt(state, x, y, self.learning_rate, tf.constant(first),
                                          total)
        return state

    def batches(self, images, masks, steps: int, seed):
        """Inner batches x float32 [steps, B, S, S, 3], y [steps, B, S, S, 2], B =
        ``--eval-batch`` (with --replacement a batch holds distinct examples, so at most n:
        ``BatchSpec.fitted``)."""
        batches = BatchSpec.evaluation(self.config.eval, self.config.inner)
        return make_inner_batches(images, masks, batches.fitted(int(images.shape[0])),
                                  num_batches=steps, seed=seed)

    def score(self, state: AdaptState, images, masks) -> float:
        """Mean binary IoU (NaNs ignored) of images float32 [n, S, S, 3] against masks."""
        ious = [metrics.binary_iou(self.adapter.predict(state, images[i:i + QUERY_IMAGES]),
                                   masks[i:i + QUERY_IMAGES])
                for i in range(0, int(images.shape[0]), QUERY_IMAGES)]
        return float(np.nanmean(tf.concat(ious, 0).numpy()))
