"""How the folders beside this script were made, with metaseg as of commit 9cb2649 (before
metaseg.checkpoints): a tiny meta-training run, an adapted model
(metaseg.cli.checkpoint.save_adapted), a fine-tuned checkpoint (Evaluator with a save_dir),
and the weights each holds (.npz), plus those of the run resumed from 2 to 3 meta-iterations.

    git archive 9cb2649 metaseg flags | tar -x -C /tmp/oldtree
    PYTHONPATH=/tmp/oldtree:. python tests/checkpoints/data/written_before/make_old_folders.py OUT

(The TensorBoard logs of the run were left out.) It runs against that metaseg only.
"""
import os, sys, json
import numpy as np
out = sys.argv[1]
import metaseg
assert metaseg.__file__.startswith("/tmp/oldtree"), metaseg.__file__
from metaseg.config import InnerConfig, MetaConfig, EvalConfig
from metaseg.meta.trainer import MetaTrainer
from metaseg.meta.adapt import Adapter
from metaseg.evaluation.evaluate import Evaluator
from metaseg.cli import checkpoint as cli_checkpoint
from tests.meta.conftest import tiny_logits_model, tiny_store

def dump(model, path):
    np.savez(path,
             **{f"trainable_{i}": v.numpy() for i, v in enumerate(model.trainable_variables)},
             **{f"non_trainable_{i}": v.numpy() for i, v in enumerate(model.non_trainable_variables)})

META = MetaConfig(algorithm="reptile", meta_iters=2, meta_batch=1, meta_step=0.5,
                  meta_step_final=0.5, train_shots=4, inner_batch=3, inner_iters=1,
                  eval_interval=100, checkpoint_every=1, keep_checkpoints=2, seed=3)
INNER = InnerConfig(sgd=True, learning_rate=0.05)
config = {"model": {"name": "tiny", "rsd": [2, 4]}, "meta": {"meta_iters": 2}}
model = tiny_logits_model(seed=0, dropout=0.25)
run = MetaTrainer(model, tiny_store(), meta=META, inner=INNER, checkpoint_dir=f"{out}/run",
                  total_inner_steps=1, config=config)
run.train()
dump(model, f"{out}/run_weights.npz")
# what a resumed run (2 -> 3) makes of it, to compare resuming with today's code
run3 = MetaTrainer(model, tiny_store(), meta=MetaConfig(**{**META.__dict__, "meta_iters": 3}),
                   inner=INNER, checkpoint_dir=f"{out}/run_resumed", total_inner_steps=1,
                   config=config)
import shutil; shutil.copytree(f"{out}/run", f"{out}/run_resumed")
run3.train()
dump(model, f"{out}/run_resumed_weights.npz")
shutil.rmtree(f"{out}/run_resumed")

adapted = tiny_logits_model(seed=1, dropout=0.25)
adapter = Adapter(adapted, INNER)
cli_checkpoint.save_adapted(adapted, adapter.initial_state().opt, f"{out}/adapted/model",
                            config, {"steps": 5, "kind": "metaseg", "initialisation": "x"})
dump(adapted, f"{out}/adapted_weights.npz")

evaluator = Evaluator(tiny_logits_model(seed=2, dropout=0.25), INNER,
                      EvalConfig(shots=3, eval_batch=2, eval_iters=3, eval_samples=1,
                                 serially_eval_all_test_tasks=True, seed=3), run_config=config)
evaluator.evaluate(tiny_store(), task_indices=[1], num_samples=1, save_dir=f"{out}/fine_tuned")
import tensorflow as tf
reader = tf.train.load_checkpoint(f"{out}/fine_tuned/task1/0/model.ckpt-3")
# the adapted weights, as the evaluator's shadow variables held them when written
sv = evaluator._saver[0]
np.savez(f"{out}/fine_tuned_weights.npz",
         **{f"trainable_{i}": v.numpy() for i, v in enumerate(sv[0])},
         **{f"non_trainable_{i}": v.numpy() for i, v in enumerate(sv[1])})
print("ok")
