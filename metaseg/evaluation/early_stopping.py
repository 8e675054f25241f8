"""Early stopping on a per-step score, as the original's ``EarlyStopper`` (REFERENCE.md
section 8): the best number of inner steps for a task, and the score reached there.

Pure Python, no TensorFlow: the network side produces the vector of query mIoUs after every
step (``Adapter.scoring_adaptation``) and :func:`scan` reads it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional

PATIENCE = 50  # REFERENCE.md section 8; the original hard-coded it too.


class EarlyStopper:
    """Tracks the best step of a score that should increase (mIoU).

    Feed the score after every step with :meth:`update` (steps are 1-based and
    consecutive). The rules are the original's, kept exactly:

    - Up to and including ``min_steps``, every score is taken as the best so far (even a
      lower one) and the best step count is ``min_steps``: the answer is never below it.
    - After that, a score strictly greater than the best is an improvement (a tie is not,
      so the earliest of equal scores wins); any other score counts one step without
      improvement.
    - Training stops at the step that makes the count of consecutive steps without
      improvement exceed ``patience``; so with patience 50 an improvement 51 steps after
      the best still counts, and a run stops 51 steps after its best at the latest.
    - A NaN score is never an improvement, and a NaN best is beaten by any number (the
      original compared with ``>`` and so kept a NaN best for ever; query IoUs are never
      NaN here, so this only matters for other scores).
    """

    def __init__(self, patience: int = PATIENCE, min_steps: int = 0):
        if patience < 0 or min_steps < 0:
            raise ValueError(f"patience and min_steps must be >= 0, got {patience}, {min_steps}")
        self.patience, self.min_steps = int(patience), int(min_steps)
        self.best_score: Optional[float] = None
        self.best_steps: Optional[int] = min_steps if min_steps > 0 else None
        self.steps_without_improvement = 0
        self.steps_seen = 0
        self.stopped = False

    def update(self, score: float, step: int) -> bool:
        """Record the score after ``step`` (1-based) steps; False once training should stop."""
        if self.stopped:
            raise RuntimeError("update() after the stopper said stop")
        if step != self.steps_seen + 1:
            raise ValueError(f"steps must be consecutive from 1: got {step} after "
                             f"{self.steps_seen}")
        self.steps_seen = step
        score = float(score)
        if step <= self.min_steps:
            self.best_score = score
        elif self.best_steps is None or self.best_score is None or _greater(score,
                                                                            self.best_score):
            self.best_score, self.best_steps = score, step
            self.steps_without_improvement = 0
        else:
            self.steps_without_improvement += 1
            if self.steps_without_improvement > self.patience:
                self.stopped = True
        return not self.stopped


def _greater(a: float, b: float) -> bool:
    if math.isnan(a):
        return False
    return math.isnan(b) or a > b


@dataclasses.dataclass(frozen=True)
class StopResult:
    """What early stopping found on one task."""

    best_steps: int  # 1-based number of inner steps
    best_score: float  # the score after best_steps steps (after min_steps: see EarlyStopper)
    steps_run: int  # steps early stopping would have taken before stopping


def scan(scores: Iterable[float], *, patience: int = PATIENCE, min_steps: int = 0) -> StopResult:
    """Run an :class:`EarlyStopper` over the per-step scores ``scores[k]`` (after step k + 1).

    The score after step k depends only on steps 1..k, so scanning a vector computed for
    every step up to ``--max_steps`` gives exactly what stopping early would have given; the
    steps after ``steps_run`` are simply never looked at.
    """
    stopper = EarlyStopper(patience, min_steps)
    for step, score in enumerate(scores, start=1):
        if not stopper.update(score, step):
            break
    if stopper.steps_seen < max(1, min_steps):
        raise ValueError(f"early stopping needs at least max(1, min_steps = {min_steps}) "
                         f"scores, got {stopper.steps_seen}")
    return StopResult(stopper.best_steps, stopper.best_score, stopper.steps_seen)
