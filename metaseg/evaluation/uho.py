"""Update-hyperparameter optimisation (UHO) on the validation tasks (REFERENCE.md section 8).

Bayesian optimisation (``bayesopt``) over the inner loop's learning rate, final-layer
dropout rate, augmentation rate and batch size. One configuration is scored on every
validation task: fine-tune up to ``--max_steps`` steps, scoring the query mIoU after each
step inside the compiled adaptation (``Adapter.scoring_adaptation``), and read the best step
and best mIoU off that vector with the original's early stopping (``early_stopping.scan``:
patience 50, ``--min_steps``). All ``--max_steps`` steps run; later steps cannot change
earlier scores, so the result is the one stopping early would give (at most ~50 steps of
extra work a task, and no per-step trip to Python). A configuration's score is the mean best
mIoU over tasks; the best configuration's learning rate and median best step count are the
result. Every configuration appends its rows to a CSV as soon as it is scored. (With
``--min_steps == --max_steps`` the original skipped early stopping and scored every task at
that step count; the scan gives exactly that: best step = ``--min_steps``, its score.)

Departures from the original, deliberate: every configuration is scored on the same
episodes (seed ``--seed``, sample 0), so the comparison between configurations is not
drowned in episode noise; with a non-fixed ``--learning_rate_scheduler`` the schedule's total
is ``--max_steps`` (the original refused a schedule together with UHO).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from metaseg.config import EvalConfig, InnerConfig, ModelConfig, RunConfig, UHOConfig
from metaseg.data import episodes
from metaseg.errors import ConfigError
from metaseg.evaluation import bayesopt, early_stopping, metrics
from metaseg.evaluation.evaluate import Evaluator
from metaseg.evaluation.model_variants import copy_weights
from metaseg.meta.adapt import Adapter
from metaseg.models import build_model
from metaseg.specs import EpisodeSpec

# The original's names, used as CSV columns.
LR, DROP, AUG, BATCH = "lr", "drop_rate", "aug_rate", "inner_batch_size"
CSV_COLUMNS = ("config", LR, DROP, AUG, BATCH, "task_ID", "best_num_steps", "mIoU")
FINE_TUNE_DIR = "fine-tuned_on_train_val_with_optimized_update_hyperparams"


def search_space(uho: UHOConfig) -> bayesopt.SearchSpace:
    """The four ranges of the flags; batch size is an integer."""
    return bayesopt.SearchSpace([
        bayesopt.Dimension(LR, uho.lr_search_range_low, uho.lr_search_range_high),
        bayesopt.Dimension(DROP, uho.drop_rate_search_range_low, uho.drop_rate_search_range_high),
        bayesopt.Dimension(AUG, uho.aug_rate_search_range_low, uho.aug_rate_search_range_high),
        bayesopt.Dimension(BATCH, uho.batch_size_search_range_low,
                           uho.batch_size_search_range_high, integer=True)])


def results_csv_path(directory: str, name: str, shots: int) -> str:
    """``<directory>/<name>`` with the shot count added as the original did:
    ``val-set_hyper_param_search_results.csv`` -> ``..._results_5-shot.csv``."""
    root, ext = os.path.splitext(name)
    return os.path.join(directory, f"{root}_{shots}-shot{ext}")


@dataclasses.dataclass
class ConfigResult:
    """One configuration's early-stopping results, one entry per validation task."""

    index: int  # 1-based, as in the CSV and the log
    values: Dict[str, float]  # LR, DROP, AUG, BATCH
    tasks: List[str]
    best_steps: List[int]
    mious: List[float]

    @property
    def score(self) -> float:
        """Mean best mIoU over tasks (NaNs ignored): what the search maximises."""
        finite = [m for m in self.mious if np.isfinite(m)]
        return float(np.mean(finite)) if finite else float("nan")

    @property
    def median_steps(self) -> int:
        """Median best step count, truncated to an int as the original did."""
        return int(np.median(self.best_steps))

    def rows(self) -> list:
        v = self.values
        return [[self.index, v[LR], v[DROP], v[AUG], int(v[BATCH]), task, steps, miou]
                for task, steps, miou in zip(self.tasks, self.best_steps, self.mious)]


@dataclasses.dataclass
class UHOResult:
    """The chosen learning rate and step count, and every configuration's results."""

    learning_rate: float
    steps: int
    best: ConfigResult
    configs: List[ConfigResult]


