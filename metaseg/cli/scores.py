"""``scores.csv`` beside ``masks/``: each mask's estimated IoU and 90 % interval, and
``suggested.txt``: which query images to label next (``metaseg adapt --suggest N``).

The estimate is ``metaseg.evaluation.quality``'s: mask signals (flip agreement, confidence,
area) and, after ``--steps auto``, the held-out support IoU, mapped to IoU by the
calibration (``quality.json``) stored with the initialisation. Without one the estimate is
the raw flip agreement and ``low``/``high`` are ``nan``, said in one warning line.

This module owns the file: its name (``SCORES_FILE``), its header (``HEADER``), the writer
(``MaskScores.write``) and the reader (``read_scores``, which the app's review order uses).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from metaseg.cli import output as output_files
from metaseg.errors import ConfigError
from metaseg.evaluation import quality

SCORES_FILE = "scores.csv"
HEADER = ("file", "estimated_iou", "low", "high")
SUGGESTED_FILE = "suggested.txt"


def read_scores(path: str) -> Optional[Dict[str, float]]:
    """{file name and its stem: estimated IoU} from a ``scores.csv`` (rows whose estimate
    is empty are left out); None if there is no such file."""
    if not os.path.exists(path):
        return None
    file_column, estimate_column = HEADER[0], HEADER[1]
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    found: Dict[str, float] = {}
    for row in rows:
        if row.get(file_column) and row.get(estimate_column) not in (None, ""):
            name = os.path.basename(row[file_column])
            found[name] = found[os.path.splitext(name)[0]] = float(row[estimate_column])
    return found


def find_calibration(directory: str) -> Optional[quality.Calibration]:
    """The calibration stored in ``directory`` (an initialisation or model folder), or None
    after one warning line saying what the scores are without it."""
    calibration = quality.read(directory) if os.path.isdir(directory) else None
    if calibration is None:
        logging.warning(
            "%s has no %s (the calibration of the mask quality estimate): %s gives the raw "
            "flip agreement as estimated_iou and no interval (low, high = nan); fit one with "
            "python studies/fit_quality.py --init %s", directory, quality.QUALITY_FILE,
            SCORES_FILE, directory)
    return calibration


def check_suggest(count: Optional[int]) -> None:
    if count is not None and count < 1:
        raise ConfigError(f"--suggest must be a positive number of images, got {count}")


class MaskScores:
    """Collects each segmented image's signals and estimate (``segment.segment_files``
    calls ``add`` per batch), then writes ``scores.csv``."""

    def __init__(self, calibration: Optional[quality.Calibration],
                 support_iou: Optional[float] = None):
        self.calibration, self.support_iou = calibration, support_iou
        self.files: List[str] = []
        self.features: List[np.ndarray] = []
        self.rows: List[tuple] = []

    def add(self, paths: Sequence[str], foreground, flipped_back) -> None:
        """Foreground probabilities [N,S,S] of the images ``paths`` and those of the flipped
        images, flipped back."""
        features = quality.signals(foreground, flipped_back)
        if self.calibration is None:
            estimate, low, high = quality.uncalibrated(features)
        else:
            estimate, low, high = self.calibration.estimate(features, self.support_iou)
        for path, row in zip(paths, zip(estimate, low, high)):
            self.files.append(os.path.basename(path))
            self.rows.append(tuple(float(v) for v in row))
        self.features.extend(features)

    @property
    def how(self) -> str:
        if self.calibration is None:
            return "uncalibrated: raw flip agreement, no interval"
        model = quality.WITH_SUPPORT if self.calibration.uses_support(self.support_iou) \
            else quality.MASKS
        return f"calibrated ({model} model of {self.calibration.path})"

    def write(self, folder: str) -> str:
        """``<folder>/scores.csv``, appearing only when complete; returns its path."""
        path = os.path.join(folder, SCORES_FILE)
        with output_files.replaced(path) as temporary:
            with open(temporary, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(HEADER)
                for name, row in zip(self.files, self.rows):
                    writer.writerow([name] + [_number(v) for v in row])
        return path

    def summary(self) -> dict:
        """The task's summary (adaptation.json's ``query_quality``)."""
        return {**quality.summary(r[0] for r in self.rows), "estimate": self.how,
                "support_iou": self.support_iou, "scores": SCORES_FILE}

    def log_summary(self, path: str) -> None:
        s = self.summary()
        logging.info("Estimated mean IoU of the %d query masks: %.3f (%s); per mask in %s",
                     s["masks"], s["mean_estimated_iou"], self.how, path)

    def suggest(self, count: int, folder: str) -> List[str]:
        """Write the ``count`` query images most useful to label next to
        ``<folder>/suggested.txt`` (one per line, most useful first) and print them."""
        agreement = [f[quality.MASK_FEATURES.index("agreement")] for f in self.features]
        ranked = quality.ranked_for_labelling(self.files, [r[0] for r in self.rows],
                                              agreement)
        if count > len(ranked):
            logging.warning("--suggest %d: only %d query images were segmented; suggesting "
                            "all of them", count, len(ranked))
        chosen = ranked[:count]
        path = os.path.join(folder, SUGGESTED_FILE)
        with output_files.replaced(path) as temporary:
            with open(temporary, "w", encoding="utf-8") as f:
                f.write("".join(name + "\n" for name in chosen))
        print(f"Label next (most useful first, lowest estimated IoU; also in {path}):",
              flush=True)
        for name in chosen:
            print(name, flush=True)
        sys.stdout.flush()
        return chosen


def _number(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.4f}"
