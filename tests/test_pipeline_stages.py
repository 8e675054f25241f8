"""The stages of ``pipeline.run``, one at a time, on tiny shards and a tiny model: what each
stage makes (stores, weights, files, configs, results) and how it refuses bad input."""
import csv
import json
import shutil

import numpy as np
import pytest

from metaseg import pipeline
from metaseg.config import (DataConfig, EvalConfig, InnerConfig, KShotConfig, MetaConfig,
                            RunConfig, UHOConfig)
from metaseg.data import SHARD_SUFFIX, write_shard
from metaseg.distribute import make_strategy
from metaseg.errors import DataError
from metaseg.evaluation.evaluate import RESULTS_FILE, EvalResults, summary_path
from metaseg.evaluation.kshot_report import CSV_NAME
from metaseg import checkpoints
from tests.data.conftest import synthetic_pairs
from tests.meta.conftest import tiny_logits_model

SIZE = 32
CLASSES = [f"class_{k}" for k in range(8)]  # 12 examples each; class_6 and 7 are the test set


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    (root / "shards").mkdir()
    for k, name in enumerate(CLASSES + ["bus_x"]):  # bus_x: an FP-k class (k = 1 and 5)
        count = 26 if name == "bus_x" else 12
        write_shard(root / "shards" / f"{name}{SHARD_SUFFIX}",
                    zip(*synthetic_pairs(count, SIZE, seed=k, kind=k % 7)))
    (root / "test.txt").write_text("class_6\nclass_7\n")
    return root


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    """``pipeline.build`` makes the tiny model, seeded by the run's --seed."""
    monkeypatch.setattr(pipeline, "build", lambda config: tiny_logits_model(seed=config.seed))


def _config(data, checkpoint, **changes) -> RunConfig:
    base = dict(
        data=DataConfig(data_dir=str(data / "shards"), test_tasks_file=str(data / "test.txt"),
                        image_size=SIZE, num_val_tasks=2),
        inner=InnerConfig(sgd=True, learning_rate=0.1, loss_name="bce_dice"),
        meta=MetaConfig(meta_iters=2, meta_batch=1, inner_iters=1, inner_batch=2,
                        train_shots=4, checkpoint_every=1),
        eval=EvalConfig(shots=5, eval_batch=2, eval_iters=2, eval_samples=1,
                        serially_eval_all_test_tasks=True, transductive=True),
        checkpoint=str(checkpoint))
    base.update(changes)
    return RunConfig(**base)


def _prepare(config):
    return pipeline.prepare(config, make_strategy(config.distribute))


def _copy(directory, target):
    shutil.copytree(directory, target)
    return target


def _weights(model):
    return [v.numpy() for v in model.weights]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# --- 1. prepare ------------------------------------------------------------------------------

def test_prepare_reads_the_splits_into_stores_and_builds_the_seeded_model(data, tmp_path):
    config = _config(data, tmp_path / "run", seed=3)
    prepared = _prepare(config)
    # class_4 and 5 (the last training names) are validation tasks; bus_x trains
    assert prepared.train_store.names == ("bus_x", "class_0", "class_1", "class_2", "class_3")
    assert prepared.eval_store.names == ("class_6", "class_7")
    assert [t.name for t in prepared.splits.val] == ["class_4", "class_5"]
    assert prepared.eval_store.images.shape[1:3] == (SIZE, SIZE)
    assert _same(_weights(prepared.model), _weights(tiny_logits_model(seed=3)))
    assert prepared.evaluator.model is prepared.model
    assert prepared.evaluator.config == config.eval and prepared.evaluator.inner == config.inner
    with_val = _prepare(_config(data, tmp_path / "run",
                                eval=EvalConfig(shots=5, eval_val_tasks=True)))
    assert with_val.eval_store.names == ("class_4", "class_5")
    assert not (tmp_path / "run").exists()  # preparing writes nothing


def test_prepare_refuses_evaluation_tasks_too_small_for_the_shots(data, tmp_path):
    config = _config(data, tmp_path / "run", eval=EvalConfig(shots=8, eval_batch=2))
    with pytest.raises(DataError, match=r"--shots 8 needs 13 examples per task"):
        _prepare(config)