class UpdateHyperparameterSearch:
    """UHO of ``model``'s fine-tuning on a store of validation tasks.

    Args:
      model: the initialisation (its variables are never changed).
      inner, eval_config, uho: the run's settings (shots, prediction mode, seed, ranges...).
      model_drop_rate: ``model``'s final-layer dropout rate.
      rebuild: ``rate -> keras.Model`` building the same network with another final-layer
        dropout rate (a Keras model's rate is fixed when it is built); needed only when the
        search asks for a rate other than ``model_drop_rate``. Its weights are overwritten
        with ``model``'s.
      adapter: ``model``'s Adapter, if one exists already.
      csv_path: where rows are appended (None: no file).
      seed: seeds the search (random points, GP fits).
    """

    def __init__(self, model: keras.Model, inner: InnerConfig, eval_config: EvalConfig,
                 uho: UHOConfig, *, model_drop_rate: float = 0.0,
                 rebuild: Optional[Callable[[float], keras.Model]] = None,
                 adapter: Optional[Adapter] = None, csv_path: Optional[str] = None,
                 seed: int = 0):
        self.inner, self.eval, self.uho = inner, eval_config, uho
        self.space = search_space(uho)
        self.rebuild, self.csv_path, self.seed = rebuild, csv_path, seed
        self._base = (float(model_drop_rate), model, adapter)
        self._variant = None  # (rate, model, adapter) of the last rebuilt network
        self._rng = np.random.default_rng(seed)  # seed states of dropout layers a variant adds
        self._check()

    def _check(self) -> None:
        uho = self.uho
        # the largest batch the search may sample must fit the support set
        EpisodeSpec.evaluation(self.eval, self.inner, steps=uho.max_steps,
                               batch_size=uho.batch_size_search_range_high,
                               fields={"size": "uho.batch_size_search_range_high"})
        if uho.aug_rate_search_range_low != uho.aug_rate_search_range_high and \
                not self.inner.augment:
            logging.warning("UHO searches --aug_rate but --augment is off, so it has no effect")

    def run(self, store) -> UHOResult:
        """Search with ``--num_configs_to_sample`` configurations; see the module docstring."""
        num = self.uho.num_configs_to_sample
        if len(self.space) == 0:
            logging.warning("UHO: every search range has low == high; scoring that one "
                            "configuration instead of %d identical ones", num)
            num = 1
        if self.csv_path and os.path.exists(self.csv_path):
            logging.warning("UHO: appending to the existing %s, as the original did",
                            self.csv_path)
        logging.info("UHO over %d validation tasks, %d configurations, %d searched "
                     "hyperparameters (%s)", len(store), num, len(self.space),
                     ", ".join(d.name for d in self.space.searched) or "none")
        configs = []  # filled by _score_next, in evaluation order
        bayesopt.maximize(lambda values: self._score_next(configs, values, store, num),
                          self.space, num, seed=self.seed)
        best = configs[bayesopt.best_index([c.score for c in configs])]
        logging.info("UHO chose learning rate %g and %d inner steps (configuration %d: %s; "
                     "mean best mIoU %.4f, median best step count %d)", best.values[LR],
                     best.median_steps, best.index, _describe(best.values), best.score,
                     best.median_steps)
        return UHOResult(best.values[LR], best.median_steps, best, configs)

    def _score_next(self, configs, values, store, num) -> float:
        result = self.score(len(configs) + 1, values, store)
        configs.append(result)
        if self.csv_path:
            _append_rows(self.csv_path, result.rows())
        logging.info("UHO configuration %d of %d (%s): mean best mIoU %.4f, median best step "
                     "count %d", result.index, num, _describe(values), result.score,
                     result.median_steps)
        return result.score

    def score(self, index: int, values: Dict[str, float], store) -> ConfigResult:
        """Early-stopping results of one configuration on every task of ``store``."""
        model, adapter = self._network(float(values[DROP]))
        lr, batch, uho = float(values[LR]), int(values[BATCH]), self.uho
        scorer = adapter.scoring_adaptation(metrics.binary_iou,
                                            transductive=self.eval.transductive)
        start = adapter.initial_state()
        tasks, best_steps, mious = [], [], []
        episode = EpisodeSpec.evaluation(
            self.eval, self.inner, steps=uho.max_steps, batch_size=batch,
            aug_rate=float(values[AUG]), fields={"size": "uho.batch_size_search_range_high",
                                                 "aug_rate": "uho.aug_rate_search_range_high"})
        data = episodes.evaluation_dataset(store, range(len(store)), episode,
                                           seed=self.eval.seed, sample=0, prefetch=1)
        for element in data:
            scores = scorer(start, element["x"], element["y"], element["support_x"],
                            element["query_x"], element["query_y"], tf.constant(lr, tf.float32),
                            tf.constant(uho.max_steps)).numpy()
            found = early_stopping.scan(scores, min_steps=uho.min_steps)
            tasks.append(store.names[int(element["task"])])
            best_steps.append(found.best_steps)
            mious.append(found.best_score)
        result = ConfigResult(index, dict(values), tasks, best_steps, mious)
        if uho.eval_tasks_with_median_early_stopping_iterations:
            result.mious = self._rescore_with_median(result, model, adapter, store)
        return result

    def _rescore_with_median(self, result, model, adapter, store) -> List[float]:
        """``--eval_tasks_with_median_early_stopping_iterations``: the original then scored
        every task again, fine-tuned for the median best step count, and used those scores."""
        inner = dataclasses.replace(self.inner, learning_rate=float(result.values[LR]),
                                    aug_rate=float(result.values[AUG]))
        config = dataclasses.replace(self.eval, eval_batch=int(result.values[BATCH]),
                                     save_predictions_dir=None)
        scores = Evaluator(model, inner, config, adapter=adapter).evaluate(
            store, num_samples=1, serial=True, steps=result.median_steps,
            label=f"UHO configuration {result.index} at {result.median_steps} steps")
        return [scores.task_scores[name][0] for name in result.tasks]

    def _network(self, drop_rate: float):
        """(model, adapter) with final-layer dropout ``drop_rate`` and the base weights."""
        base_rate, model, adapter = self._base
        if drop_rate == base_rate:
            if adapter is None:
                adapter = Adapter(model, self.inner)
                self._base = (base_rate, model, adapter)
            return model, adapter
        if self._variant is None or self._variant[0] != drop_rate:
            if self.rebuild is None:
                raise ConfigError(
                    f"UHO asks for final-layer dropout {drop_rate} but the model was built with "
                    f"{base_rate} and cannot be rebuilt; set --drop_rate_search_range_low/high "
                    f"to {base_rate}")
            self._variant = None  # free the previous variant before building the next
            variant = self.rebuild(drop_rate)
            copy_weights(model, variant, self._rng)
            self._variant = (drop_rate, variant, Adapter(variant, self.inner))
        return self._variant[1:]


