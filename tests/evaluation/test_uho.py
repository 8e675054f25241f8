"""Update-hyperparameter optimisation (REFERENCE.md section 8): early stopping against
scripted scores, the in-graph per-step scoring against step-by-step adaptation, weight copies
into dropout variants, the search on a tiny model, bad input, and one end-to-end run of
``pipeline.run`` on tiny shards."""
import csv
import dataclasses
import logging

import numpy as np
import pytest
import tensorflow as tf

from metaseg import flags, pipeline
from metaseg.config import (DataConfig, EvalConfig, InnerConfig, MetaConfig, RunConfig,
                            UHOConfig)
from metaseg.data import SHARD_SUFFIX, write_shard
from metaseg.errors import ConfigError, DataError, FieldError
from metaseg.evaluation import metrics, uho
from metaseg.evaluation.early_stopping import EarlyStopper, StopResult, scan
from metaseg.evaluation.evaluate import Evaluator
from metaseg.evaluation.model_variants import copy_weights
from metaseg.meta.adapt import Adapter
from tests.data.conftest import synthetic_pairs
from tests.meta.conftest import tiny_logits_model, tiny_store

# --- early stopping against scripted scores -----------------------------------------------


def test_rising_scores_run_to_the_end():
    result = scan([0.1 * k for k in range(1, 81)])
    assert (result.best_steps, result.steps_run) == (80, 80)
    assert result.best_score == pytest.approx(8.0)


def test_stops_after_more_than_50_steps_without_improvement():
    scores = [0.1, 0.5, 0.9] + [0.4] * 100  # best after step 3
    result = scan(scores)
    assert (result.best_steps, result.best_score) == (3, 0.9)
    assert result.steps_run == 3 + 51  # the 51st step without improvement stops it


def test_an_improvement_51_steps_later_still_counts_52_does_not():
    late = [0.5] + [0.1] * 50 + [0.6] + [0.0] * 60  # steps 2-51 fail, step 52 improves
    assert scan(late).best_steps == 52
    too_late = [0.5] + [0.1] * 51 + [0.6]  # steps 2-52 fail: stopped at step 52
    result = scan(too_late)
    assert (result.best_steps, result.best_score, result.steps_run) == (1, 0.5, 52)


def test_ties_are_not_improvements_and_do_not_reset_patience():
    scores = [0.3, 0.7] + [0.7] * 60
    result = scan(scores)
    assert (result.best_steps, result.steps_run) == (2, 2 + 51)


def test_min_steps_never_answers_fewer_steps():
    # Steps up to min_steps always overwrite the best, even with a lower score: the answer
    # is step 3 (0.2), not step 1 (0.9), and step 4 (0.15) does not beat it.
    scores = [0.9, 0.1, 0.2, 0.15, 0.19, 0.25, 0.1]
    result = scan(scores, min_steps=3)
    assert (result.best_steps, result.best_score, result.steps_run) == (6, 0.25, 7)
    # By hand, patience 2: with min_steps 3 the best is step 3 (0.3), steps 4-6 fail and
    # step 6 (the third failure) stops it before the 0.95; without, step 1 (0.9) is the best
    # and the third failure is step 4.
    short = [0.9, 0.2, 0.3, 0.1, 0.1, 0.1, 0.95]
    assert scan(short, patience=2, min_steps=3) == StopResult(3, 0.3, 6)
    assert scan(short, patience=2) == StopResult(1, 0.9, 4)
    assert scan([0.9, 0.1, 0.2, 0.15], min_steps=3).best_steps == 3
    # patience counts only after min_steps
    result = scan([0.5] * 60 + [0.1] * 60, min_steps=60)
    assert (result.best_steps, result.steps_run) == (60, 60 + 51)


def test_stopper_interface():
    stopper = EarlyStopper(patience=2)
    assert [stopper.update(s, k) for k, s in enumerate([0.5, 0.4, 0.3, 0.2], 1)] == [
        True, True, True, False]
    assert (stopper.best_steps, stopper.best_score, stopper.stopped) == (1, 0.5, True)
    with pytest.raises(RuntimeError):
        stopper.update(0.9, 5)
    with pytest.raises(ValueError, match="consecutive"):
        EarlyStopper().update(0.5, 2)
    with pytest.raises(ValueError, match="at least"):
        scan([0.5, 0.6], min_steps=3)
    assert scan([float("nan"), 0.2, float("nan")]).best_steps == 2