def test_evaluate_random_init_only_with_compare_random_init(data, tmp_path):
    config = _config(data, tmp_path / "run")
    assert pipeline.evaluate_random_init(_prepare(config)) is None
    compare = _config(data, tmp_path / "run", eval=EvalConfig(
        shots=5, eval_batch=2, eval_iters=1, eval_samples=1, serially_eval_all_test_tasks=True,
        compare_random_init=True))
    prepared = _prepare(compare)
    before = _weights(prepared.model)
    results = pipeline.evaluate_random_init(prepared)
    assert sorted(results.task_scores) == ["class_6", "class_7"]
    assert _same(_weights(prepared.model), before)  # evaluation leaves the model as it was


# --- 2. meta-train or restore ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A checkpoint directory meta_train_or_restore wrote (2 meta-iterations), and the
    weights the stage left in the model."""
    checkpoint = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "build", lambda config: tiny_logits_model(seed=config.seed))
        prepared = _prepare(_config(data, checkpoint))
        start = _weights(prepared.model)
        pipeline.meta_train_or_restore(prepared)
    return checkpoint, start, _weights(prepared.model)


def test_meta_train_writes_checkpoints_and_moves_the_weights(trained):
    checkpoint, start, end = trained
    assert checkpoints.detect(str(checkpoint)).kind is checkpoints.Kind.RUN
    assert (checkpoint / "model.ckpt-2.index").exists()
    assert not _same(start, end)
    restored = tiny_logits_model(seed=99)
    checkpoints.restore_weights(restored, str(checkpoint))
    assert _same(_weights(restored), end)  # the newest checkpoint is the model's state


def test_restore_with_pretrained_loads_the_checkpoint_and_trains_nothing(data, trained):
    checkpoint, _, end = trained
    listed = sorted(p.name for p in checkpoint.iterdir())
    prepared = _prepare(_config(data, checkpoint, pretrained=True, seed=5))
    pipeline.meta_train_or_restore(prepared)
    assert _same(_weights(prepared.model), end)
    assert sorted(p.name for p in checkpoint.iterdir()) == listed


# --- 3. UHO ----------------------------------------------------------------------------------

def test_update_hyperparameter_search_is_a_no_op_when_off(data, trained):
    prepared = _prepare(_config(data, trained[0], pretrained=True))
    assert pipeline.search_update_hyperparameters(prepared) is prepared


def test_update_hyperparameter_search_returns_the_run_with_the_found_values(data, trained,
                                                                           tmp_path):
    uho = UHOConfig(enabled=True, num_configs_to_sample=2, max_steps=3,
                    lr_search_range_low=0.02, lr_search_range_high=0.5,
                    drop_rate_search_range_low=0.0, drop_rate_search_range_high=0.0,
                    batch_size_search_range_low=2, batch_size_search_range_high=2)
    run = _copy(trained[0], tmp_path / "run")  # the stage writes its CSV into --checkpoint
    prepared = _prepare(_config(data, run, pretrained=True, uho=uho))
    pipeline.meta_train_or_restore(prepared)
    weights = _weights(prepared.model)
    found = pipeline.search_update_hyperparameters(prepared)
    rows = list(csv.DictReader(open(run / "val-set_hyper_param_search_results_5-shot.csv",
                                    encoding="utf-8")))
    assert {r["task_ID"] for r in rows} == {"class_4", "class_5"}  # the validation tasks
    best = max({r["config"] for r in rows}, key=lambda c: np.mean(
        [float(r["mIoU"]) for r in rows if r["config"] == c]))
    chosen = [r for r in rows if r["config"] == best]
    assert found.config.inner.learning_rate == pytest.approx(float(chosen[0]["lr"]))
    assert found.config.eval.eval_iters == int(np.median([int(r["best_num_steps"])
                                                          for r in chosen]))
    assert found.evaluator.config == found.config.eval
    assert found.evaluator.inner == found.config.inner
    assert found.model is prepared.model and _same(_weights(found.model), weights)
    assert prepared.config.inner.learning_rate == 0.1  # the input is left as it was


def test_update_hyperparameter_search_needs_validation_tasks(data, tmp_path, monkeypatch):
    config = _config(data, tmp_path / "run", uho=UHOConfig(enabled=True))
    prepared = _prepare(config)
    no_val = pipeline.Prepared(**{**prepared.__dict__,
                                  "splits": type(prepared.splits)(
                                      prepared.splits.train, (), prepared.splits.test)})
    with pytest.raises(DataError, match="the splits hold no validation tasks"):
        pipeline.search_update_hyperparameters(no_val)


# --- 4. k-shot -------------------------------------------------------------------------------

def test_kshot_curves_score_every_fpk_task_and_write_the_csv(data, trained, tmp_path):
    run = _copy(trained[0], tmp_path / "run")
    config = _config(data, run, pretrained=True, kshot=KShotConfig(True, (1,)))
    prepared = _prepare(config)
    pipeline.meta_train_or_restore(prepared)
    result = pipeline.kshot_curves(prepared)
    assert [(r.task, r.k, r.steps) for r in result.kshot.rows] == [("bus", 1, 1), ("bus", 5, 1)]
    assert result.label == "pretrained checkpoint"
    assert list(result.test.task_scores) == ["bus"]
    with open(run / f"{CSV_NAME}", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert not (run / RESULTS_FILE).exists()  # the curves replace the usual evaluation


# --- 5. fine-tune one task -------------------------------------------------------------------

def test_fine_tune_one_task_saves_the_adapted_model(data, trained, tmp_path):
    out = tmp_path / "ft"
    config = _config(data, trained[0], pretrained=True, fine_tune_task="class_2",
                     fine_tuned_checkpoint=str(out))
    prepared = _prepare(config)
    pipeline.meta_train_or_restore(prepared)
    result = pipeline.fine_tune_one_task(prepared)  # a training task: found there too
    assert result.label == "fine-tuned on class_2"
    assert list(result.test.task_scores) == ["class_2"]
    saved = out / "class_2" / "0"
    assert checkpoints.detect(str(saved)).kind is checkpoints.Kind.FINE_TUNED
    adapted = tiny_logits_model(seed=42)
    checkpoints.restore_weights(adapted, str(saved))
    assert not _same(_weights(adapted), trained[2])  # two steps away from the initialisation


def test_fine_tune_one_task_names_an_unknown_task(data, trained, tmp_path):
    config = _config(data, trained[0], pretrained=True, fine_tune_task="class_9",
                     fine_tuned_checkpoint=str(tmp_path / "ft"))
    with pytest.raises(DataError, match="--fine-tune-task 'class_9' is not a task in the data"):
        pipeline.fine_tune_one_task(_prepare(config))
    assert not (tmp_path / "ft").exists()


# --- 6. final evaluation ---------------------------------------------------------------------

def test_final_evaluation_writes_the_results_of_the_test_tasks(data, trained, tmp_path):
    run = tmp_path / "run"
    config = _config(data, run, pretrained=True, eval=EvalConfig(
        shots=5, eval_batch=2, eval_iters=1, eval_samples=2, serially_eval_all_test_tasks=True))
    prepared = _prepare(config)
    earlier = EvalResults({"class_6": [0.5]}, [0.5])
    result = pipeline.final_evaluation(prepared, random_init=earlier)
    assert result.random_init is earlier and result.label == "pretrained checkpoint"
    assert result.random_label == "random (same architecture, --seed 0)"
    assert {k: len(v) for k, v in result.test.task_scores.items()} == {"class_6": 2,
                                                                       "class_7": 2}
    # the training tasks: one random task per repetition
    assert sum(len(v) for v in result.train.task_scores.values()) == 2
    assert set(result.train.task_scores) <= set(prepared.train_store.names)
    with open(run / RESULTS_FILE, encoding="utf-8") as f:
        assert json.load(f) == result.test.task_scores
    with open(summary_path(str(run / RESULTS_FILE)), encoding="utf-8") as f:
        assert json.load(f)["mean_iou"] == pytest.approx(result.test.mean_iou)


def test_final_evaluation_without_training_tasks(data, tmp_path):
    config = _config(data, tmp_path / "run", eval=EvalConfig(
        shots=5, eval_batch=2, eval_iters=1, eval_samples=1, eval_train_tasks=False))
    result = pipeline.final_evaluation(_prepare(config))
    assert result.train is None and result.random_init is None
    assert result.label == "meta-learned"
    assert sum(len(v) for v in result.test.task_scores.values()) == 1  # one random task