def _describe(values: Dict[str, float]) -> str:
    return (f"{LR}={values[LR]:.6g}, {DROP}={values[DROP]:.4g}, {AUG}={values[AUG]:.4g}, "
            f"{BATCH}={int(values[BATCH])}")


def _append_rows(path: str, rows: list) -> None:
    """Append complete rows (and the header to a new file), so a crash keeps what is done."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)


# --- what run_metasegnet.py does with it ------------------------------------------------

def dropout_variant_builder(model_config: ModelConfig,
                            image_size: Optional[int] = None) -> Callable[[float], keras.Model]:
    """``rate -> model`` of the run's architecture with another final-layer dropout rate
    (``image_size``: the run's ``--image_size``, for models built for one size).

    No backbone weights are loaded or downloaded: ``copy_weights`` overwrites them all.
    """
    def build(rate: float) -> keras.Model:
        return build_model(dataclasses.replace(
            model_config, final_layer_dropout_rate=rate, backbone_weights=None,
            restore_efficient_net_weights_from=None), image_size=image_size)
    return build


def optimize_for_run(config: RunConfig, model: keras.Model, val_store,
                     adapter: Optional[Adapter] = None) -> UHOResult:
    """UHO as ``run_metasegnet.py`` runs it; the CSV goes into ``--checkpoint``."""
    search = UpdateHyperparameterSearch(
        model, config.inner, config.eval, config.uho,
        model_drop_rate=config.model.final_layer_dropout_rate,
        rebuild=dropout_variant_builder(config.model, config.data.image_size), adapter=adapter,
        csv_path=results_csv_path(config.checkpoint, config.uho.results_csv_name,
                                  config.eval.shots),
        seed=config.seed)
    return search.run(val_store)


def with_found_values(config: RunConfig, found: UHOResult) -> RunConfig:
    """The run config with ``--learning-rate`` and ``--eval-iters`` replaced by UHO's."""
    return dataclasses.replace(
        config, inner=dataclasses.replace(config.inner, learning_rate=found.learning_rate),
        eval=dataclasses.replace(config.eval, eval_iters=found.steps))


def fine_tune_config(config: RunConfig) -> RunConfig:
    """``--meta_fine_tune_steps_on_train_val K`` after :func:`with_found_values`: K more
    meta-iterations with the found learning rate and step count as the inner loop, the meta
    step fixed at ``--meta-step-final``, checkpoints in a subdirectory (as the original)."""
    meta = dataclasses.replace(config.meta, meta_iters=config.uho.meta_fine_tune_steps_on_train_val,
                               inner_iters=config.eval.eval_iters,
                               meta_step=config.meta.meta_step_final)
    return dataclasses.replace(config, meta=meta, continue_training_from_checkpoint=None,
                               checkpoint=os.path.join(config.checkpoint, FINE_TUNE_DIR))
