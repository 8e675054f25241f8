"""The evaluation protocol (REFERENCE.md section 7) on a tiny model: state untouched, both
prediction modes, repetitions, determinism, saved adapted checkpoints, prediction images,
the results file and no retracing across tasks."""
import dataclasses
import json
import logging
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from metaseg.config import EvalConfig, InnerConfig
from metaseg.data import episodes
from metaseg.evaluation import evaluate
from metaseg.evaluation.evaluate import RESULTS_FILE, EvalResults, Evaluator, write_results
from metaseg import checkpoints
from tests.meta.conftest import tiny_logits_model, tiny_store

SHOTS = 3  # tiny_store has 8 examples per task: 3 support + 5 query
# Adam with BCE + dice learns the tiny tasks in a few steps, so the IoUs are far from 0.
INNER = InnerConfig(learning_rate=0.05, loss_name="bce_dice")
EVAL = EvalConfig(shots=SHOTS, eval_batch=2, eval_iters=5, eval_samples=1,
                  serially_eval_all_test_tasks=True, transductive=True, seed=3)


@pytest.fixture(scope="module")
def store():
    return tiny_store(num_tasks=4, examples=8, size=16)


def make_evaluator(config=EVAL, model_seed=0, **changes):
    """A fresh tiny model (batch norm + dropout, so it has moving statistics and a seed
    state) and its evaluator."""
    model = tiny_logits_model(seed=model_seed, dropout=0.5)
    return Evaluator(model, INNER, dataclasses.replace(config, **changes))


def snapshot(model):
    return {v.path: np.array(v.numpy(), copy=True) for v in model.variables}


class RecordingAdapt:
    """Wraps ``adapter.adapt``, keeping every (start, end) state it returned."""

    def __init__(self, adapter):
        self.adapt, self.calls = adapter.adapt, []
        adapter.adapt = self

    def __call__(self, start, *args):
        end, losses = self.adapt(start, *args)
        self.calls.append((start, end))
        return end, losses


@pytest.mark.parametrize("cores,expected", [(1, 1), (2, 2), (8, 1)])
def test_concurrent_tasks_0_chooses_by_the_machines_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(evaluate.threads, "usable_cores", lambda: cores)
    assert make_evaluator(concurrent_tasks=0).concurrent_tasks == expected
    assert make_evaluator(concurrent_tasks=3).concurrent_tasks == 3  # given: kept


def test_every_variable_is_bit_identical_after_evaluation(store):
    evaluator = make_evaluator()
    model = evaluator.model
    kinds = {v.path.rsplit("/", 1)[-1] for v in model.non_trainable_variables}
    assert {"moving_mean", "moving_variance", "seed_generator_state"} <= kinds
    before = snapshot(model)
    recorder = RecordingAdapt(evaluator.adapter)
    results = evaluator.evaluate(store, num_samples=2)
    assert len(recorder.calls) == 2 * len(store)
    # The adaptations really moved every bucket (training-mode batch norm, dropout seeds) ...
    start, end = recorder.calls[0]
    for bucket in ("trainable", "non_trainable"):
        moved = [not np.array_equal(a, b) for a, b in zip(getattr(start, bucket),
                                                            getattr(end, bucket))]
        assert all(moved), bucket
    # ... and none of it reached the model.
    after = snapshot(model)
    assert after.keys() == before.keys()
    for path, value in before.items():
        assert after[path].dtype == value.dtype and np.array_equal(after[path], value), path
    assert all(len(v) == 2 for v in results.task_scores.values())


def test_same_seed_gives_identical_results_and_another_seed_other_episodes(store):
    first = make_evaluator().evaluate(store, num_samples=2)
    again = make_evaluator().evaluate(store, num_samples=2)  # a fresh, equal model
    assert first.task_scores == again.task_scores and first.sample_means == again.sample_means
    evaluator = make_evaluator()
    assert evaluator.evaluate(store, num_samples=2).task_scores == first.task_scores
    assert evaluator.evaluate(store, num_samples=2).task_scores == first.task_scores  # twice
    other = make_evaluator(seed=4).evaluate(store, num_samples=2)  # the episodes' seed
    assert other.task_scores != first.task_scores


