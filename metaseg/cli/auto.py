"""``metaseg adapt --steps auto``: the flag's values and the wiring of
``metaseg.evaluation.autosteps`` (the k-fold choice itself lives there)."""

from __future__ import annotations

import argparse
from typing import Optional

from absl import logging

from metaseg.errors import ConfigError, DataError

AUTO = "auto"
MAX_STEPS_FACTOR = 2  # default --auto_max_steps: this many times the fixed step count


def steps_value(text: str):
    """argparse type of --steps: a whole number >= 0, or ``auto``."""
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps or 'auto', got "
                                         f"{text!r}") from None


def add_arguments(p) -> None:
    p.add_argument("--auto_max_steps", type=int, metavar="N",
                   help=f"with --steps auto: the largest step count tried (default: "
                        f"{MAX_STEPS_FACTOR}x the fixed default, UHO's or eval_iters)")
    p.add_argument("--auto_fallback", type=int, metavar="N",
                   help="with --steps auto and a single support pair (k-fold needs two): "
                        "adapt for N steps instead of stopping with an error")


def max_steps(fixed: int, given: Optional[int]) -> int:
    if given is not None:
        if given < 1:
            raise ConfigError(f"--auto_max_steps must be positive, got {given}")
        return int(given)
    return max(1, MAX_STEPS_FACTOR * int(fixed))


def single_support(count: int, fallback: Optional[int], support: str) -> Optional[int]:
    """With fewer than two support pairs: the --auto_fallback step count (after a warning),
    else a DataError naming what to do. None when k-fold can run."""
    if count >= 2:
        return None
    if fallback is None:
        raise DataError(f"--steps auto needs at least two support pairs (one to adapt on, one "
                        f"to score), --support {support} has {count}; add a labelled image, "
                        "pass --steps N, or add --auto_fallback N to adapt for N steps then")
    if fallback < 0:
        raise ConfigError(f"--auto_fallback must be >= 0, got {fallback}")
    logging.warning("--steps auto needs at least two support pairs, --support %s has %d: "
                    "adapting for --auto_fallback %d steps", support, count, fallback)
    return int(fallback)


def choose(source, adapter, support, *, fixed: int, most: int, learning_rate: float,
           seed: int):
    """Run the folds from ``adapter``'s model (the initialisation, not changed); an
    ``AutoSteps``."""
    # pylint: disable=import-outside-toplevel
    from metaseg.evaluation import autosteps
    from metaseg.specs import BatchSpec
    config = source.config
    n = len(support.names)
    logging.info(autosteps.cost_line(n, most, fixed))

    def fold_done(f, curve):
        logging.info("steps auto: fold %d done, held-out IoU %.3f at its best step",
                     f + 1, max(curve))
    found = autosteps.held_out_curves(
        adapter, support.images, support.masks,
        BatchSpec.evaluation(config.eval, config.inner), max_steps=most,
        learning_rate=learning_rate, seed=seed, transductive=config.eval.transductive,
        on_fold=fold_done)
    logging.info("steps auto: %d steps (mean held-out IoU %.3f; %.3f after 1 step, %.3f "
                 "after %d)", found.steps, found.score, found.curve[0], found.curve[-1], most)
    return found