# --- the in-graph scoring adaptation --------------------------------------------------------

def _episode(k, b, q=4, n=3, size=16, seed=0):
    """x [k,b,S,S,3], y [k,b,S,S,2], support_x [n,S,S,3], query_x [q,S,S,3], query_y."""
    rng = np.random.default_rng(seed)

    def images(*lead):
        return tf.constant(rng.uniform(0, 255, (*lead, size, size, 3)), tf.float32)

    def masks(*lead):
        fg = (rng.uniform(size=(*lead, size, size)) > 0.6).astype(np.float32)
        return tf.constant(np.stack([1 - fg, fg], -1))
    return images(k, b), masks(k, b), images(n), images(q), masks(q)


def test_scores_equal_adapting_step_by_step_and_predicting():
    model = tiny_logits_model(seed=1, dropout=0.3)  # batch norm and a dropout seed state
    adapter = Adapter(model, InnerConfig(sgd=True, learning_rate_scheduler="cosine_anneal"))
    x, y, support_x, query_x, query_y = _episode(k=5, b=2)
    lr, total = tf.constant(0.5), tf.constant(5)
    state, steps = adapter.initial_state(), []
    for k in range(5):  # one adapt call per step (step offset k), the state carried over
        state, _ = adapter.adapt(state, x[k:k + 1], y[k:k + 1], lr, tf.constant(k), total)
        steps.append(state)
    for transductive in (True, False):
        scorer = adapter.scoring_adaptation(metrics.binary_iou, transductive=transductive)
        scores = scorer(adapter.initial_state(), x, y, support_x, query_x, query_y, lr, total)
        expected = []
        for state in steps:
            if transductive:
                probs = adapter.predict(state, query_x)
            else:  # each query after the support set, its own output kept
                probs = tf.stack([adapter.predict(state, tf.concat([support_x, q[None]], 0))[-1]
                                  for q in tf.unstack(query_x)])
            expected.append(float(np.mean(metrics.binary_iou(probs, query_y))))
        np.testing.assert_allclose(scores.numpy(), expected, atol=1e-6)
        assert len(set(np.round(expected, 6))) > 1  # the steps change the predictions


def test_scoring_traces_once_across_steps_batches_queries_and_rates():
    adapter = Adapter(tiny_logits_model(seed=2), InnerConfig(sgd=True))
    scorer = adapter.scoring_adaptation(metrics.binary_iou)
    assert adapter.scoring_adaptation(metrics.binary_iou) is scorer
    for k, b, q, lr in ((3, 2, 5, 0.1), (1, 4, 2, 0.01)):
        out = scorer(adapter.initial_state(), *_episode(k, b, q), tf.constant(lr),
                     tf.constant(k))
        assert out.shape == (k,)
    assert scorer.experimental_get_tracing_count() == 1


def test_copy_weights_into_a_dropout_variant():
    source, target = tiny_logits_model(seed=3), tiny_logits_model(seed=4, dropout=0.4)
    copy_weights(source, target, np.random.default_rng(0))
    images = _episode(1, 1, q=3)[3]
    np.testing.assert_array_equal(source(images, training=False), target(images, training=False))
    back = tiny_logits_model(seed=5)  # and back: the variant's extra seed state is dropped
    copy_weights(target, back, np.random.default_rng(0))
    for a, b in zip(source.variables, back.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="more than dropout"):
        copy_weights(source, tf.keras.Sequential([tf.keras.layers.Dense(2)]),
                     np.random.default_rng(0))


# --- the search on a tiny model ---------------------------------------------------------------

INNER = InnerConfig(learning_rate=0.05, loss_name="bce_dice")
EVAL = EvalConfig(shots=3, eval_batch=2, transductive=True, seed=3)
SEARCH = UHOConfig(enabled=True, num_configs_to_sample=3, max_steps=6, lr_search_range_low=0.005,
                   lr_search_range_high=0.2, batch_size_search_range_low=1,
                   batch_size_search_range_high=3, drop_rate_search_range_low=0.0,
                   drop_rate_search_range_high=0.0)


