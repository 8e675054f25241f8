"""Tiny meta-training runs under tf.distribute strategies, each in a fresh process.

    python -m tests.meta.train_distributed compare OUT.npz [fomaml|reptile] [adam|sgd]
    python -m tests.meta.train_distributed worker CHECKPOINT_DIR OUT.npz [META_ITERS]

``compare`` splits the CPU into two logical devices (which only a fresh process can do) and
trains the same tiny model three ways for two meta-iterations of meta-batch 4: one device
(the default strategy, ``--reset_state_per_task``, whose result does not depend on task
order), ``mirrored`` on one logical device, and ``mirrored`` on two; under ``mirrored`` with
``reset`` and with the default carry-over (``mean``). It saves every result's variables in
OUT.npz, and for ``--reset_state_per_task`` runs, last, the query IoU of each of 5 tasks
evaluated under the same strategy (spread over the replicas). ``mirrored2_resumed`` stops after one
meta-step and is resumed from its checkpoint by a new model and trainer.

``worker`` is one process of a ``multi_worker_mirrored`` run (``TF_CONFIG`` set by the test):
META_ITERS (default 2) meta-iterations of FOMAML with Adam, a checkpoint every 2, and its
final variables in OUT.npz. With
``DIE_AFTER_STEPS=n`` in the environment the process exits abruptly after n meta-steps
(a few seconds after the last one returned), as a crashed machine would.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metaseg import distribute  # noqa: E402
from metaseg.config import DistributeConfig, EvalConfig, InnerConfig, MetaConfig  # noqa: E402
from metaseg.evaluation.evaluate import Evaluator  # noqa: E402
from metaseg.errors import exit_on_error  # noqa: E402
from metaseg.meta.trainer import MetaTrainer  # noqa: E402
from tests.meta.conftest import tiny_logits_model, tiny_store  # noqa: E402


def _meta(algorithm: str, reset: bool, meta_batch: int = 4) -> MetaConfig:
    return MetaConfig(algorithm=algorithm, meta_iters=2, meta_batch=meta_batch, meta_step=0.5,
                      meta_step_final=0.1, train_shots=4, inner_batch=3, inner_iters=3,
                      eval_interval=100, checkpoint_every=2, seed=3,
                      reset_state_per_task=reset)


def _train(directory, strategy, meta, inner, dropout=0.25, evaluate=False):
    with (strategy or tf.distribute.get_strategy()).scope():
        model = tiny_logits_model(seed=0, dropout=dropout, conv_bias=False)
    trainer = MetaTrainer(model, tiny_store(), meta=meta, inner=inner,
                          checkpoint_dir=directory, total_inner_steps=4,
                          config={"model": {"name": "tiny"}}, strategy=strategy)
    trainer.train()
    values = [np.asarray(v.numpy()) for v in model.variables]
    if evaluate:  # every task of a 5-task store: 3 rounds of 2 replicas, the last one padded
        evaluator = Evaluator(model, inner, EvalConfig(shots=3, eval_batch=2, eval_iters=3,
                                                       eval_samples=1, seed=4), strategy=strategy)
        results = evaluator.evaluate(tiny_store(num_tasks=5), serial=True)
        values.append(np.array([results.task_scores[f"task{t}"][0] for t in range(5)]))
    return values


def compare(out: str, algorithm: str, optimizer: str) -> None:
    import tempfile  # pylint: disable=import-outside-toplevel
    distribute.split_cpu(2)
    inner = InnerConfig(sgd=optimizer == "sgd", learning_rate=0.05 if optimizer == "sgd"
                        else 0.01, augment=True, aug_rate=0.5)
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        def run(name, strategy, reset):
            values = _train(os.path.join(tmp, name), strategy, _meta(algorithm, reset), inner,
                            evaluate=reset)
            for i, value in enumerate(values):
                results[f"{name}/{i}"] = value

        run("single_reset", None, True)
        for reset in (True, False):
            suffix = "reset" if reset else "carry"
            run(f"mirrored1_{suffix}", tf.distribute.MirroredStrategy(cpus[:1]), reset)
            run(f"mirrored2_{suffix}", tf.distribute.MirroredStrategy(cpus[:2]), reset)
        # Interrupted after one meta-step, then resumed by a new trainer and model.
        first = _meta(algorithm, False)
        first = MetaConfig(**{**first.__dict__, "meta_iters": 1, "checkpoint_every": 1})
        resumed = os.path.join(tmp, "resumed")
        _train(resumed, tf.distribute.MirroredStrategy(cpus[:2]), first, inner)
        values = _train(resumed, tf.distribute.MirroredStrategy(cpus[:2]),
                        _meta(algorithm, False), inner)
        for i, value in enumerate(values):
            results[f"mirrored2_resumed/{i}"] = value
    np.savez(out, **results)


@exit_on_error
def worker(directory: str, out: str, meta_iters: int = 2) -> None:
    strategy = distribute.make_strategy(DistributeConfig(strategy="multi_worker_mirrored"))
    inner = InnerConfig(learning_rate=0.01, augment=True, aug_rate=0.5)
    meta = MetaConfig(**{**_meta("fomaml", reset=False, meta_batch=2).__dict__,
                         "meta_iters": meta_iters})
    die_after = int(os.environ.get("DIE_AFTER_STEPS", "0"))
    if die_after:
        from metaseg.meta import step  # pylint: disable=import-outside-toplevel
        call, count = step.MetaStep.__call__, [0]

        def dying(self, *args):
            if count[0] == die_after:
                # A step's last all-reduce message may still be on its way to the chief when
                # this worker's own step returns: give it time to arrive, so the chief fails
                # in the next step, as when a machine dies between steps.
                time.sleep(3)
                os._exit(17)  # pylint: disable=protected-access
            count[0] += 1
            return call(self, *args)

        step.MetaStep.__call__ = dying
    values = _train(directory, strategy, meta, inner)
    np.savez(out, *values)


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        compare(sys.argv[2], *(sys.argv[3:5] if len(sys.argv) > 4 else ("fomaml", "adam")))
    else:
        worker(sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:5]))
