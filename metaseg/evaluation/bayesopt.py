"""Bayesian optimisation with a Gaussian-process surrogate and expected improvement.

What the original got from scikit-optimize (``Optimizer(dims, "GP", acq_func="EI",
n_initial_points=n // 2)`` over log-uniform dimensions), rebuilt on scikit-learn's
``GaussianProcessRegressor`` so that no unmaintained package is needed. Nothing here knows
about networks: an objective is any function of a dict of values, to be maximised.

Points live in the unit cube ``[0, 1]^d`` of the searched dimensions, each mapped to its
``[low, high]`` range on a log scale; a dimension with low == high is held fixed and not
searched. Integer dimensions are rounded, and candidates are snapped to the integers before
the acquisition is computed, so the surrogate only ever sees points that can be evaluated.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from threadpoolctl import threadpool_limits

from metaseg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One hyperparameter: a closed range sampled on a log scale (needs low > 0 if searched)."""

    name: str
    low: float
    high: float
    integer: bool = False

    def __post_init__(self):
        if self.low > self.high:
            raise ConfigError(f"{self.name}: range low ({self.low}) exceeds high ({self.high})")
        if self.searched and self.low <= 0:
            raise ConfigError(f"{self.name}: range [{self.low}, {self.high}] is sampled on a log "
                              "scale, so both ends must be positive")

    @property
    def searched(self) -> bool:
        return self.low != self.high

    def value(self, u: float):
        """The value at unit coordinate ``u`` in [0, 1] (log scale; integers rounded)."""
        if not self.searched:
            return int(self.low) if self.integer else float(self.low)
        log_low, log_high = math.log(self.low), math.log(self.high)
        v = math.exp(log_low + float(np.clip(u, 0.0, 1.0)) * (log_high - log_low))
        if self.integer:
            return int(min(max(round(v), self.low), self.high))
        return float(min(max(v, self.low), self.high))

    def unit(self, value) -> float:
        """Inverse of :meth:`value` (for a searched dimension)."""
        log_low, log_high = math.log(self.low), math.log(self.high)
        return (math.log(value) - log_low) / (log_high - log_low)


class SearchSpace:
    """The dimensions of a search; only those with low != high are searched."""

    def __init__(self, dimensions: Sequence[Dimension]):
        self.dimensions = tuple(dimensions)
        self.searched = tuple(d for d in self.dimensions if d.searched)

    def __len__(self) -> int:
        """Number of searched dimensions (the GP's input size)."""
        return len(self.searched)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random points: float64 [n, d] in the unit cube, snapped to the integers."""
        return self.snap(rng.uniform(size=(n, len(self))))

    def values(self, point: np.ndarray) -> Dict[str, float]:
        """Every dimension's value at ``point`` [d] (fixed dimensions at their value)."""
        coords = dict(zip((d.name for d in self.searched), np.asarray(point, float)))
        return {d.name: d.value(coords.get(d.name, 0.0)) for d in self.dimensions}

    def point(self, values: Dict[str, float]) -> np.ndarray:
        """The unit-cube point [d] of ``values``."""
        return np.array([d.unit(values[d.name]) for d in self.searched], float)

    def snap(self, points: np.ndarray) -> np.ndarray:
        """Round integer coordinates to the point of the integer they map to: [n, d]."""
        points = np.array(points, float).reshape(-1, len(self))
        for j, dim in enumerate(self.searched):
            if dim.integer:
                points[:, j] = [dim.unit(dim.value(u)) for u in points[:, j]]
        return points


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float,
                         xi: float = 0.01) -> np.ndarray:
    """EI of a maximisation at points with posterior ``mean`` and ``std`` (both [n]).

    ``E[max(f - best - xi, 0)]`` under ``f ~ N(mean, std^2)``; with zero ``std`` it is the
    plain improvement.
    """
    improvement = mean - best - xi
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, improvement / std, 0.0)
    ei = improvement * norm.cdf(z) + std * norm.pdf(z)
    return np.where(std > 0, ei, np.maximum(improvement, 0.0))


