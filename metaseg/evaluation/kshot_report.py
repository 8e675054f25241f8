"""Results of the k-shot learning curves (``metaseg.evaluation.kshot``): rows, CSV, plot.

The CSV ``k-shot-results.csv`` has one row per (task, k, repetition, step count): columns
``task, k, sample, steps, mIoU``. The plot (matplotlib, the optional extra
``metaseg[plot]``) shows mean mIoU against k on a log axis; without matplotlib one log line
says it was skipped and how to install it.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from metaseg.evaluation.evaluate import EvalResults

CSV_NAME = "k-shot-results.csv"
CSV_COLUMNS = ("task", "k", "sample", "steps", "mIoU")
PLOT_NAME = "k-shot-learning-curves.png"
PLOT_HINT = "pip install 'metaseg[plot]' (or pip install matplotlib)"
MEAN_LABEL = "mean over tasks"


@dataclasses.dataclass(frozen=True)
class KShotRow:
    """One CSV row: query mIoU (in [0, 1]) of ``task`` after ``steps`` steps on k examples."""

    task: str
    k: int
    sample: int
    steps: int
    miou: float


@dataclasses.dataclass
class KShotResults:
    """Every row of the experiment and the files written (``plot_path`` None: skipped)."""

    rows: List[KShotRow]
    csv_path: str
    plot_path: Optional[str] = None

    def as_eval_results(self) -> EvalResults:
        """The rows as ``EvalResults``: per task, every (k, steps, repetition) score; the
        headline mean is the mean over the whole learning curve."""
        scores: Dict[str, List[float]] = {}
        for row in self.rows:
            scores.setdefault(row.task, []).append(row.miou)
        samples = sorted({row.sample for row in self.rows})
        means = [float(np.nanmean([r.miou for r in self.rows if r.sample == s]))
                 for s in samples]
        return EvalResults(scores, means)


def mean_by_k(rows: Sequence[KShotRow]) -> Dict[int, float]:
    """{k: mean mIoU over every task, repetition and step count at that k}."""
    return {k: float(np.nanmean([r.miou for r in rows if r.k == k]))
            for k in sorted({r.k for r in rows})}


def write_csv(directory: str, rows: Sequence[KShotRow]) -> str:
    """Write ``<directory>/k-shot-results.csv`` atomically (floats in full); return its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CSV_NAME)
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows((r.task, r.k, r.sample, r.steps, repr(r.miou)) for r in rows)
    os.replace(path + ".tmp", path)
    return path


def curves(rows: Sequence[KShotRow], by_steps: bool) -> Dict[str, List[Tuple[int, float]]]:
    """{label: [(k, mean mIoU)] by increasing k}.

    ``by_steps`` (a ``--k_shot_iter_range`` run): one curve per step count, averaged over
    tasks and repetitions. Otherwise one curve per task, plus their mean when there are
    several tasks.
    """
    groups: Dict[str, Dict[int, List[float]]] = {}
    several = len({r.task for r in rows}) > 1
    for r in rows:
        labels = [f"{r.steps} steps"] if by_steps else [r.task] + [MEAN_LABEL] * several
        for label in labels:
            groups.setdefault(label, {}).setdefault(r.k, []).append(r.miou)
    return {label: [(k, float(np.nanmean(v))) for k, v in sorted(by_k.items())]
            for label, by_k in groups.items()}


def plot_curves(rows: Sequence[KShotRow], path: str, *, by_steps: bool) -> Optional[str]:
    """Write a PNG of mIoU against k (log axis) and return ``path``; without matplotlib,
    log one line saying how to install it and return None."""
    if importlib.util.find_spec("matplotlib") is None:
        logging.warning("k-shot plot skipped: matplotlib is not installed; %s", PLOT_HINT)
        return None
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    figure = Figure(figsize=(6, 4))  # no pyplot: no global figure state, no GUI backend
    axes = figure.subplots()
    for label, points in curves(rows, by_steps).items():
        axes.plot(*zip(*points), marker="o", label=label)
    axes.set(xscale="log", xlabel="k (support examples)", ylabel="query mIoU", ylim=(0, 1),
             title="FP-k k-shot learning curves")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path
