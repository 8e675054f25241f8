"""Meta-training driver: checkpoints, resume, determinism, bad input."""
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from metaseg.config import InnerConfig, MetaConfig
from metaseg.data import episodes
from metaseg.errors import CheckpointError
from metaseg import checkpoints
from metaseg.meta.adapt import Adapter
from metaseg.meta.algorithms import make_algorithm
from metaseg.meta.trainer import MetaTrainer, NonFiniteLossError
from metaseg.specs import BatchSpec, EpisodeSpec
from tests.meta.conftest import tiny_logits_model, tiny_store

INNER = InnerConfig(sgd=True, learning_rate=0.05, augment=True, aug_rate=0.5)


def _meta(**overrides):
    settings = dict(algorithm="reptile", meta_iters=5, meta_batch=2, meta_step=0.5,
                    meta_step_final=0.1, train_shots=4, inner_batch=3, inner_iters=2,
                    eval_interval=2, checkpoint_every=2, seed=11)
    settings.update(overrides)
    return MetaConfig(**settings)


def _trainer(directory, meta=None, inner=INNER, config=None, evaluators=None, dropout=0.25):
    return MetaTrainer(tiny_logits_model(seed=0, dropout=dropout), tiny_store(),
                       meta=meta or _meta(), inner=inner, checkpoint_dir=str(directory),
                       total_inner_steps=4, config=config or {"model": {"name": "tiny"}},
                       evaluators=evaluators)


def _values(trainer):
    return [v.numpy().copy() for v in trainer.model.variables]


def test_training_writes_checkpoints_config_and_tensorboard(tmp_path):
    calls = []
    trainer = _trainer(tmp_path, evaluators={
        "test": lambda model: calls.append(model) or {"IoU": 0.5}})
    before = _values(trainer)
    assert trainer.train() == 5
    assert not all(np.array_equal(a, b) for a, b in zip(before, _values(trainer)))
    names = sorted(os.listdir(tmp_path))
    assert "config.json" in names and "checkpoint" in names
    kept = [n for n in names if n.endswith(".index")]
    assert kept == ["model.ckpt-4.index", "model.ckpt-5.index"]  # keep the newest 2
    assert len(calls) == 3  # iterations 2, 4 and the last
    for logdir in ("train", "test"):
        assert any(f.startswith("events") for f in os.listdir(tmp_path / logdir))


def test_evaluation_line_names_how_many_tasks_were_scored(tmp_path, caplog):
    trainer = _trainer(tmp_path, meta=_meta(meta_iters=2), evaluators={
        "test": lambda model: {"IoU": 0.5, "tasks": 1},
        "train": lambda model: {"IoU": 0.25, "tasks": 3}})
    with caplog.at_level(logging.INFO):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]
    assert lines == ["batch 2: test(1 task)=0.5000 train(3 tasks)=0.2500"]
    tags = {value.tag for f in (tmp_path / "test").iterdir()
            for event in tf.compat.v1.train.summary_iterator(str(f))
            for value in event.summary.value}
    assert tags == {"IoU", "meta_step_size"}  # the count is not a TensorBoard scalar


def test_same_seed_gives_identical_weights(tmp_path):
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b")
    a.train()
    b.train()
    for x, y in zip(_values(a), _values(b)):
        np.testing.assert_array_equal(x, y)


class _Interrupt(Exception):
    pass


def test_interrupted_then_resumed_run_is_bit_identical(tmp_path):
    full = _trainer(tmp_path / "full", meta=_meta(algorithm="fomaml"))
    full.train()

    interrupted = _trainer(tmp_path / "cut", meta=_meta(algorithm="fomaml"))
    original_step = interrupted._meta_step

    def step_then_die(stream, iteration, epsilon):
        if iteration == 3:  # after checkpoint 2 and one more unsaved iteration
            raise _Interrupt()
        return original_step(stream, iteration, epsilon)

    interrupted._meta_step = step_then_die
    with pytest.raises(_Interrupt):
        interrupted.train()
    resumed = _trainer(tmp_path / "cut", meta=_meta(algorithm="fomaml"))  # a fresh process
    assert resumed.restore() == 2
    resumed.train()
    for x, y in zip(_values(full), _values(resumed)):
        np.testing.assert_array_equal(x, y)