@pytest.fixture(scope="module")
def store():
    return tiny_store(num_tasks=3, examples=8, size=16)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_search_writes_one_row_per_configuration_and_task(store, tmp_path):
    model = tiny_logits_model(seed=6)
    before = [v.numpy().copy() for v in model.variables]
    path = tmp_path / "results.csv"
    search = uho.UpdateHyperparameterSearch(model, INNER, EVAL, SEARCH, csv_path=str(path), seed=1)
    found = search.run(store)
    for var, old in zip(model.variables, before):  # the initialisation is untouched
        np.testing.assert_array_equal(var.numpy(), old)
    rows = _read_csv(path)
    assert list(rows[0]) == list(uho.CSV_COLUMNS)
    assert [(r["config"], r["task_ID"]) for r in rows] == [
        (str(c), t) for c in (1, 2, 3) for t in store.names]
    by_config = {}
    for r in rows:
        assert 0.005 <= float(r["lr"]) <= 0.2 and r["drop_rate"] == "0.0"
        assert r["inner_batch_size"] in {"1", "2", "3"} and r["aug_rate"] == "0.5"
        assert 1 <= int(r["best_num_steps"]) <= 6 and 0 <= float(r["mIoU"]) <= 1
        by_config.setdefault(int(r["config"]), []).append(r)
    means = {c: np.mean([float(r["mIoU"]) for r in rs]) for c, rs in by_config.items()}
    best = max(means, key=means.get)
    assert found.best.index == best and found.learning_rate == float(by_config[best][0]["lr"])
    assert found.steps == int(np.median([int(r["best_num_steps"]) for r in by_config[best]]))
    # Each row's best mIoU is what the ordinary evaluation gets after that many steps with
    # that configuration (the episode's first batches do not depend on the step count).
    row = by_config[best][0]
    check = Evaluator(model, dataclasses.replace(INNER, learning_rate=float(row["lr"])),
                      dataclasses.replace(EVAL, eval_batch=int(row["inner_batch_size"]),
                                          eval_iters=int(row["best_num_steps"])))
    result = check.evaluate(store, task_indices=[store.names.index(row["task_ID"])],
                            num_samples=1, serial=True)
    assert result.task_scores[row["task_ID"]][0] == pytest.approx(float(row["mIoU"]), abs=1e-6)


def test_median_step_rescoring_and_dropout_variants(store, monkeypatch):
    rebuilt, per_step = [], []

    def rebuild(rate):
        rebuilt.append(rate)
        return tiny_logits_model(seed=99, dropout=rate)

    real_scan = uho.early_stopping.scan
    monkeypatch.setattr(uho.early_stopping, "scan",
                        lambda scores, **kw: per_step.append(scores) or real_scan(scores, **kw))
    config = dataclasses.replace(SEARCH, num_configs_to_sample=2, drop_rate_search_range_low=0.1,
                                 drop_rate_search_range_high=0.5,
                                 eval_tasks_with_median_early_stopping_iterations=True)
    model = tiny_logits_model(seed=7)
    found = uho.UpdateHyperparameterSearch(model, INNER, EVAL, config, rebuild=rebuild,
                                           seed=2).run(store)
    # one network per configuration, built with its dropout rate
    assert rebuilt == [c.values["drop_rate"] for c in found.configs]
    assert all(0.1 <= rate <= 0.5 for rate in rebuilt) and rebuilt[0] != rebuilt[1]
    for c, config_scores in zip(found.configs, (per_step[:3], per_step[3:])):
        assert c.best_steps == [int(np.argmax(v)) + 1 for v in config_scores]  # patience > 6
        # The reported mIoUs come from fine-tuning again for the median step count: equal to
        # the in-graph score after that many steps (same episode, same dropout masks).
        np.testing.assert_allclose(c.mious, [v[c.median_steps - 1] for v in config_scores],
                                   atol=1e-6)


