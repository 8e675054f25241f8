"""How good is each predicted mask? An estimated IoU with a 90 % interval, without labels.

Signals of one predicted mask (``signals``), all available without ground truth:

- ``agreement``: IoU between the mask and the flipped-back mask of the horizontally flipped
  image (test-time augmentation; two empty masks agree fully);
- ``confidence``: mean ``2 |p - 0.5|`` over the predicted foreground (0 when it is empty);
- ``uncertain``: fraction of the image with ``0.25 < p < 0.75``;
- ``area``: fraction of the image predicted foreground, and its square root;
- ``support_iou`` (task level, when ``metaseg adapt --steps auto`` ran): the mean held-out
  support IoU at the chosen step count (``metaseg.evaluation.autosteps``).

A ``Calibration`` maps them to IoU: a ridge regression on standardised signals (clipped to
[0, 1]) and, for the interval, a second linear model of the size of its error; the
interval is ``estimate +/- q * error size``, q the finite-sample 90 % quantile of the
cross-validated errors divided by their predicted size (split-conformal, normalised),
clipped to [0, 1]. Two such models are fitted: ``masks`` (mask signals only) and
``masks+support`` (with ``support_iou``). ``fit`` fits them on (signals, true IoU) of the
benchmark's training classes (``studies/fit_quality.py``); the result is a small JSON of
coefficients, ``quality.json``, beside the initialisation's ``config.json`` (and copied into
the model ``metaseg adapt`` writes). Without one, ``uncalibrated`` gives the raw flip
agreement as the estimate and no interval (NaN); the commands say so in one warning.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from metaseg.checkpoints.config_file import read_json, write_json
from metaseg.errors import CheckpointError

QUALITY_FILE = "quality.json"
FORMAT_VERSION = 1
COVERAGE = 0.9
MASK_FEATURES = ("agreement", "confidence", "uncertain", "area", "sqrt_area")
SUPPORT_FEATURE = "support_iou"
MASKS, WITH_SUPPORT = "masks", "masks+support"
MIN_ERROR = 0.01  # the smallest error size the interval model may predict


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image IoU of boolean masks [N,S,S]; 1 where both are empty."""
    inter = np.logical_and(a, b).sum(axis=(1, 2))
    union = np.logical_or(a, b).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def signals(foreground, flipped_back) -> np.ndarray:
    """float64 [N, len(MASK_FEATURES)] from foreground probabilities [N,S,S] of the images
    and ``flipped_back`` [N,S,S], those of the horizontally flipped images flipped back."""
    p = np.asarray(foreground, np.float64)
    q = np.asarray(flipped_back, np.float64)
    mask = p > 0.5
    agreement = _iou(mask, q > 0.5)
    margin = 2.0 * np.abs(p - 0.5)
    count = mask.sum(axis=(1, 2))
    confidence = np.where(count > 0, (margin * mask).sum(axis=(1, 2)) / np.maximum(count, 1),
                          0.0)
    uncertain = (np.abs(p - 0.5) < 0.25).mean(axis=(1, 2))
    area = mask.mean(axis=(1, 2))
    return np.stack([agreement, confidence, uncertain, area, np.sqrt(area)], axis=1)


def uncalibrated(features) -> tuple:
    """(estimate, low, high) with no calibration model: the flip agreement, no interval."""
    features = np.asarray(features, np.float64)
    nan = np.full(len(features), math.nan)
    return features[:, MASK_FEATURES.index("agreement")], nan, nan.copy()


class Calibration:
    """The stored calibration (``quality.json``); ``estimate`` maps signals to IoU."""

    def __init__(self, value: dict, path: str = QUALITY_FILE):
        self.value, self.path = value, path
        version = value.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {version!r} is not one this "
                                  f"metaseg reads (1 to {FORMAT_VERSION}); fit it again with "
                                  "python studies/fit_quality.py")
        models = value.get("models")
        if not isinstance(models, dict) or MASKS not in models:
            raise CheckpointError(f"{path} holds no '{MASKS}' model; fit it again with "
                                  "python studies/fit_quality.py")
        self.models = models

    def uses_support(self, support_iou: Optional[float]) -> bool:
        return support_iou is not None and math.isfinite(support_iou) and \
            WITH_SUPPORT in self.models

    def estimate(self, features, support_iou: Optional[float] = None) -> tuple:
        """(estimate, low, high), float64 [N] each in [0, 1], low <= estimate <= high, for
        mask signals [N, len(MASK_FEATURES)] (``signals``) and the task's held-out support
        IoU (None: not measured; the ``masks`` model is used)."""
        features = np.asarray(features, np.float64)
        name = WITH_SUPPORT if self.uses_support(support_iou) else MASKS
        if name == WITH_SUPPORT:
            features = np.concatenate(
                [features, np.full((len(features), 1), float(support_iou))], axis=1)
        try:
            return predict(self.models[name], features)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{self.path}: the '{name}' model is damaged ({e}); fit it "
                                  "again with python studies/fit_quality.py") from None


def _linear(model: dict, features: np.ndarray) -> np.ndarray:
    standard = (features - np.asarray(model["mean"])) / np.asarray(model["scale"])
    return standard @ np.asarray(model["coef"]) + float(model["intercept"])


