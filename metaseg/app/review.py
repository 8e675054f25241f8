"""The order of the review view: the predicted masks most worth checking first.

Where the work directory holds per-mask quality estimates (``scores.csv`` beside
``masks/``, header ``file,estimated_iou,low,high``, as a quality estimator writes them),
images are ordered by estimated IoU, lowest first. Otherwise by mask confidence, lowest
first: the mean over the image's pixels of ``|2 p - 1|``, ``p`` the predicted foreground
probability at the image's own size (1 = every pixel certain, 0 = every pixel at 0.5),
which the app's adaptation stores in ``app/confidence.json``.

Hook for a quality estimator: have the adaptation job write ``scores.csv`` into its
scratch folder beside ``masks/`` (see :data:`SCORES_FILE` in ``metaseg.app.adaptation``);
it is committed with the predictions and used here. The file's name, header and reader are
``metaseg.cli.scores``'s (which writes it for ``metaseg adapt`` and ``predict``).
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from metaseg.cli.scores import SCORES_FILE, read_scores  # noqa: F401  (re-exported)

ESTIMATED_IOU, CONFIDENCE = "estimated IoU", "mask confidence"


def mask_confidence(probability: np.ndarray) -> float:
    """Mean of |2 p - 1| over foreground probabilities ``p`` float [H, W] in [0, 1]."""
    return float(np.mean(np.abs(2.0 * np.asarray(probability, np.float64) - 1.0)))


def order(names: List[str], confidence: Dict[str, float], scores_path: str) -> List[dict]:
    """[{name, score, score_kind}] of ``names`` (unlabelled, predicted images), the ones to
    check first first; images without a score come last, by name."""
    scores = read_scores(scores_path)
    kind = ESTIMATED_IOU if scores is not None else CONFIDENCE
    table = scores if scores is not None else confidence

    def value(name):
        for key in (name, os.path.splitext(name)[0]):
            if key in table:
                return table[key]
        return None

    rows = [{"name": n, "score": value(n), "score_kind": kind} for n in names]
    return sorted(rows, key=lambda r: (r["score"] is None, r["score"] or 0.0, r["name"]))
