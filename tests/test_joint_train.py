"""The joint-training baseline (REFERENCE.md section 9): flags, the pooled tf.data pipeline
(training classes only), model.fit lowering the loss, checkpoints in metaseg's layout that
restore bit for bit, and run_metasegnet's --pretrained evaluation of them."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags as absl_flags

from metaseg import flags
from metaseg import joint, joint_train, pipeline
from metaseg.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from metaseg.data import SHARD_SUFFIX, TaskStore, episodes, write_shard
from metaseg.evaluation.metrics import binary_iou
from metaseg import checkpoints
from metaseg.models import build_model
from tests.cli.conftest import subprocess_env
from tests.conftest import time_limit
from tests.data.conftest import synthetic_pairs

SIZE, EXAMPLES = 32, 12
TRAIN_CLASSES = ("class_0", "class_1", "class_2", "class_3")
TEST_CLASSES = ("class_4", "class_5")
EPOCHS, BATCH = 3, 8
STEPS_PER_EPOCH = len(TRAIN_CLASSES) * EXAMPLES // BATCH  # 48 examples: 6 batches


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(shard directory, test-class list): 6 classes of 12 examples, 32 px."""
    root = tmp_path_factory.mktemp("joint_data")
    (root / "shards").mkdir()
    for kind, name in enumerate(TRAIN_CLASSES + TEST_CLASSES):
        images, masks = synthetic_pairs(EXAMPLES, SIZE, seed=kind, kind=kind)
        write_shard(root / "shards" / f"{name}{SHARD_SUFFIX}", zip(images, masks))
    (root / "test_classes.txt").write_text("\n".join(TEST_CLASSES) + "\n")
    return root / "shards", root / "test_classes.txt"


def parse(words):
    """``python -m metaseg.joint_train WORDS`` -> its config (a fresh FlagValues)."""
    flag_values = absl_flags.FlagValues()
    joint_train.define_flags(flag_values)
    flags.parse_flags(["joint_train", *words], flag_values)
    return joint_train.config_from_flags(flag_values)


