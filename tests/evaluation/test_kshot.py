"""k-shot learning curves (REFERENCE.md section 9): FP-k tasks from shard names, skipped ks,
nested support sets and a disjoint 20-image query set, early stopping for k >= 10, the CSV,
the plot (or its one-line skip message), the no-FP-k error, and the pipeline end to end."""
import csv
import dataclasses
import importlib.util
import logging

import numpy as np
import pytest
import tensorflow as tf

from metaseg import pipeline
from metaseg.config import (DataConfig, EvalConfig, InnerConfig, KShotConfig, MetaConfig,
                            RunConfig, UHOConfig)
from metaseg.data import SHARD_SUFFIX, TaskStore, write_shard
from metaseg.errors import DataError
from metaseg.evaluation import kshot
from metaseg.evaluation.kshot_report import (CSV_COLUMNS, CSV_NAME, PLOT_NAME, KShotResults,
                                             KShotRow, curves)
from metaseg.meta.adapt import Adapter
from tests.data.conftest import synthetic_pairs
from tests.meta.conftest import tiny_logits_model

SIZE = 32
# airliner = airliner_a + aeroplane_b (31: k = 1, 5, 10); bus (27: k = 1, 5); television
# (12: no k at all); class_* are not FP-k classes.
SHARDS = {"airliner_a": 15, "aeroplane_b": 16, "bus_x": 27, "television_c": 12,
          "class_0": 12, "class_1": 12, "class_2": 12}
MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kshot_shards")
    for kind, (name, count) in enumerate(SHARDS.items()):
        images, masks = synthetic_pairs(count, SIZE, seed=kind, kind=kind)
        write_shard(directory / f"{name}{SHARD_SUFFIX}", zip(images, masks))
    return directory


@pytest.fixture(scope="module")
def store(data_dir):
    return kshot.load_fpk_store(str(data_dir), SIZE)


def test_fpk_tasks_merge_synonyms_and_small_tasks_skip_ks_with_a_log_line(store, caplog):
    assert store.names == ("airliner", "bus", "television")
    assert [store.num_examples(i) for i in range(3)] == [31, 27, 12]
    with caplog.at_level(logging.INFO):
        planned = kshot.plan(store)
    assert planned == {0: (1, 5, 10), 1: (1, 5)}  # television cannot supply 1 + 20
    for line in ("task airliner has 31 examples; skipping k = 50, 100, 200, 400",
                 "task bus has 27 examples; skipping k = 10, 50, 100, 200, 400",
                 "task television has 12 examples; skipping k = 1, 5, 10, 50, 100, 200, 400"):
        assert caplog.text.count(line + " (k + 20 query images needed)") == 1, caplog.text


def test_no_fpk_class_is_a_data_error_naming_the_synonyms(tmp_path):
    images, masks = synthetic_pairs(3, SIZE, seed=0)
    write_shard(tmp_path / f"class_0{SHARD_SUFFIX}", zip(images, masks))
    with pytest.raises(DataError) as info:
        kshot.load_fpk_store(str(tmp_path), SIZE)
    message = str(info.value)
    assert message.startswith("--run_k_shot_learning_curves_experiment needs the FP-k classes")
    assert ("airliner, aeroplane, bus, motorbike, potted_plant, pottedplant, television, "
            "tvmonitor") in message and "\n" not in message
    # FP-k shards, but none with the 1 + 20 examples the smallest k needs
    small = TaskStore.from_arrays(["television"], [np.zeros((12, 8, 8, 3), np.uint8)],
                                  [np.zeros((12, 8, 8), np.uint8)])
    with pytest.raises(DataError, match=r"no FP-k task has the 21 examples .*television \(12\)"):
        kshot.plan(small)


