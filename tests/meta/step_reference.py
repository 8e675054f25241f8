"""Tiny meta-training runs whose final weights are kept as test data (``data/``).

    python -m tests.meta.step_reference [OUT.npz]   # default: rewrite data/meta_step_reference.npz

Each run meta-trains the tiny model of ``conftest.py`` (batch norm, dropout, Adam, so the
batch-norm statistics, the dropout seed state and the inner-optimiser slots all carry over)
for three meta-iterations of meta-batch 3 on one device, and keeps every model variable and
every optimiser slot. The data file was written by the code of the commit named in its
``provenance`` entry; ``test_step_reference.py`` runs this script again (a fresh process)
and checks that today's code gives exactly the same numbers.

The thread pools are pinned (one intra-op thread, two inter-op), so the sums inside each op
are in one order whatever the machine's core count; the kernels themselves are the CPU's
(oneDNN picks them by instruction set), so the file holds the bits of a CPU like the one
named in ``provenance``.
"""
import os
import platform
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TF_NUM_INTRAOP_THREADS"], os.environ["TF_NUM_INTEROP_THREADS"] = "1", "2"

from metaseg.quiet import import_tensorflow  # noqa: E402

import_tensorflow()

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


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def main(out: str = DATA) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True, cwd=os.path.dirname(DATA)).stdout.strip()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            results.update(train(name, os.path.join(tmp, name)))
    results["provenance"] = np.array(
        f"written by tests/meta/step_reference.py at metaseg commit {commit} on {_cpu()}")
    tmp_path = out + ".tmp.npz"
    np.savez(tmp_path, **results)
    os.replace(tmp_path, out)
    print(f"{out}: {len(results) - 1} arrays, {results['provenance']}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:2])