def test_dropout_search_without_a_rebuild_is_a_clear_error(store):
    config = dataclasses.replace(SEARCH, drop_rate_search_range_low=0.2,
                                 drop_rate_search_range_high=0.2)
    with pytest.raises(ConfigError, match="cannot be rebuilt"):
        uho.UpdateHyperparameterSearch(tiny_logits_model(), INNER, EVAL, config).run(store)


# --- bad input ----------------------------------------------------------------------------------

def test_reversed_range_is_swapped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        config = UHOConfig(lr_search_range_low=0.05, lr_search_range_high=0.001,
                           batch_size_search_range_low=16, batch_size_search_range_high=4)
    assert (config.lr_search_range_low, config.lr_search_range_high) == (0.001, 0.05)
    assert (config.batch_size_search_range_low, config.batch_size_search_range_high) == (4, 16)
    assert "--lr_search_range_low/high: low (0.05) exceeds high (0.001)" in caplog.text
    assert config == dataclasses.replace(config)  # and stays swapped


@pytest.mark.parametrize("changes, message", [
    (dict(drop_rate_search_range_low=0.0, drop_rate_search_range_high=0.5), "log scale"),
    (dict(aug_rate_search_range_low=0.5, aug_rate_search_range_high=0.0), "log scale"),
    (dict(enabled=True, num_configs_to_sample=1), "--num_configs_to_sample must be >= 2"),
    (dict(max_steps=3, min_steps=5), "--max_steps (3) must be >= --min_steps (5)"),
])
def test_bad_ranges_and_budgets(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UHOConfig(**changes)


def test_batch_larger_than_shots_with_replacement():
    with pytest.raises(FieldError) as info:
        uho.UpdateHyperparameterSearch(
            tiny_logits_model(), dataclasses.replace(INNER, replacement=True), EVAL,
            dataclasses.replace(SEARCH, batch_size_search_range_high=8))
    assert info.value.field == "uho.batch_size_search_range_high"
    assert info.value.spelled(flags.flag_for_field).startswith(
        "--batch_size_search_range_high (8) must be <= --shots (3) with --replacement")


def test_results_csv_name_gets_the_shot_count():
    assert uho.results_csv_path("ck", "val-set_hyper_param_search_results.csv", 5) == \
        "ck/val-set_hyper_param_search_results_5-shot.csv"


def test_rows_are_written_per_configuration_so_a_crash_keeps_them(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"

    def score(self, index, values, store):
        if index == 3:
            raise RuntimeError("killed")
        return uho.ConfigResult(index, values, ["a", "b"], [4, 7], [0.5, 0.25])

    monkeypatch.setattr(uho.UpdateHyperparameterSearch, "score", score)
    search = uho.UpdateHyperparameterSearch(tiny_logits_model(), INNER, EVAL, SEARCH,
                                            csv_path=str(path))
    with pytest.raises(RuntimeError, match="killed"):
        search.run(store=["a", "b"])  # only its length is read here
    rows = _read_csv(path)
    assert [(r["config"], r["task_ID"], r["best_num_steps"], r["mIoU"]) for r in rows] == [
        ("1", "a", "4", "0.5"), ("1", "b", "7", "0.25"), ("2", "a", "4", "0.5"),
        ("2", "b", "7", "0.25")]
    assert path.read_text().count("config,lr") == 1


# --- end to end: pipeline.run on tiny shards ------------------------------------------------

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """class_0 ... class_7 (12 examples of 32 px); class_6 and 7 are the test classes."""
    root = tmp_path_factory.mktemp("uho_data")
    (root / "shards").mkdir()
    for k in range(8):
        write_shard(root / "shards" / f"class_{k}{SHARD_SUFFIX}",
                    zip(*synthetic_pairs(12, 32, seed=k, kind=k)))
    (root / "test.txt").write_text("class_6\nclass_7\n")
    return root


def _run_config(shards, checkpoint, **uho_changes):
    return RunConfig(
        data=DataConfig(data_dir=str(shards / "shards"), test_tasks_file=str(shards / "test.txt"),
                        image_size=32, num_val_tasks=2),
        inner=InnerConfig(sgd=True, learning_rate=0.1, loss_name="bce_dice"),
        meta=MetaConfig(meta_iters=1, meta_batch=1, inner_iters=1, inner_batch=2,
                        train_shots=4, meta_step_final=0.05),
        eval=EvalConfig(shots=5, eval_batch=2, eval_iters=2, eval_samples=1,
                        serially_eval_all_test_tasks=True, transductive=True),
        uho=UHOConfig(enabled=True, num_configs_to_sample=2, max_steps=3,
                      lr_search_range_low=0.02, lr_search_range_high=0.5,
                      meta_fine_tune_steps_on_train_val=1, **uho_changes),
        checkpoint=str(checkpoint))


def test_end_to_end_uho_run(shards, tmp_path, monkeypatch):
    calls, trainings = [], []
    evaluate, meta_train = Evaluator.evaluate, pipeline._meta_train

    def spy(self, store, **kwargs):
        lr = kwargs.get("learning_rate") or self.inner.learning_rate
        steps = kwargs.get("steps") or self.config.eval_iters
        calls.append((kwargs.get("label"), lr, steps))
        return evaluate(self, store, **kwargs)

    def train(config, model, train_store, *rest):
        trainings.append((config, train_store.names))
        if len(trainings) == 1:  # the ordinary meta-training; the trainer is tested elsewhere
            meta_train(config, model, train_store, *rest)

    monkeypatch.setattr(Evaluator, "evaluate", spy)
    monkeypatch.setattr(pipeline, "_meta_train", train)
    result = pipeline.run(_run_config(shards, tmp_path / "run"))
    rows = _read_csv(tmp_path / "run" / "val-set_hyper_param_search_results_5-shot.csv")
    assert [(r["config"], r["task_ID"]) for r in rows] == [
        (c, t) for c in ("1", "2") for t in ("class_4", "class_5")]  # the last 2 train names
    assert {(r["drop_rate"], r["aug_rate"], r["inner_batch_size"]) for r in rows} == {
        ("0.2", "0.5", "8")}  # the default ranges hold these fixed
    assert all(1 <= int(r["best_num_steps"]) <= 3 for r in rows)
    means = {c: np.mean([float(r["mIoU"]) for r in rows if r["config"] == c]) for c in "12"}
    best = [r for r in rows if r["config"] == max(means, key=means.get)]
    chosen_lr = float(best[0]["lr"])
    chosen_steps = int(np.median([int(r["best_num_steps"]) for r in best]))
    assert 0.02 <= chosen_lr <= 0.5
    # the final evaluation (train tasks, then test) uses the chosen values
    assert calls[-2:] == [("train", chosen_lr, chosen_steps), ("test", chosen_lr, chosen_steps)]
    assert sorted(result.test.task_scores) == ["class_6", "class_7"]
    # --meta_fine_tune_steps_on_train_val 1: one more meta-iteration on train + val with the
    # chosen values and the meta step fixed at --meta-step-final, checkpoints in a subdirectory
    assert len(trainings) == 2
    config, names = trainings[1]
    assert names == tuple(f"class_{k}" for k in range(6))
    assert config.checkpoint == str(tmp_path / "run" / uho.FINE_TUNE_DIR)
    assert (config.meta.meta_iters, config.meta.inner_iters) == (1, chosen_steps)
    assert config.meta.meta_step == config.meta.meta_step_final == 0.05
    assert config.inner.learning_rate == chosen_lr and config.eval.eval_iters == chosen_steps
    assert config.continue_training_from_checkpoint is None


def test_no_validation_tasks_is_one_clear_error(shards, tmp_path, monkeypatch):
    config = _run_config(shards, tmp_path / "run")
    real = pipeline.load_splits
    monkeypatch.setattr(pipeline, "load_splits", lambda *a: dataclasses.replace(real(*a), val=()))
    monkeypatch.setattr(pipeline, "_meta_train", lambda *a: None)  # fail fast in the test
    monkeypatch.setattr(pipeline, "build", lambda c: tiny_logits_model())
    with pytest.raises(DataError, match="hold no validation tasks"):
        pipeline.run(config)