class Recorder:
    """Wraps an Adapter's adapt / predict / scoring_adaptation, keeping their inputs."""

    def __init__(self, adapter):
        self.adapts, self.predicts, self.searches = [], [], []
        adapt, predict, scoring = adapter.adapt, adapter.predict, adapter.scoring_adaptation

        def record_adapt(state, x, y, *rest):
            self.adapts.append(x.numpy())
            return adapt(state, x, y, *rest)

        def record_predict(state, images):
            self.predicts.append(images.numpy())
            return predict(state, images)

        def record_scoring(score_fn, transductive=True):
            function = scoring(score_fn, transductive=transductive)

            def call(state, x, y, support_x, query_x, *rest):
                self.searches.append((x.shape, _images(support_x.numpy()),
                                      _images(query_x.numpy())))
                return function(state, x, y, support_x, query_x, *rest)
            return call

        adapter.adapt, adapter.predict = record_adapt, record_predict
        adapter.scoring_adaptation = record_scoring


def _config(tmp_path, **kshot_config):
    return RunConfig(inner=InnerConfig(learning_rate=0.05, loss_name="bce_dice"),
                     eval=EvalConfig(eval_batch=4, eval_iters=3, eval_samples=2, seed=1),
                     uho=UHOConfig(max_steps=6), kshot=KShotConfig(enabled=True, **kshot_config),
                     checkpoint=str(tmp_path / "run"))


def _images(array):  # the distinct images of [..., S, S, 3], as bytes
    return {image.tobytes() for image in array.reshape(-1, SIZE, SIZE, 3)}