def test_scores_are_real_ious(store):
    results = make_evaluator().evaluate(store, num_samples=2)
    scores = [s for v in results.task_scores.values() for s in v]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert np.mean(scores) > 0.5, scores  # the adapted tiny model finds the squares


def test_transductive_and_not_give_the_same_query_predictions_in_inference_mode(store):
    transductive = make_evaluator(transductive=True)
    inductive = Evaluator(transductive.model, INNER,
                          dataclasses.replace(EVAL, transductive=False),
                          adapter=transductive.adapter)
    support_x, support_y, query_x, _ = episodes.evaluation_episode(
        store, 2, shots=SHOTS, seed=0)
    start = transductive.adapter.initial_state()
    adapted, _ = transductive.adapter.adapt(
        start, tf.repeat(support_x[None, :2], 3, 0), tf.repeat(support_y[None, :2], 3, 0),
        tf.constant(0.05), tf.constant(0), tf.constant(3))
    predict, calls = transductive.adapter.predict, []
    transductive.adapter.predict = lambda state, x: calls.append(x) or predict(state, x)
    for state in (start, adapted):
        calls.clear()
        a = transductive.predict(state, support_x, query_x).numpy()
        assert len(calls) == 1 and np.array_equal(calls[0], query_x)  # the queries, one batch
        calls.clear()
        b = inductive.predict(state, support_x, query_x).numpy()
        # one batch per query image: the support images, then that query image last
        assert len(calls) == 5
        for i, batch in enumerate(calls):
            assert np.array_equal(batch, np.concatenate([support_x, query_x[i:i + 1]]))
        assert a.shape == b.shape == (5, 16, 16, 2)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(a, b, atol=1e-5)  # inference mode: the batch is irrelevant
        assert np.array_equal(a[..., 1] > 0.5, b[..., 1] > 0.5)
    transductive.adapter.predict = predict
    assert inductive.evaluate(store).task_scores == transductive.evaluate(store).task_scores


def test_serial_repetitions_score_every_task_once_each(store):
    results = make_evaluator().evaluate(store, num_samples=3, serial=True)
    assert sorted(results.task_scores) == sorted(store.names)
    assert all(len(v) == 3 for v in results.task_scores.values())
    assert len(results.sample_means) == 3
    for sample, mean in enumerate(results.sample_means):
        assert mean == pytest.approx(np.mean([v[sample] for v in results.task_scores.values()]))
    # the repetitions draw different episodes
    assert any(len(set(v)) > 1 for v in results.task_scores.values())


def test_non_serial_repetitions_score_one_random_task_each(store):
    results = make_evaluator().evaluate(store, num_samples=6, serial=False)
    assert sum(len(v) for v in results.task_scores.values()) == 6
    assert len(results.task_scores) > 1  # a random task each time, not always the same one
    assert sorted(results.sample_means) == pytest.approx(
        sorted(s for v in results.task_scores.values() for s in v))
    # without an explicit `serial`, the config's --serially_eval_all_test_tasks decides
    default = make_evaluator(serially_eval_all_test_tasks=False).evaluate(store, num_samples=2)
    assert sum(len(v) for v in default.task_scores.values()) == 2


def test_mean_iou_and_ci95_of_results():
    results = EvalResults({"a": [0.2, 0.6], "b": [0.4, float("nan")]}, sample_means=[0.3, 0.6])
    assert results.mean_iou == pytest.approx(0.45)  # mean over repetitions
    # CI over every (task, repetition) score, NaN left out: 0.2, 0.6, 0.4
    assert results.ci95 == pytest.approx(1.96 * np.sqrt(0.08 / 3) / np.sqrt(3))
    assert EvalResults({"a": [float("nan")]}, [float("nan"), 0.5]).mean_iou == 0.5


