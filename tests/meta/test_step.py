"""The meta-step is one compiled call, the same under every carry-over policy."""
import numpy as np
import pytest

from metaseg.config import InnerConfig, MetaConfig
from metaseg.meta.trainer import MetaTrainer
from tests.meta.conftest import tiny_logits_model, tiny_store

SGD = InnerConfig(sgd=True, learning_rate=0.05, augment=True, aug_rate=0.5)


def _trainer(directory, inner=SGD, **meta):
    settings = dict(algorithm="fomaml", meta_iters=3, meta_batch=3, meta_step=0.5,
                    meta_step_final=0.1, train_shots=4, inner_batch=2, inner_iters=3,
                    eval_interval=100, checkpoint_every=100, seed=2)
    settings.update(meta)
    return MetaTrainer(tiny_logits_model(seed=0, dropout=0.25), tiny_store(), meta=MetaConfig(
        **settings), inner=inner, checkpoint_dir=str(directory), total_inner_steps=4)


def _values(trainer):
    return [v.numpy().copy() for v in trainer.model.variables]


def test_one_trace_and_no_python_per_task_after_the_first_meta_step(tmp_path):
    trainer = _trainer(tmp_path, meta_iters=1)
    trainer.train()
    before = _values(trainer)

    def not_from_python(*args):
        raise AssertionError("the adaptation ran from Python after the step was compiled")

    trainer.adapter.adapt = not_from_python  # a compiled step does not call it again
    stream = iter(trainer._episodes(1))  # pylint: disable=protected-access
    for iteration in (1, 2):
        trainer._meta_step(stream, iteration, 0.5)  # pylint: disable=protected-access
    compiled = trainer._step._step  # pylint: disable=protected-access
    assert compiled.experimental_get_tracing_count() == 1
    assert not all(np.array_equal(a, b) for a, b in zip(before, _values(trainer)))


def test_the_default_policy_on_one_device_is_sequential(tmp_path):
    assert _trainer(tmp_path).carry_over == "sequential"
    assert _trainer(tmp_path, reset_state_per_task=True).carry_over == "reset"
    assert _trainer(tmp_path, carry_over="mean").carry_over == "mean"


def test_with_sgd_reset_and_mean_differ_only_in_the_step_count_they_keep(tmp_path):
    """SGD has no slots but its step count, and training-mode batch norm does not read the
    moving statistics: both policies train alike, keep the same mean statistics, and differ
    in the count (reset: as saved; mean: advanced by each task's 3 steps)."""
    runs = {}
    for policy in ("reset", "mean", "sequential"):
        trainer = _trainer(tmp_path / policy, carry_over=policy)
        trainer.train()
        runs[policy] = (_values(trainer), [int(v.numpy()) for v in trainer.state.optimizer])
    for a, b in zip(runs["reset"][0], runs["mean"][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs["reset"][1] == [0] and runs["mean"][1] == [9]
    assert runs["sequential"][1] == [27]  # 3 meta-iterations x 3 tasks x 3 steps, carried
    # Sequential carries the dropout seed state from task to task: other masks, other weights.
    assert not all(np.array_equal(a, b) for a, b in zip(runs["reset"][0],
                                                        runs["sequential"][0]))


@pytest.mark.parametrize("policy", ["reset", "mean"])
def test_parallel_policies_do_not_depend_on_the_order_of_the_tasks(tmp_path, policy):
    """The same meta-batch, its tasks in another order (meta-batch 3 of one repeated set):
    the weights agree to float reassociation of the direction sum."""
    a = _trainer(tmp_path / "a", carry_over=policy, meta_iters=1)
    b = _trainer(tmp_path / "b", carry_over=policy, meta_iters=1)
    episodes = next(iter(a._episodes(0)))  # pylint: disable=protected-access
    reordered = {k: v.numpy()[[2, 0, 1]] for k, v in episodes.items()}
    a._meta_step(iter([episodes]), 0, 0.5)  # pylint: disable=protected-access
    b._meta_step(iter([reordered]), 0, 0.5)  # pylint: disable=protected-access
    for x, y in zip(_values(a), _values(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
