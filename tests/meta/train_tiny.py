"""A tiny meta-training run as a separate process, for the kill-and-resume test.

    python -m tests.meta.train_tiny CHECKPOINT_DIR [SECONDS_PER_ITERATION]

The optional sleep widens the window between checkpoints so the test can kill the process
mid-run deterministically enough; it does not change any number computed.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from metaseg.config import InnerConfig, MetaConfig  # noqa: E402
from metaseg.meta.trainer import MetaTrainer  # noqa: E402
from tests.meta.conftest import tiny_logits_model, tiny_store  # noqa: E402

META = MetaConfig(algorithm="fomaml", meta_iters=8, meta_batch=2, meta_step=0.5,
                  meta_step_final=0.1, train_shots=4, inner_batch=3, inner_iters=2,
                  eval_interval=100, checkpoint_every=1, seed=5)
INNER = InnerConfig(learning_rate=0.01, augment=True, aug_rate=0.5)  # Adam: optimiser state too


def main(directory: str, pause: float) -> None:
    trainer = MetaTrainer(tiny_logits_model(seed=0, dropout=0.25), tiny_store(), meta=META,
                          inner=INNER, checkpoint_dir=directory, total_inner_steps=4,
                          config={"model": {"name": "tiny"}})
    step = trainer._meta_step  # pylint: disable=protected-access

    def slow_step(*args):
        time.sleep(pause)
        return step(*args)

    trainer._meta_step = slow_step  # pylint: disable=protected-access
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