def words(data, checkpoint, *extra):
    data_dir, test_classes = data
    return ["--data-dir", str(data_dir), "--test_tasks_file", str(test_classes),
            "--image_size", str(SIZE), "--rsd", "2", "4", "--loss_name", "bce_dice",
            "--epochs", str(EPOCHS), "--batch_size", str(BATCH), "--learning_rate", "0.001",
            "--checkpoint", str(checkpoint), *extra]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One joint training run of 3 epochs; returns (result, config, the tasks it loaded)."""
    config = parse(words(data, tmp_path_factory.mktemp("joint") / "run"))
    loaded, load = [], TaskStore.load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(joint.TaskStore, "load", lambda tasks, *a, **k: loaded.append(
            [t.name for t in tasks]) or load(tasks, *a, **k))
        result = joint.train(config)
    return result, config, loaded


def test_flags_build_the_config_and_name_the_flags_it_ignores(data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        config = parse(words(data, tmp_path / "x", "--meta-iters", "7", "--shots", "3",
                             "--augment", "--seed", "5"))
    assert (config.epochs, config.batch_size) == (EPOCHS, BATCH)
    run = config.run
    assert run.inner.learning_rate == 0.001 and run.inner.loss_name == "bce_dice"
    assert run.inner.augment and run.model.rsd == (2, 4) and run.seed == 5
    assert run.data.image_size == SIZE and run.checkpoint == str(tmp_path / "x")
    assert "Joint training ignores --meta-iters, --shots (meta-training and evaluation " \
           "flags)" in caplog.text
    assert parse([]) == joint_train.JointTrainConfig()  # defaults: metaseg.config's


def test_bad_flag_ends_in_one_line_before_tensorflow(tmp_path):
    result = subprocess.run([sys.executable, "-m", "metaseg.joint_train", "--epochs", "0"],
                            capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(),
                            timeout=time_limit(120))
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --epochs must be positive, got 0"]
    assert not os.listdir(tmp_path)  # nothing was created


def test_pooled_batches_visit_every_training_example_once_per_pass(data):
    store = TaskStore.load(pipeline.load_splits(
        RunConfig(data=DataConfig(test_tasks_file=str(data[1]))), str(data[0])).train, SIZE)
    batches = list(joint.pooled_dataset(store, batch_size=BATCH, seed=3).take(
        2 * STEPS_PER_EPOCH).as_numpy_iterator())
    assert all(x.shape == (BATCH, SIZE, SIZE, 3) and y.shape == (BATCH, SIZE, SIZE, 2)
               for x, y in batches)
    expected = sorted(image.astype(np.float32).tobytes() for image in store.images.numpy())
    assert len(expected) == len(TRAIN_CLASSES) * EXAMPLES
    for epoch in range(2):  # each pass: a permutation of the 48 pooled examples
        x = np.concatenate([b[0] for b in batches[epoch * 6:(epoch + 1) * 6]])
        assert sorted(image.tobytes() for image in x) == expected
    first, second = (np.concatenate([b[0] for b in batches[e * 6:e * 6 + 6]]) for e in (0, 1))
    assert not np.array_equal(first, second)  # reshuffled between passes
    y = np.concatenate([b[1] for b in batches])
    assert set(np.unique(y)) == {0.0, 1.0} and np.all(y.sum(-1) == 1)


def test_loss_decreases_and_only_training_classes_are_read(trained):
    result, _, loaded = trained
    assert loaded == [list(TRAIN_CLASSES)]  # the test classes never reach training
    losses = result.history["loss"]
    assert len(losses) == EPOCHS and losses[-1] < 0.8 * losses[0], losses
    assert len(result.history["iou"]) == EPOCHS


def test_checkpoint_layout_config_and_tensorboard(trained):
    result, config, _ = trained
    directory = result.checkpoint
    assert result.iteration == EPOCHS * STEPS_PER_EPOCH
    assert checkpoints.detect(directory).kind.is_metaseg
    assert checkpoints.latest(directory).endswith(f"model.ckpt-{result.iteration}")
    kept = sorted(f for f in os.listdir(directory) if f.endswith(".index"))
    assert kept == [f"model.ckpt-{2 * STEPS_PER_EPOCH}.index",
                    f"model.ckpt-{3 * STEPS_PER_EPOCH}.index"]  # the newest 2
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        assert RunConfig.from_json(f.read()) == config.run
    events = os.listdir(os.path.join(directory, "train"))
    assert any(name.startswith("events.out.tfevents") for name in events)


def test_checkpoint_restores_the_trained_weights_bit_for_bit(trained):
    result, config, _ = trained
    fresh = build_model(config.run.model)
    assert checkpoints.restore_weights(fresh, result.checkpoint) == result.iteration
    assert len(fresh.variables) == len(result.model.variables)
    for restored, want in zip(fresh.variables, result.model.variables):
        assert np.array_equal(restored.numpy(), want.numpy()), want.path


def test_run_metasegnet_pretrained_evaluates_the_joint_checkpoint(trained, data):
    result, _, _ = trained
    config = RunConfig(
        data=DataConfig(data_dir=str(data[0]), test_tasks_file=str(data[1]), image_size=SIZE),
        model=ModelConfig(rsd=(2, 4)), pretrained=True, checkpoint=result.checkpoint,
        eval=EvalConfig(shots=5, eval_batch=2, eval_iters=0, eval_samples=1, transductive=True,
                        serially_eval_all_test_tasks=True, eval_train_tasks=False))
    evaluated = pipeline.run(config)
    assert sorted(evaluated.test.task_scores) == list(TEST_CLASSES)
    # With 0 fine-tuning steps the protocol scores the joint initialisation itself: the
    # same IoUs as the trained Keras model predicting the same query images directly.
    store = TaskStore.load(pipeline.load_splits(config, str(data[0])).test, SIZE)
    for i, name in enumerate(store.names):
        _, _, query_x, query_y = episodes.evaluation_episode(store, i, shots=5, seed=0)
        direct = binary_iou(result.model(query_x, training=False), query_y).numpy().mean()
        assert evaluated.test.task_scores[name] == [pytest.approx(direct, abs=1e-5)]