class BayesianOptimizer:
    """Ask/tell maximiser: ``num_initial`` random points, then the GP's EI maximiser.

    Args:
      space: the search space.
      num_points: the budget (``--num_configs_to_sample``); the first ``num_points // 2``
        are random, as the original.
      seed: seeds every random choice (a ``np.random.default_rng``), so a search repeats.
      num_candidates: random points the acquisition is maximised over.
      restarts: restarts of the GP's kernel-hyperparameter fit.
    """

    def __init__(self, space: SearchSpace, num_points: int, *, seed: int = 0,
                 num_initial: Optional[int] = None, num_candidates: int = 2000,
                 restarts: int = 3, xi: float = 0.01):
        self.space = space
        self.num_initial = num_points // 2 if num_initial is None else num_initial
        self.num_candidates, self.restarts, self.xi = num_candidates, restarts, xi
        self.rng = np.random.default_rng(seed)
        self.points: List[np.ndarray] = []
        self.scores: List[float] = []

    def ask(self) -> Dict[str, float]:
        """The values to evaluate next (every dimension, fixed ones included)."""
        if len(self.space) == 0:  # nothing searched: every configuration is the same
            return self.space.values(np.zeros(0))
        if len(self.points) < self.num_initial or not self.scores:
            return self.space.values(self.space.sample(self.rng, 1)[0])
        candidates = self.space.sample(self.rng, self.num_candidates)
        # The matrices are tiny (points x candidates): BLAS threads only cost time, a lot of
        # it on a busy machine.
        with threadpool_limits(limits=1, user_api="blas"):
            mean, std = self._surrogate().predict(candidates, return_std=True)
        finite = [s for s in self.scores if math.isfinite(s)]
        best = max(finite) if finite else 0.0
        ei = expected_improvement(mean, std, best, self.xi)
        return self.space.values(candidates[int(np.argmax(ei))])

    def tell(self, values: Dict[str, float], score: float) -> None:
        """Record the score of ``values`` (a NaN score is recorded as the worst seen)."""
        self.points.append(self.space.point(values))
        self.scores.append(float(score))

    def _surrogate(self) -> GaussianProcessRegressor:
        y = np.array(self.scores, float)
        finite = np.isfinite(y)
        y[~finite] = y[finite].min() if finite.any() else 0.0
        d = len(self.space)
        kernel = (ConstantKernel(1.0, (1e-3, 1e3))
                  * Matern(length_scale=np.ones(d), length_scale_bounds=(1e-2, 1e2), nu=2.5)
                  + WhiteKernel(1e-4, (1e-8, 1e-1)))  # validation scores are noisy
        gp = GaussianProcessRegressor(kernel, normalize_y=True,
                                      n_restarts_optimizer=self.restarts,
                                      random_state=int(self.rng.integers(2**31 - 1)))
        with warnings.catch_warnings():  # a kernel parameter at its bound is not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(np.stack(self.points), y)
        return gp


def best_index(scores: Sequence[float]) -> int:
    """Index of the greatest finite score, the first of equals (0 if none is finite)."""
    best = None
    for i, score in enumerate(scores):
        if math.isfinite(score) and (best is None or score > scores[best]):
            best = i
    return 0 if best is None else best


def maximize(objective: Callable[[Dict[str, float]], float], space: SearchSpace,
             num_points: int, *, seed: int = 0,
             **options) -> Tuple[Dict[str, float], float, List[Tuple[Dict[str, float], float]]]:
    """Maximise ``objective`` over ``space`` with ``num_points`` (>= 1) evaluations.

    Returns (best values, best score, every (values, score) in evaluation order); the first
    of equal best scores wins and NaN scores are never best.
    """
    optimizer = BayesianOptimizer(space, num_points, seed=seed, **options)
    history = []
    for _ in range(num_points):
        values = optimizer.ask()
        score = float(objective(values))
        optimizer.tell(values, score)
        history.append((values, score))
    best = best_index([score for _, score in history])
    return history[best][0], history[best][1], history