def test_meta_batch_of_three_is_the_mean_of_three_single_task_steps(tmp_path):
    meta = _meta(meta_batch=3, meta_iters=1, meta_step=0.5, meta_step_final=0.5)
    inner = InnerConfig(sgd=True, learning_rate=0.05)
    trainer = _trainer(tmp_path, meta=meta, inner=inner, dropout=0.0)
    theta = [v.numpy() for v in trainer.adapter.net.trainable_variables]
    stream = iter(episodes.meta_training_dataset(
        trainer.store, EpisodeSpec(4, 2, BatchSpec(3)), seed=11))
    reference = Adapter(tiny_logits_model(seed=0, dropout=0.0), inner)
    directions = []
    for _ in range(3):
        d, _, _ = make_algorithm("reptile").task_direction(
            reference, reference.initial_state(), next(stream), tf.constant(0.05),
            tf.constant(4))
        directions.append([t.numpy() for t in d])
    trainer.train()
    for i, var in enumerate(trainer.adapter.net.trainable_variables):
        want = theta[i] + 0.5 * np.mean([d[i] for d in directions], axis=0)
        np.testing.assert_allclose(var.numpy(), want, rtol=1e-5, atol=1e-6)


def test_non_finite_loss_stops_assigns_nothing_and_names_iteration_task_and_checkpoint(
        tmp_path):
    """The loss turns NaN at meta-iteration 3, after checkpoints 1 and 2: the step assigns
    nothing, no checkpoint of it is written, and the error is one line naming it."""
    poison = tf.Variable(1.0)  # multiplies the loss; NaN from meta-iteration 3 on

    def loss(trainable, logits, labels):
        del trainable
        return poison * tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))

    model = tiny_logits_model(seed=0, dropout=0.25)
    saved = {}

    def poison_after_iteration_2(net):
        saved.update(values=[v.numpy().copy() for v in net.variables])
        poison.assign(float("nan"))
        return {"IoU": 0.5}

    trainer = MetaTrainer(model, tiny_store(), meta=_meta(checkpoint_every=1, eval_interval=2),
                          inner=INNER, checkpoint_dir=str(tmp_path), total_inner_steps=4,
                          config={"model": {"name": "tiny"}},
                          adapter=Adapter(model, INNER, loss_fn=loss),
                          evaluators={"test": poison_after_iteration_2})
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train()
    message = str(error.value)
    assert "\n" not in message
    assert re.match(r"non-finite loss at meta-iteration 3 on tasks? 'task\d'(, 'task\d')*; "
                    r"nothing of it was saved; newest checkpoint: .*model\.ckpt-2 "
                    r"\(meta-iteration 2, ", message), message
    assert checkpoints.latest(str(tmp_path)).endswith("model.ckpt-2")
    assert not [n for n in os.listdir(tmp_path) if n.startswith("model.ckpt-3")]
    # Nothing of the failed step was assigned: the variables are those of iteration 2.
    assert int(trainer.state.iteration.numpy()) == 2
    for got, want in zip(_values(trainer), saved["values"], strict=True):
        np.testing.assert_array_equal(got, want)
    assert all(np.all(np.isfinite(v)) for v in saved["values"] if v.dtype.kind == "f")
    for var in trainer.state.optimizer:  # the optimiser slots too
        assert np.all(np.isfinite(var.numpy()))


def test_a_huge_learning_rate_is_a_non_finite_loss_at_the_first_meta_iteration(tmp_path):
    trainer = _trainer(tmp_path, meta=_meta(checkpoint_every=1),
                       inner=InnerConfig(sgd=True, learning_rate=1e30))
    before = _values(trainer)
    with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at meta-iteration 1 on "
                                                 r"tasks? 'task\d'.*no checkpoint was written"):
        trainer.train()
    for got, want in zip(_values(trainer), before, strict=True):
        np.testing.assert_array_equal(got, want)
    assert checkpoints.latest(str(tmp_path)) is None


def test_resuming_with_another_model_configuration_names_the_difference(tmp_path):
    _trainer(tmp_path, meta=_meta(meta_iters=2), config={"model": {"rsd": [2, 4]}}).train()
    other = _trainer(tmp_path, meta=_meta(meta_iters=4), config={"model": {"rsd": [4]}})
    with pytest.raises(CheckpointError, match=r"rsd: checkpoint \[2, 4\] vs now \[4\]"):
        other.train()


def test_restore_weights_loads_the_model_and_can_skip_the_final_layer(tmp_path):
    trained = _trainer(tmp_path, meta=_meta(meta_iters=2))
    trained.train()
    fresh = tiny_logits_model(seed=5, dropout=0.25)
    final_before = fresh.get_layer("final_layer_weights").kernel.numpy().copy()
    assert checkpoints.detect(str(tmp_path)).kind is checkpoints.Kind.RUN
    assert checkpoints.restore_weights(fresh, str(tmp_path), skip_final_layer=True) == 2
    np.testing.assert_array_equal(fresh.get_layer("final_layer_weights").kernel.numpy(),
                                  final_before)
    np.testing.assert_array_equal(fresh.get_layer("conv").kernel.numpy(),
                                  trained.model.get_layer("conv").kernel.numpy())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoints.restore_weights(fresh, str(tmp_path / "empty"))
