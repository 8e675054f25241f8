"""``metaseg info``: what a checkpoint is, read from its files without building the model.

Prints (to stdout) one ``key: value`` line each for the checkpoint file, what kind of
checkpoint it is and how far it was trained, the architecture, the image size, the training
and evaluation settings, the UHO values stored with it, and how an adapted model was made.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, List, Tuple

import numpy as np

from metaseg.config import RunConfig

if TYPE_CHECKING:  # TensorFlow is imported by the functions, after the flags are parsed
    from metaseg import checkpoints

# pylint: disable=import-outside-toplevel,redefined-outer-name

HELP = "describe a checkpoint: architecture, image size, training, stored UHO values"


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("info", parents=parents, help=HELP, description=HELP)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="metaseg checkpoint folder, metaseg adapt output, TF1 checkpoint, "
                        "or preset (folder or shipped name)")
    p.set_defaults(run=run)


def inner_loop(config: RunConfig, steps: int, batch: int) -> str:
    i = config.inner
    optimiser = "SGD" if i.sgd else "Adam"
    extras = [name for name, on in (("L2", i.l2), ("L1", i.l1), ("DARC1", i.darc1),
                                    ("augmentation", i.augment)) if on]
    return (f"{steps} steps of batch {batch}, {optimiser} at {i.learning_rate:g} "
            f"({i.learning_rate_scheduler} schedule), loss {i.loss_name}"
            + (f" + {', '.join(extras)}" if extras else ""))


def _metaseg_lines(source: checkpoints.Source) -> List[Tuple[str, str]]:
    from metaseg import checkpoints
    prefix = source.found.prefix
    values = checkpoints.read_tensors(prefix)  # every value: a truncated file is named
    iteration = int(values[checkpoints.ITERATION_KEY])
    shapes = {name: np.shape(value) for name, value in values.items()}
    weights = sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith("trainable/"))
    config, meta = source.config, source.config.meta
    if source.kind is checkpoints.Kind.ADAPTED:
        a = source.adaptation
        what = (f"adapted model (metaseg adapt) from {a.get('initialisation')} "
                f"({a.get('kind')}) on {len(a.get('support', []))} support images: "
                f"{a.get('steps')} steps at learning rate {a.get('learning_rate'):g}")
    elif source.kind is checkpoints.Kind.RUN:
        what = f"meta-trained initialisation, meta-iteration {iteration} of {meta.meta_iters}"
    else:
        what = f"fine-tuned model written by evaluation ({iteration} steps)"
    tail = f", FOMAML tail {meta.foml_tail}" if meta.foml_tail else ""
    return [
        ("checkpoint", f"{prefix} (metaseg)"),
        ("what", what),
        ("architecture", f"{checkpoints.architecture(config)}; {weights:,} trainable weights"),
        ("image size", f"{config.data.image_size} px"),
        ("meta-training", f"{meta.algorithm}{tail}, meta-batch {meta.meta_batch}, "
                          f"{meta.train_shots} train shots, meta step {meta.meta_step:g} -> "
                          f"{meta.meta_step_final:g}, seed {meta.seed}"),
        ("inner loop", inner_loop(config, meta.inner_iters, meta.inner_batch)),
        ("evaluation", f"{config.eval.shots} shots, "
                       + inner_loop(config, config.eval.eval_iters, config.eval.eval_batch)),
    ]


def _tf1_lines(source: checkpoints.Source) -> List[Tuple[str, str]]:
    from metaseg import checkpoints
    from metaseg.models.tf1_checkpoint import read_checkpoint_shapes
    prefix = source.found.prefix
    values = checkpoints.read_tensors(prefix)
    step = (f", global step {int(values['global_step'])}" if "global_step" in values else "")
    weights = sum(int(np.prod(s)) for s in read_checkpoint_shapes(prefix).values())
    config = source.config
    return [
        ("checkpoint", f"{prefix} (authors' TF1 code)"),
        ("what", f"TF1 checkpoint{step}; its settings are not stored, metaseg assumes the "
                 "published FSS-1000 evaluation (the original ml4ai/mliis run.sh)"),
        ("architecture", f"{checkpoints.architecture(config)} (read from the variable names; "
                         f"dropout as published); {weights:,} stored values incl. batch-norm "
                         "statistics"),
        ("image size", f"{config.data.image_size} px (published)"),
        ("evaluation", f"{config.eval.shots} shots, "
                       + inner_loop(config, config.eval.eval_iters, config.eval.eval_batch)),
    ]


def _preset_lines(source: checkpoints.Source) -> List[Tuple[str, str]]:
    from metaseg import checkpoints
    m, config, meta = source.preset.metadata, source.config, source.config.meta
    weights = m.get("weights", {})
    return [
        ("checkpoint", f"{source.directory} (metaseg preset {source.preset.name}, format "
                       f"{m.get('format_version')}, metaseg {m.get('metaseg_version')})"),
        ("what", m.get("description") or "preset"),
        ("trained on", m.get("trained_on", "not recorded")),
        ("architecture", f"{checkpoints.architecture(config)}; {weights.get('count', 0):,} "
                         f"weights in {checkpoints.preset_files.WEIGHTS_FILE} "
                         f"({weights.get('stored_as', '')})"),
        ("image size", f"{config.data.image_size} px"),
        ("meta-training", f"{m.get('training', {}).get('how', '-')}, meta-batch "
                          f"{meta.meta_batch}, {meta.train_shots} train shots, meta step "
                          f"{meta.meta_step:g} -> {meta.meta_step_final:g}, seed {meta.seed}"),
        ("inner loop", inner_loop(config, meta.inner_iters, meta.inner_batch)),
        ("evaluation", f"{config.eval.shots} shots, "
                       + inner_loop(config, config.eval.eval_iters, config.eval.eval_batch)),
    ]


def describe(source: checkpoints.Source) -> List[Tuple[str, str]]:
    """[(key, value)] describing ``source``."""
    from metaseg import checkpoints
    lines = (_metaseg_lines if source.kind.is_metaseg else _preset_lines
             if source.kind is checkpoints.Kind.PRESET else _tf1_lines)(source)
    lr, steps = checkpoints.uho_values(source.raw)
    if lr is None and steps is None:
        uho = "none stored (metaseg adapt uses the evaluation steps and learning rate)"
    else:
        uho = (f"learning rate {'-' if lr is None else format(lr, 'g')}, "
               f"steps {'-' if steps is None else steps} (metaseg adapt's defaults)")
    return lines + [("UHO", uho)]


def run(args: argparse.Namespace) -> int:
    from metaseg import checkpoints
    source = checkpoints.open_checkpoint(args.checkpoint, "CHECKPOINT")
    rows = describe(source)
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    return 0