def test_write_results_json(tmp_path):
    results = EvalResults({"cat": [0.25, 0.75], "dog": [0.5, 0.5]}, sample_means=[0.375, 0.625])
    path = write_results(str(tmp_path / "run"), results)
    assert path == str(tmp_path / "run" / RESULTS_FILE) and RESULTS_FILE == "meta-test_results.json"
    data = json.loads(open(path, encoding="utf-8").read())
    assert data == {"cat": [0.25, 0.75], "dog": [0.5, 0.5]}  # the original's format
    summary = json.loads((tmp_path / "run" / "meta-test_results_summary.json").read_text())
    assert summary["mean_iou"] == pytest.approx(0.5)
    assert summary["ci95"] == pytest.approx(1.96 * np.std([0.25, 0.75, 0.5, 0.5]) / 2)
    assert (summary["num_tasks"], summary["num_samples"]) == (2, 2)
    assert np.isnan(summary["fold_miou"]) and np.isnan(summary["fb_iou"])  # not computed
    write_results(str(tmp_path / "run"), dataclasses.replace(results, fold_miou=0.4, fb_iou=0.6))
    summary = json.loads((tmp_path / "run" / "meta-test_results_summary.json").read_text())
    assert (summary["fold_miou"], summary["fb_iou"]) == (0.4, 0.6)
    assert sorted(os.listdir(tmp_path / "run")) == [
        RESULTS_FILE, "meta-test_results_summary.json"]  # no temporary file left


