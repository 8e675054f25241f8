"""Query IoU after every inner step, for one initialisation on every test task.

One compiled adaptation of ``max_steps`` steps per task (``Adapter.scoring_adaptation``)
scores the query set after each step inside the graph, so every step count of the study
comes from one run: the IoU after k steps of a k-step adaptation is the IoU after step k of
the longer one (the inner schedule is ``fixed``, so step k does not depend on the total).
Every initialisation sees the same episodes (support, query and inner batches are fixed by
the seed), so differences between initialisations are paired.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from metaseg.config import RunConfig
from metaseg.data import episodes
from metaseg.evaluation import metrics
from metaseg.meta.adapt import Adapter
from metaseg.specs import EpisodeSpec


def task_curves(adapter: Adapter, config: RunConfig, store, max_steps: int,
                learning_rate: float) -> np.ndarray:
    """float64 [tasks, max_steps + 1]: mean query IoU of each task of ``store`` after steps
    0 (the initialisation as it is), 1, ..., max_steps of fine-tuning ``adapter``'s model
    from its current weights.

    The protocol of ``config`` (``--shots``, ``--eval-batch``, SGD or Adam,
    ``--transductive``, the evaluation seed) with inner step size ``learning_rate``; one
    episode per task (sample 0), the same for every call.
    """
    if config.inner.learning_rate_scheduler not in ("fixed", "constant"):
        raise ValueError("step curves need a fixed inner learning rate")
    scoring = adapter.scoring_adaptation(metrics.binary_iou,
                                         transductive=config.eval.transductive)
    start = adapter.initial_state()
    lr = tf.constant(learning_rate, tf.float32)
    data = episodes.evaluation_dataset(
        store, list(range(len(store))),
        EpisodeSpec.evaluation(config.eval, config.inner, steps=max_steps), seed=config.eval.seed)
    rows = []
    for element in data:
        scores = scoring(start, element["x"], element["y"], element["support_x"],
                         element["query_x"], element["query_y"], lr, tf.constant(max_steps))
        before = metrics.binary_iou(adapter.predict(start, element["query_x"]),
                                    element["query_y"]).numpy()
        rows.append(np.concatenate([[np.nanmean(before)], scores.numpy()]).astype(np.float64))
    return np.stack(rows)


def pick_learning_rate(adapter: Adapter, config: RunConfig, val_store, max_steps: int,
                       learning_rates: Sequence[float], steps: Sequence[int]):
    """(best step size, {lr: mean validation IoU over ``steps``}) on the validation tasks.

    One step size per initialisation, the one with the best mean IoU averaged over the
    reported step counts, chosen on classes that neither training nor the test saw.
    """
    scores = {}
    for lr in learning_rates:
        curves = task_curves(adapter, config, val_store, max_steps, lr)
        scores[float(lr)] = float(np.nanmean(curves[:, list(steps)]))
    return max(scores, key=scores.get), scores


def summarise(curves: np.ndarray, steps: Sequence[int]) -> Dict[int, Dict[str, float]]:
    """{k: {"mean": mean IoU over tasks after k steps, "ci95": half-width, "n": tasks}}."""
    out = {}
    for k in steps:
        mean, ci = metrics.mean_and_ci95(curves[:, k].tolist())
        out[int(k)] = {"mean": mean, "ci95": ci, "n": int(np.sum(~np.isnan(curves[:, k])))}
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, steps: Sequence[int]) -> Dict[int, Dict]:
    """Mean and 95 % CI of the per-task difference a - b (same episodes), per step count."""
    out = {}
    for k in steps:
        mean, ci = metrics.mean_and_ci95((a[:, k] - b[:, k]).tolist())
        out[int(k)] = {"mean": mean, "ci95": ci}
    return out


def as_lists(curves: np.ndarray) -> List[List[float]]:
    return [[round(float(v), 6) for v in row] for row in curves]
