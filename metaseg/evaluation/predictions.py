"""Saving query predictions as images (``SAVE_PREDICTIONS=1`` / ``--save_predictions_dir``)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

OVERLAY_COLOUR = np.array([255, 0, 0], np.float32)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 [S,S,3]: ``image`` (float [S,S,3] in [0,255]) tinted red where ``mask`` (bool)."""
    out = np.asarray(image, np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * OVERLAY_COLOUR
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def save_overlays(directory: str, task: str, sample: int, images, probabilities, labels) -> None:
    """Per query image, ``prediction_<task>_<sample>_<i>.png`` and ``truth_..._<i>.png``.

    images float32 [Q,S,S,3] in [0,255]; probabilities and labels float32 [Q,S,S,2].
    """
    os.makedirs(directory, exist_ok=True)
    images, probabilities, labels = (np.asarray(a) for a in (images, probabilities, labels))
    for i, image in enumerate(images):
        stem = f"{task}_{sample}_{i}.png"
        Image.fromarray(overlay(image, probabilities[i, ..., 1] > 0.5)).save(
            os.path.join(directory, "prediction_" + stem))
        Image.fromarray(overlay(image, labels[i, ..., 1] > 0.5)).save(
            os.path.join(directory, "truth_" + stem))