def test_rows_csv_nested_supports_disjoint_queries_and_early_stopping(store, tmp_path, caplog):
    model = tiny_logits_model(seed=0, dropout=0.5)
    before = [v.numpy().copy() for v in model.variables]
    adapter = Adapter(model, _config(tmp_path).inner)
    recorder = Recorder(adapter)
    with caplog.at_level(logging.INFO):
        results = kshot.KShotExperiment(adapter, _config(tmp_path)).run(store)
    # rows: 2 repetitions x (airliner k = 1, 5, 10; bus k = 1, 5); --eval-iters for k < 10
    keys = [(r.sample, r.task, r.k) for r in results.rows]
    assert keys == [(s, t, k) for s in (0, 1) for t, ks in (("airliner", (1, 5, 10)),
                                                           ("bus", (1, 5))) for k in ks]
    assert all(r.steps == 3 for r in results.rows if r.k < 10)
    assert all(0.0 <= r.miou <= 1.0 for r in results.rows)
    # k = 10: early stopping ran once per repetition, --max_steps 6 steps of batches of 4
    # from the first 8 of the 10 examples, scoring the last 2; it chose a count in [1, 6]
    assert [shape for shape, _, _ in recorder.searches] == [(6, 4, SIZE, SIZE, 3)] * 2
    search_train, search_val = recorder.searches[0][1], recorder.searches[0][2]
    assert (len(search_train), len(search_val)) == (8, 2) and not search_train & search_val
    assert all(1 <= r.steps <= 6 for r in results.rows if r.k == 10)
    # per (repetition, task): one 20-image query set, disjoint from every support set, and
    # nested support sets: k = 1 within k = 5 within the first 8 of k = 10
    queries = [_images(p) for p in recorder.predicts]
    assert all(len(q) == 20 for q in queries)
    assert len(recorder.adapts) == len(results.rows) == len(recorder.predicts)
    supports = [_images(x) for x in recorder.adapts]
    assert [len(s) for s in supports[:2]] == [1, 5]  # 3 steps x 4 slots visit all of them
    assert supports[0] < supports[1] < search_train
    assert supports[2] <= search_train | search_val
    assert queries[0] == queries[1] == queries[2] != queries[3]
    assert all(not (s & q) for s, q in zip(supports, queries))
    assert not (search_train | search_val) & queries[0]
    assert queries[0] != queries[5]  # the second repetition draws another query set
    # the CSV holds exactly the rows; the model is untouched
    with open(results.csv_path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert results.csv_path == str(tmp_path / "run" / CSV_NAME)
    assert tuple(table[0]) == CSV_COLUMNS
    assert [KShotRow(t, int(k), int(s), int(n), float(m)) for t, k, s, n, m in table[1:]] \
        == results.rows
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(model.variables, before))
    # the plot, or the one line saying it was skipped and how to install matplotlib
    skipped = "k-shot plot skipped: matplotlib is not installed; pip install 'metaseg[plot]'"
    if MATPLOTLIB:
        assert results.plot_path == str(tmp_path / "run" / PLOT_NAME)
        assert (tmp_path / "run" / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert results.plot_path is None and not (tmp_path / "run" / PLOT_NAME).exists()
        assert caplog.text.count(skipped) == 1


def test_iter_range_evaluates_every_step_count_and_seeds_repeat(store, tmp_path):
    config = dataclasses.replace(_config(tmp_path, iter_range=(2, 4)),
                                 eval=EvalConfig(eval_batch=4, eval_samples=1, seed=1))
    first = kshot.KShotExperiment(Adapter(tiny_logits_model(), config.inner), config).run(store)
    assert [(r.task, r.k, r.steps) for r in first.rows] == [
        (t, k, n) for t, ks in (("airliner", (1, 5, 10)), ("bus", (1, 5)))
        for k in ks for n in (2, 4)]
    again = kshot.KShotExperiment(Adapter(tiny_logits_model(), config.inner), config).run(store)
    assert again.rows == first.rows


def test_curves_and_headline_from_rows():
    rows = [KShotRow("bus", 1, 0, 5, 0.2), KShotRow("bus", 1, 1, 5, 0.4),
            KShotRow("bus", 5, 0, 5, 0.6), KShotRow("airliner", 1, 0, 5, 0.8)]
    assert curves(rows, by_steps=False) == {
        "bus": [(1, pytest.approx(0.3)), (5, 0.6)], "airliner": [(1, 0.8)],
        "mean over tasks": [(1, pytest.approx(1.4 / 3)), (5, 0.6)]}
    assert curves(rows[:2], by_steps=False) == {"bus": [(1, pytest.approx(0.3))]}
    by_steps = rows[:3] + [KShotRow("bus", 1, 0, 9, 0.9)]
    assert curves(by_steps, by_steps=True) == {"5 steps": [(1, pytest.approx(0.3)), (5, 0.6)],
                                               "9 steps": [(1, 0.9)]}
    headline = KShotResults(rows, "unused.csv").as_eval_results()
    assert headline.task_scores == {"bus": [0.2, 0.4, 0.6], "airliner": [0.8]}
    assert headline.sample_means == [pytest.approx(1.6 / 3), 0.4]  # per repetition


def test_pipeline_runs_the_experiment_after_meta_training(data_dir, tmp_path):
    config = RunConfig(
        data=DataConfig(data_dir=str(data_dir), image_size=SIZE, fp_k_test_set=True),
        meta=MetaConfig(meta_iters=1, meta_batch=1, inner_iters=1, inner_batch=2,
                        train_shots=4),
        inner=InnerConfig(sgd=True, learning_rate=0.1, loss_name="bce_dice"),
        eval=EvalConfig(eval_batch=2, eval_samples=1), kshot=KShotConfig(True, (1, 2)),
        checkpoint=str(tmp_path / "run"))
    result = pipeline.run(config)
    assert [(r.task, r.k, r.steps) for r in result.kshot.rows] == [
        (t, k, n) for t, ks in (("airliner", (1, 5, 10)), ("bus", (1, 5)))
        for k in ks for n in (1, 2)]
    assert (tmp_path / "run" / CSV_NAME).exists()
    assert (tmp_path / "run" / "model.ckpt-1.index").exists()  # it meta-trained first
    assert not (tmp_path / "run" / "meta-test_results.json").exists()  # and then stopped
    assert sorted(result.test.task_scores) == ["airliner", "bus"]
    assert result.test.mean_iou == pytest.approx(np.mean([r.miou for r in result.kshot.rows]))
