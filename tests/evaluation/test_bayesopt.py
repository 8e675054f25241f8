"""The GP/EI optimiser on synthetic functions, apart from any network: log-scale sampling,
integer and fixed dimensions, expected improvement, half random first, seeding, and finding
known optima better than random search with the same budget."""
import math

import numpy as np
import pytest

from metaseg.errors import ConfigError
from metaseg.evaluation import bayesopt
from metaseg.evaluation.bayesopt import BayesianOptimizer, Dimension, SearchSpace

LR = Dimension("lr", 1e-4, 1e-1)
BATCH = Dimension("batch", 1, 64, integer=True)
FIXED = Dimension("drop", 0.2, 0.2)


def test_dimension_maps_the_unit_interval_on_a_log_scale():
    assert LR.value(0.0) == pytest.approx(1e-4) and LR.value(1.0) == pytest.approx(1e-1)
    assert LR.value(0.5) == pytest.approx(math.sqrt(1e-4 * 1e-1))  # geometric mean
    assert LR.value(1 / 3) == pytest.approx(1e-3)
    assert LR.unit(1e-3) == pytest.approx(1 / 3)
    assert BATCH.value(0.5) == 8 and isinstance(BATCH.value(0.5), int)  # sqrt(64) = 8
    assert FIXED.value(0.9) == 0.2 and not FIXED.searched


def test_bad_ranges():
    with pytest.raises(ConfigError, match="log scale"):
        Dimension("drop", 0.0, 0.5)
    with pytest.raises(ConfigError, match="log scale"):
        Dimension("lr", -1.0, 0.5)
    with pytest.raises(ConfigError, match="exceeds"):
        Dimension("lr", 0.5, 0.1)
    Dimension("drop", 0.0, 0.0)  # held fixed: zero is fine


def test_samples_are_log_uniform_and_integers_cover_their_range():
    space = SearchSpace([LR, FIXED, BATCH])
    assert len(space) == 2 and [d.name for d in space.searched] == ["lr", "batch"]
    rng = np.random.default_rng(0)
    values = [space.values(p) for p in space.sample(rng, 4000)]
    lrs = np.array([v["lr"] for v in values])
    # log-uniform: a third of the samples below 1e-3 (a uniform draw would give 0.9 %)
    assert np.mean(lrs < 1e-3) == pytest.approx(1 / 3, abs=0.03)
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    batches = {v["batch"] for v in values}
    assert all(isinstance(b, int) for b in batches) and {1, 64} <= batches <= set(range(1, 65))
    assert all(v["drop"] == 0.2 for v in values)


def test_snapped_points_map_back_to_themselves():
    space = SearchSpace([LR, BATCH])
    points = space.sample(np.random.default_rng(1), 50)
    for p in points:
        np.testing.assert_allclose(space.point(space.values(p)), p, atol=1e-12)


def test_expected_improvement_against_monte_carlo():
    rng = np.random.default_rng(0)
    mean, std, best, xi = np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.3, 0.05]), 0.6, 0.01
    draws = rng.normal(mean, std, size=(400_000, 3))
    monte_carlo = np.maximum(draws - best - xi, 0).mean(axis=0)
    np.testing.assert_allclose(bayesopt.expected_improvement(mean, std, best, xi),
                               monte_carlo, rtol=0.02, atol=1e-4)
    # no uncertainty: the plain improvement
    np.testing.assert_allclose(
        bayesopt.expected_improvement(np.array([0.5, 0.7]), np.zeros(2), 0.6, 0.0), [0.0, 0.1])


def test_first_half_random_then_one_gp_fit_per_point(monkeypatch):
    space = SearchSpace([LR])
    opt = BayesianOptimizer(space, 7, seed=0, num_candidates=100)
    assert opt.num_initial == 3  # the original: int(n / 2)
    fits = []
    surrogate = opt._surrogate
    monkeypatch.setattr(opt, "_surrogate", lambda: fits.append(len(opt.points)) or surrogate())
    for _ in range(7):
        values = opt.ask()
        opt.tell(values, -abs(math.log10(values["lr"]) + 2))
    assert fits == [3, 4, 5, 6]  # GP-guided from the 4th point, refit on all points so far


def test_seeded():
    space = SearchSpace([LR, BATCH])

    def objective(v):
        return -(math.log10(v["lr"]) + 2.5) ** 2 - (math.log2(v["batch"]) - 4) ** 2

    runs = [bayesopt.maximize(objective, space, 6, seed=s, num_candidates=200)[2]
            for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_nothing_searched_asks_the_fixed_values():
    opt = BayesianOptimizer(SearchSpace([FIXED, Dimension("lr", 0.01, 0.01)]), 4)
    for score in (0.1, 0.2, 0.3):
        assert opt.ask() == {"drop": 0.2, "lr": 0.01}
        opt.tell(opt.ask(), score)


def test_best_index_first_of_equals_and_never_nan():
    assert bayesopt.best_index([0.1, 0.5, 0.5, 0.2]) == 1
    assert bayesopt.best_index([math.nan, 0.3, math.nan]) == 1
    assert bayesopt.best_index([math.nan]) == 0


def _regrets(objective, optimum, space, budget, seeds):
    """Mean regret (optimum minus best found) of BO and of random search, same budget."""
    bo, random_search = [], []
    for seed in seeds:
        _, best, history = bayesopt.maximize(objective, space, budget, seed=seed)
        assert len(history) == budget
        bo.append(optimum - best)
        points = space.sample(np.random.default_rng(1000 + seed), budget)
        random_search.append(optimum - max(objective(space.values(p)) for p in points))
    return float(np.mean(bo)), float(np.mean(random_search))


def test_finds_the_optimum_of_a_1d_function_better_than_random_search():
    space = SearchSpace([LR, FIXED])
    objective = lambda v: -(math.log10(v["lr"]) - math.log10(4e-3)) ** 2  # noqa: E731
    bo, random_search = _regrets(objective, 0.0, space, budget=8, seeds=range(3))
    assert bo < 0.005 and bo < random_search / 3, (bo, random_search)


def test_finds_the_optimum_of_a_2d_function_better_than_random_search():
    space = SearchSpace([LR, BATCH])

    def objective(v):  # peak at lr = 3e-3, batch = 8; batch on its log scale
        return -(math.log10(v["lr"]) - math.log10(3e-3)) ** 2 \
            - 0.125 * (math.log2(v["batch"]) - 3) ** 2

    bo, random_search = _regrets(objective, 0.0, space, budget=12, seeds=range(3))
    assert bo < 0.01 and bo < random_search / 3, (bo, random_search)