def test_saved_adapted_checkpoints_restore_the_adapted_weights(store, tmp_path):
    # One task at a time: the recorder keeps the adaptations in the order they ran.
    evaluator = make_evaluator(eval_iters=4, concurrent_tasks=1)
    recorder = RecordingAdapt(evaluator.adapter)
    run_config = {"model": {"rsd": None}, "note": "rebuild me"}
    evaluator.run_config = run_config
    initial = snapshot(evaluator.model)
    evaluator.evaluate(store, task_indices=[1, 3], num_samples=2, save_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["task1", "task3"]
    ends = [end for _, end in recorder.calls]  # order: sample 0 (task1, task3), sample 1 ...
    for k, (sample, task) in enumerate([(0, "task1"), (0, "task3"), (1, "task1"),
                                        (1, "task3")]):
        directory = tmp_path / task / str(sample)
        assert (directory / "model.ckpt-4.index").exists()
        assert checkpoints.read_config(str(directory)) == run_config
        fresh = tiny_logits_model(seed=7, dropout=0.5)
        assert checkpoints.restore_weights(fresh, str(directory)) == 4
        restored = [v.numpy() for v in fresh.trainable_variables]
        for value, adapted in zip(restored, ends[k].trainable):
            assert np.array_equal(value, adapted.numpy())
        for var, adapted in zip(fresh.non_trainable_variables, ends[k].non_trainable):
            assert np.array_equal(var.numpy(), adapted.numpy())
        changed = [not np.array_equal(v.numpy(), initial[v.path]) for v in
                   fresh.trainable_variables]
        assert all(changed)
    assert snapshot(evaluator.model).keys() == initial.keys()
    assert all(np.array_equal(v, initial[p]) for p, v in snapshot(evaluator.model).items())


def test_prediction_images(store, tmp_path):
    out = tmp_path / "predictions"
    evaluator = make_evaluator(save_predictions_dir=str(out))
    evaluator.evaluate(store, task_indices=[0], num_samples=1)
    names = sorted(os.listdir(out))
    assert names == sorted([f"{kind}_task0_0_{i}.png" for kind in ("prediction", "truth")
                            for i in range(5)])
    _, _, query_x, query_y = episodes.evaluation_episode(store, 0, shots=SHOTS, seed=EVAL.seed)
    for i in range(5):
        image = query_x[i].numpy()
        mask = query_y[i, ..., 1].numpy() > 0.5
        tinted = np.round(0.5 * image + 0.5 * np.array([255.0, 0, 0])).astype(np.uint8)
        plain = np.round(image).astype(np.uint8)
        truth = np.asarray(Image.open(out / f"truth_task0_0_{i}.png"))
        assert truth.shape == (16, 16, 3) and truth.dtype == np.uint8
        assert np.array_equal(truth, np.where(mask[..., None], tinted, plain))
        prediction = np.asarray(Image.open(out / f"prediction_task0_0_{i}.png"))
        pixel_is_one_or_other = (prediction == tinted).all(-1) | (prediction == plain).all(-1)
        assert pixel_is_one_or_other.all()


def test_many_tasks_do_not_retrace_the_adaptation(store):
    evaluator = make_evaluator(transductive=False)
    evaluator.evaluate(store, num_samples=2)
    evaluator.evaluate(store, num_samples=1, steps=2, learning_rate=0.1)
    evaluator.evaluate(store, num_samples=3, serial=False)
    assert evaluator.adapter.adapt.experimental_get_tracing_count() == 1
    assert evaluator.adapter.predict.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("serial, samples", [(True, 2), (False, 5)])
def test_fold_metrics_accumulate_every_query_image(store, serial, samples):
    """fold_miou / fb_iou equal a numpy accumulation of the same predictions' intersections
    and unions (predictions fixed: the left half of every query image is foreground)."""
    evaluator = make_evaluator()
    elements = []
    episodes_of = evaluator._episodes
    evaluator._episodes = lambda *a: (elements.append(e) or e for e in episodes_of(*a))

    def predict(state, support_x, query_x):
        fg = np.zeros(query_x.shape[:3], np.float32)
        fg[:, :, :8] = 1.0
        return tf.constant(np.stack([1.0 - fg, fg], -1))

    evaluator.predict = predict
    results = evaluator.evaluate(store, num_samples=samples, serial=serial)
    assert len(elements) == samples * (len(store) if serial else 1)
    inter, union = {}, {}
    fb = np.zeros((2, 2))  # [foreground, background] x [intersection, union]
    for element in elements:
        name = store.names[int(element["task"])]
        true = element["query_y"].numpy()[..., 1] > 0.5
        pred = np.zeros_like(true)
        pred[:, :, :8] = True
        inter[name] = inter.get(name, 0) + np.sum(pred & true)
        union[name] = union.get(name, 0) + np.sum(pred | true)
        fb += [[np.sum(pred & true), np.sum(pred | true)],
               [np.sum(~pred & ~true), np.sum(~pred | ~true)]]
    assert results.fold_miou == pytest.approx(np.mean([inter[c] / union[c] for c in inter]))
    assert results.fb_iou == pytest.approx(np.mean(fb[:, 0] / fb[:, 1]))
    assert 0 < results.fold_miou < 1 and 0 < results.fb_iou < 1


def _progress_lines(caplog, label="test"):
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(f"{label} evaluation: ")]


def test_evaluation_of_several_tasks_reports_progress_with_an_eta(store, monkeypatch, caplog):
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY_LOG", 0.0)  # a line for every task
    with caplog.at_level(logging.INFO):
        make_evaluator().evaluate(store, num_samples=2, label="test")
    lines = _progress_lines(caplog)
    total = 2 * len(store)
    assert [line.split(",")[0] for line in lines] == [
        f"test evaluation: {k}/{total} tasks" for k in range(1, total + 1)]
    assert all(", elapsed " in line and ", ETA " in line for line in lines), lines
    assert lines[-1].endswith("ETA 0 s")


def test_evaluation_progress_is_quiet_in_a_log_file(store, caplog):
    """Not a terminal (pytest captures stderr): a line every 30 s, and the last one."""
    start = time.monotonic()
    with caplog.at_level(logging.INFO):
        make_evaluator().evaluate(store, num_samples=2, label="val")
    lines = _progress_lines(caplog, "val")
    assert lines[-1].startswith(f"val evaluation: {2 * len(store)}/{2 * len(store)} tasks")
    assert len(lines) <= 1 + (time.monotonic() - start) // evaluate.PROGRESS_EVERY_LOG
