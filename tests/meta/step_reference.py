"""Tiny meta-training runs whose final weights are kept as test data (``data/``).

    python -m tests.meta.step_reference          # rewrite data/meta_step_reference.npz

Each run meta-trains the tiny model of ``conftest.py`` (batch norm, dropout, Adam, so the
batch-norm statistics, the dropout seed state and the inner-optimiser slots all carry over)
for three meta-iterations of meta-batch 3 on one device, and keeps every model variable and
every optimiser slot. The file was written by the code of the commit named in its
``provenance`` entry; ``test_step_reference.py`` checks that today's code gives exactly the
same numbers.
"""
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from metaseg.config import InnerConfig, MetaConfig  # noqa: E402
from metaseg.meta.trainer import MetaTrainer  # noqa: E402
from tests.meta.conftest import tiny_logits_model, tiny_store  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                    "meta_step_reference.npz")
INNER = InnerConfig(learning_rate=0.01, augment=True, aug_rate=0.5,
                    learning_rate_scheduler="cosine_anneal")
SGD = InnerConfig(sgd=True, learning_rate=0.05, augment=True, aug_rate=0.5)
# name -> MetaConfig overrides (and "inner": other inner settings); every run: 3
# meta-iterations, meta-batch 3, 3 inner steps.
RUNS = {
    "reptile": dict(algorithm="reptile"),
    "reptile_sgd": dict(algorithm="reptile", inner=SGD),
    "fomaml": dict(algorithm="fomaml"),
    "fomaml_tail": dict(algorithm="fomaml", foml_tail=1),
    "reptile_reset": dict(algorithm="reptile", reset_state_per_task=True),
    "fomaml_reset": dict(algorithm="fomaml", reset_state_per_task=True),
}


def train(name: str, directory: str) -> dict:
    """Run ``name`` of RUNS in ``directory``; its variables as ``{"<name>/<kind>/<i>": array}``."""
    meta = MetaConfig(meta_iters=3, meta_batch=3, meta_step=0.7, meta_step_final=0.2,
                      train_shots=4, inner_batch=2, inner_iters=3, eval_interval=100,
                      checkpoint_every=100, seed=7,
                      **{k: v for k, v in RUNS[name].items() if k != "inner"})
    trainer = MetaTrainer(tiny_logits_model(seed=1, dropout=0.25), tiny_store(num_tasks=5),
                          meta=meta, inner=RUNS[name].get("inner", INNER),
                          checkpoint_dir=directory, total_inner_steps=5,
                          config={"model": {"name": "tiny"}})
    trainer.train()
    state = trainer.state
    out = {}
    for kind, variables in (("trainable", state.trainable),
                            ("non_trainable", state.non_trainable),
                            ("optimizer", state.optimizer)):
        for i, var in enumerate(variables):
            out[f"{name}/{kind}/{i}"] = np.asarray(var.numpy())
    return out


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True, cwd=os.path.dirname(DATA)).stdout.strip()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            results.update(train(name, os.path.join(tmp, name)))
    results["provenance"] = np.array(
        f"written by tests/meta/step_reference.py at metaseg commit {commit}")
    tmp_path = DATA + ".tmp.npz"
    np.savez(tmp_path, **results)
    os.replace(tmp_path, DATA)
    print(f"{DATA}: {len(results) - 1} arrays, {results['provenance']}", file=sys.stderr)


if __name__ == "__main__":
    main()
