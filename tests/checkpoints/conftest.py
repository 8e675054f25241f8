"""Checkpoint folders written by the real writers: a tiny meta-training run (MetaTrainer),
fine-tuned checkpoints (Evaluator with --save_fine_tuned_checkpoints)."""
import pytest

from metaseg.config import EvalConfig, InnerConfig, MetaConfig
from metaseg.evaluation.evaluate import Evaluator
from metaseg.meta.trainer import MetaTrainer
from tests.meta.conftest import tiny_logits_model, tiny_store
from tests.models import tf1_fixtures

META = MetaConfig(algorithm="reptile", meta_iters=2, meta_batch=1, meta_step=0.5,
                  meta_step_final=0.5, train_shots=4, inner_batch=3, inner_iters=1,
                  eval_interval=100, checkpoint_every=1, keep_checkpoints=2, seed=3)
INNER = InnerConfig(sgd=True, learning_rate=0.05)
RUN_CONFIG = {"model": {"name": "tiny", "rsd": (2, 4)}}


def trainer(directory, meta=META, seed=0):
    return MetaTrainer(tiny_logits_model(seed=seed), tiny_store(), meta=meta, inner=INNER,
                       checkpoint_dir=str(directory), total_inner_steps=1, config=RUN_CONFIG)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A folder meta-training wrote: model.ckpt-1, model.ckpt-2, config.json."""
    directory = tmp_path_factory.mktemp("run") / "run"
    assert trainer(directory).train() == 2
    return directory


@pytest.fixture(scope="module")
def fine_tuned_dir(tmp_path_factory):
    """``<dir>/task1/0``: one checkpoint --save_fine_tuned_checkpoints wrote (3 steps)."""
    root = tmp_path_factory.mktemp("fine_tuned")
    evaluator = Evaluator(tiny_logits_model(seed=0), INNER,
                          EvalConfig(shots=3, eval_batch=2, eval_iters=3, eval_samples=1,
                                     serially_eval_all_test_tasks=True, seed=3),
                          run_config=RUN_CONFIG)
    evaluator.evaluate(tiny_store(), task_indices=[1], num_samples=1, save_dir=str(root))
    return root / "task1" / "0"


@pytest.fixture(scope="session")
def tf1_weights():
    """{TF1 name: random float32 array} for every variable of the published network."""
    return tf1_fixtures.random_weights(tf1_fixtures.read_tsv(), seed=0)