def predict(model: dict, features: np.ndarray) -> tuple:
    """(estimate, low, high) of one stored model (see the module docstring)."""
    if features.shape[1] != len(model["features"]):
        raise ValueError(f"{len(model['features'])} features expected, got {features.shape[1]}")
    estimate = np.clip(_linear(model, features), 0.0, 1.0)
    error = np.maximum(_linear(model["error"], features), MIN_ERROR)
    half = float(model["q"]) * error
    return estimate, np.clip(estimate - half, 0.0, 1.0), np.clip(estimate + half, 0.0, 1.0)


def read(directory: str) -> Optional[Calibration]:
    """The calibration stored in ``directory`` (None if it has none); CheckpointError (one
    line) for a damaged file."""
    path = os.path.join(directory, QUALITY_FILE)
    value = read_json(path, "calibration fit (python studies/fit_quality.py)")
    return None if value is None else Calibration(value, path)


def write(directory: str, value: dict) -> str:
    """Write ``quality.json`` into ``directory`` atomically; returns its path."""
    path = os.path.join(directory, QUALITY_FILE)
    write_json(path, value)
    return path


# --- fitting ------------------------------------------------------------------------------

def _fit_linear(features: np.ndarray, target: np.ndarray, alpha: float) -> dict:
    from sklearn.linear_model import Ridge  # pylint: disable=import-outside-toplevel
    from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
    scaler = StandardScaler().fit(features)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    ridge = Ridge(alpha=alpha).fit((features - scaler.mean_) / scale, target)
    return {"mean": scaler.mean_.tolist(), "scale": scale.tolist(),
            "coef": ridge.coef_.tolist(), "intercept": float(ridge.intercept_)}


def fit_model(features, iou, names: Sequence[str], *, alpha: float = 1.0, folds: int = 5,
              seed: int = 0) -> dict:
    """One stored model from signals [N, F] and true IoU [N] (see the module docstring):
    the error model and the interval's quantile are fitted on ``folds``-fold
    cross-validated residuals, so the interval is not fitted on the points it covers."""
    from scipy.stats import spearmanr  # pylint: disable=import-outside-toplevel
    from sklearn.model_selection import KFold  # pylint: disable=import-outside-toplevel
    x, y = np.asarray(features, np.float64), np.asarray(iou, np.float64)
    n = len(y)
    if n < 2 * folds:
        raise ValueError(f"calibration needs at least {2 * folds} masks, got {n}")
    predicted = np.empty(n)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        predicted[test] = np.clip(_linear(_fit_linear(x[train], y[train], alpha), x[test]),
                                  0.0, 1.0)
    residual = np.abs(y - predicted)
    error = _fit_linear(x, residual, alpha)
    size = np.maximum(_linear(error, x), MIN_ERROR)
    ratio = np.sort(residual / size)
    rank = min(n, math.ceil((n + 1) * COVERAGE))  # split-conformal finite-sample quantile
    q = float(ratio[rank - 1])
    model = {"features": list(names), **_fit_linear(x, y, alpha), "error": error, "q": q,
             "n": n, "alpha": alpha}
    low, high = np.clip(predicted - q * size, 0, 1), np.clip(predicted + q * size, 0, 1)
    model["cross_validated"] = {
        "spearman": float(spearmanr(predicted, y).statistic),
        "mean_absolute_error": float(residual.mean()),
        "coverage": float(np.mean((y >= low) & (y <= high))),
        "mean_width": float(np.mean(high - low))}
    return model


def fit(mask_features, iou, support_iou=None, *, about: Optional[Dict] = None) -> dict:
    """quality.json's content: the ``masks`` model, and ``masks+support`` when the task-level
    held-out support IoU of every mask is given (``support_iou`` [N], NaN-free)."""
    x = np.asarray(mask_features, np.float64)
    models = {MASKS: fit_model(x, iou, MASK_FEATURES)}
    if support_iou is not None:
        with_support = np.concatenate([x, np.asarray(support_iou, np.float64)[:, None]], 1)
        models[WITH_SUPPORT] = fit_model(with_support, iou,
                                         MASK_FEATURES + (SUPPORT_FEATURE,))
    return {"format_version": FORMAT_VERSION, "coverage": COVERAGE, "models": models,
            "about": dict(about or {}),
            "what": "metaseg's per-mask quality calibration (metaseg.evaluation.quality): "
                    "ridge regression of IoU on mask signals, normalised split-conformal "
                    f"{COVERAGE:.0%} interval"}


def summary(estimates: Sequence[float]) -> dict:
    """A task's summary: how many masks, their mean estimated IoU (NaNs ignored)."""
    values = np.asarray(list(estimates), np.float64)
    finite = values[np.isfinite(values)]
    return {"masks": int(len(values)),
            "mean_estimated_iou": float(finite.mean()) if len(finite) else math.nan}


def ranked_for_labelling(files: Sequence[str], estimates: Sequence[float],
                         agreement: Sequence[float]) -> List[str]:
    """``files`` most useful to label first: lowest estimated IoU, then lowest flip agreement
    (the disagreement), then name."""
    order = sorted(range(len(files)), key=lambda i: (
        _key(estimates[i]), _key(agreement[i]), files[i]))
    return [files[i] for i in order]


def _key(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.inf
