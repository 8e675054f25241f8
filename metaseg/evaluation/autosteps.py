"""The step count of one adaptation, chosen from its own support set (``metaseg adapt
--steps auto``).

k-fold adaptation on the n support pairs: leave-one-out for n <= 5, else 5 folds (a seeded
shuffle dealt round-robin, so fold sizes differ by at most one). Each fold adapts on the
other pairs for up to ``max_steps`` steps, with the held-out pairs scored (IoU) after every
step inside the compiled adaptation (``Adapter.scoring_steps``, the mechanism UHO's
``scoring_adaptation`` runs), on mini-batches drawn as the final adaptation draws them
(``episodes.inner_batch_plan``, the fold's batch spec ``fitted`` to its size). The held-out
curve is the mean over all held-out images (folds weighted by size); the chosen step count
is its argmax (the earliest of equal scores). The caller then adapts on the whole support
set for that many steps.

Cost: ``folds x max_steps`` scored steps before the final adaptation (``cost_line``). The
held-out images are predicted in inference mode with the batch-norm statistics the inner
loop carries over, not re-estimated on the fold's support images as ``metaseg adapt``'s
final model is: the curve ranks step counts, it is not the final model's score.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from metaseg.data.episodes import gather_inner_batches, inner_batch_plan
from metaseg.data.shards import mask_to_two_channel
from metaseg.errors import DataError
from metaseg.evaluation import metrics
from metaseg.specs import BatchSpec

MAX_FOLDS = 5  # leave-one-out up to this many support pairs, else this many folds
BATCH_BYTES = 256 * 2 ** 20  # float32 mini-batches built at once, as metaseg adapt


def folds(n: int, seed: int = 0) -> List[List[int]]:
    """Held-out indices of each fold: [[0], [1], ...] for n <= 5 (leave-one-out), else five
    folds of a seeded permutation dealt round-robin. DataError for n < 2."""
    if n < 2:
        raise DataError(f"choosing the step count needs at least two support pairs (one to "
                        f"adapt on, one to score), got {n}")
    if n <= MAX_FOLDS:
        return [[i] for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in order[f::MAX_FOLDS]) for f in range(MAX_FOLDS)]


def choose(curve: Sequence[float]) -> int:
    """The 1-based step of the highest finite score of ``curve`` (scores after steps 1..K),
    the earliest of equal ones; DataError if none is finite."""
    values = np.asarray(curve, np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise DataError("the held-out support curve has no finite score")
    return int(np.argmax(np.where(finite, values, -np.inf))) + 1


@dataclasses.dataclass
class AutoSteps:
    """What :func:`held_out_curves` found."""

    steps: int                      # the chosen step count
    max_steps: int
    learning_rate: float
    held_out: List[List[int]]       # support indices held out of each fold
    fold_curves: List[List[float]]  # [fold][step]: mean held-out IoU after steps 1..K
    curve: List[float]              # [step]: mean over every held-out image

    @property
    def score(self) -> float:
        """The mean held-out IoU at the chosen step (optimistic: the maximum of the curve)."""
        return float(self.curve[self.steps - 1])

    def record(self, names: Optional[Sequence[str]] = None) -> dict:
        """adaptation.json's ``auto_steps`` section (``names``: the support images')."""
        def name(i):
            return names[i] if names is not None else i
        return {"chosen_steps": self.steps, "max_steps": self.max_steps,
                "learning_rate": self.learning_rate, "held_out_iou": self.score,
                "folds": [[name(i) for i in fold] for fold in self.held_out],
                "held_out_curve": [float(v) for v in self.curve],
                "fold_curves": [[float(v) for v in c] for c in self.fold_curves],
                "rule": "argmax of the mean held-out IoU after steps 1..max_steps (earliest "
                        "of ties); leave-one-out for <= 5 support pairs, else 5 folds"}


def cost_line(n: int, max_steps: int, fixed_steps: int) -> str:
    """One line: the folds, their steps, and the cost against a fixed adaptation."""
    count = n if n <= MAX_FOLDS else MAX_FOLDS
    what = "leave-one-out folds" if n <= MAX_FOLDS else "folds"
    scale = (count * max_steps + max_steps) / max(1, fixed_steps)
    return (f"steps auto: {count} {what} x {max_steps} steps, then up to {max_steps} on all "
            f"{n} support pairs: about {scale:.0f}x a fixed {fixed_steps}-step adaptation "
            "(at most)")


def held_out_curves(adapter, images, masks, batches: BatchSpec, *, max_steps: int,
                    learning_rate: float, seed: int, transductive: bool = True,
                    batch_bytes: int = BATCH_BYTES, on_fold=None,
                    score_fn=metrics.binary_iou) -> AutoSteps:
    """Run every fold for ``max_steps`` scored steps from ``adapter``'s current weights.

    images uint8 or float32 [n,S,S,3] in [0,255]; masks uint8 [n,S,S] in {0,255} (or
    float32 one-hot [n,S,S,2]). ``batches``: the final adaptation's batch spec (fitted to
    each fold's size). At most ``batch_bytes`` of float32 mini-batches are built at once;
    longer runs continue the state in chunks, giving the same scores. ``on_fold(i, curve)``
    is called after each fold. ``score_fn(probs [Q,S,S,2], labels) -> [Q]``: the held-out
    score (IoU, as UHO scores).
    """
    if max_steps < 1:
        raise DataError(f"the largest step count to try must be positive, got {max_steps}")
    images, masks = np.asarray(images), np.asarray(masks)
    n, size = len(images), int(images.shape[1])
    held = folds(n, seed)
    scorer = adapter.scoring_steps(score_fn, transductive=transductive)
    rate, total = tf.constant(learning_rate, tf.float32), tf.constant(max_steps)
    start = adapter.initial_state()
    fold_curves = []
    for f, out in enumerate(held):
        keep = [i for i in range(n) if i not in set(out)]
        fold_batches = batches.fitted(len(keep))
        train_x, train_y = tf.constant(images[keep]), tf.constant(masks[keep])
        query_x = tf.constant(images[out], tf.float32)
        query_y = tf.constant(masks[out])
        query_y = mask_to_two_channel(query_y) if len(query_y.shape) == 3 else query_y
        support_x = tf.cast(train_x, tf.float32)
        plan = inner_batch_plan(len(keep), fold_batches, num_batches=max_steps,
                                seed=[seed, f])
        most = max(1, int(batch_bytes) // (fold_batches.size * size * size * 5 * 4))
        state, scores, done = start, [], 0
        while done < max_steps:
            stop = min(max_steps, done + most)
            x, y = gather_inner_batches(train_x, train_y, plan, done, stop)
            state, part = scorer(state, x, y, support_x, query_x, query_y, rate,
                                 tf.constant(done), total)
            del x, y
            scores.extend(part.numpy().tolist())
            done = stop
        fold_curves.append(scores)
        if on_fold is not None:
            on_fold(f, scores)
    weights = np.asarray([len(out) for out in held], np.float64)
    curve = (np.asarray(fold_curves, np.float64) * weights[:, None]).sum(0) / weights.sum()
    return AutoSteps(choose(curve), int(max_steps), float(learning_rate), held,
                     fold_curves, curve.tolist())
