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
    from metaseg.cli import checkpoint

# pylint: disable=import-outside-toplevel,redefined-outer-name

HELP = "describe a checkpoint: architecture, image size, training, stored UHO values"


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("info", parents=parents, help=HELP, description=HELP)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="metaseg checkpoint folder, metaseg adapt output, TF1 checkpoint, "
                        "or preset (folder or shipped name)")
    p.set_defaults(run=run)


def architecture(config: RunConfig) -> str:
    m = config.model
    parts = [f"{m.model_name} with {m.feature_extractor_name} backbone",
             "--rsd " + " ".join(str(r) for r in m.rsd) if m.rsd else "no RSD blocks"]
    if m.spatial_pyramid_pooling:
        parts.append("ASPP")
    if m.skip_decoding:
        parts.append("skip decoder")
    if not m.rsd_residual:
        parts.append("RSD residuals disabled")
    parts.append(f"final-layer dropout {m.final_layer_dropout_rate:g}")
    return ", ".join(parts)


def inner_loop(config: RunConfig, steps: int, batch: int) -> str:
    i = config.inner
    optimiser = "SGD" if i.sgd else "Adam"
    extras = [name for name, on in (("L2", i.l2), ("L1", i.l1), ("DARC1", i.darc1),
                                    ("augmentation", i.augment)) if on]
    return (f"{steps} steps of batch {batch}, {optimiser} at {i.learning_rate:g} "
            f"({i.learning_rate_scheduler} schedule), loss {i.loss_name}"
            + (f" + {', '.join(extras)}" if extras else ""))


def _metaseg_lines(source: checkpoint.Source) -> List[Tuple[str, str]]:
    from metaseg import checkpoint_reader
    from metaseg.meta import checkpoints
    prefix = checkpoints.latest(source.directory)
    values = checkpoint_reader.read_tensors(prefix)  # every value: a truncated file is named
    iteration = int(values[checkpoints.ITERATION_KEY])
    shapes = {name: np.shape(value) for name, value in values.items()}
    weights = sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith("trainable/"))
    config, meta = source.config, source.config.meta
    if source.adaptation is not None:
        a = source.adaptation
        what = (f"adapted model (metaseg adapt) from {a.get('initialisation')} "
                f"({a.get('kind')}) on {len(a.get('support', []))} support images: "
                f"{a.get('steps')} steps at learning rate {a.get('learning_rate'):g}")
    elif any(n.startswith("optimizer/") for n in shapes):
        what = f"meta-trained initialisation, meta-iteration {iteration} of {meta.meta_iters}"
    else:
        what = f"fine-tuned model written by evaluation ({iteration} steps)"
    tail = f", FOMAML tail {meta.foml_tail}" if meta.foml_tail else ""
    return [
        ("checkpoint", f"{prefix} (metaseg)"),
        ("what", what),
        ("architecture", f"{architecture(config)}; {weights:,} trainable weights"),
        ("image size", f"{config.data.image_size} px"),
        ("meta-training", f"{meta.algorithm}{tail}, meta-batch {meta.meta_batch}, "
                          f"{meta.train_shots} train shots, meta step {meta.meta_step:g} -> "
                          f"{meta.meta_step_final:g}, seed {meta.seed}"),
        ("inner loop", inner_loop(config, meta.inner_iters, meta.inner_batch)),
        ("evaluation", f"{config.eval.shots} shots, "
                       + inner_loop(config, config.eval.eval_iters, config.eval.eval_batch)),
    ]


def _tf1_lines(source: checkpoint.Source) -> List[Tuple[str, str]]:
    from metaseg import checkpoint_reader
    from metaseg.models.tf1_checkpoint import read_checkpoint_shapes, resolve_checkpoint_prefix
    prefix = resolve_checkpoint_prefix(source.directory)
    values = checkpoint_reader.read_tensors(prefix)
    step = (f", global step {int(values['global_step'])}" if "global_step" in values else "")
    weights = sum(int(np.prod(s)) for s in read_checkpoint_shapes(prefix).values())
    config = source.config
    return [
        ("checkpoint", f"{prefix} (authors' TF1 code)"),
        ("what", f"TF1 checkpoint{step}; its settings are not stored, metaseg assumes the "
                 "published FSS-1000 evaluation (the original ml4ai/mliis run.sh)"),
        ("architecture", f"{architecture(config)} (read from the variable names; dropout as "
                         f"published); {weights:,} stored values incl. batch-norm statistics"),
        ("image size", f"{config.data.image_size} px (published)"),
        ("evaluation", f"{config.eval.shots} shots, "
                       + inner_loop(config, config.eval.eval_iters, config.eval.eval_batch)),
    ]


def _preset_lines(source: checkpoint.Source) -> List[Tuple[str, str]]:
    from metaseg import presets
    m, config, meta = source.preset.metadata, source.config, source.config.meta
    weights = m.get("weights", {})
    return [
        ("checkpoint", f"{source.directory} (metaseg preset {source.preset.name}, format "
                       f"{m.get('format_version')}, metaseg {m.get('metaseg_version')})"),
        ("what", m.get("description") or "preset"),
        ("trained on", m.get("trained_on", "not recorded")),
        ("architecture", f"{architecture(config)}; {weights.get('count', 0):,} weights in "
                         f"{presets.WEIGHTS_FILE} ({weights.get('stored_as', '')})"),
        ("image size", f"{config.data.image_size} px"),
        ("meta-training", f"{m.get('training', {}).get('how', '-')}, meta-batch "
                          f"{meta.meta_batch}, {meta.train_shots} train shots, meta step "
                          f"{meta.meta_step:g} -> {meta.meta_step_final:g}, seed {meta.seed}"),
        ("inner loop", inner_loop(config, meta.inner_iters, meta.inner_batch)),
        ("evaluation", f"{config.eval.shots} shots, "
                       + inner_loop(config, config.eval.eval_iters, config.eval.eval_batch)),
    ]


def describe(source: checkpoint.Source) -> List[Tuple[str, str]]:
    """[(key, value)] describing ``source``."""
    from metaseg.cli import checkpoint
    lines = {checkpoint.METASEG: _metaseg_lines, checkpoint.PRESET: _preset_lines}.get(
        source.kind, _tf1_lines)(source)
    lr, steps = checkpoint.uho_values(source.raw)
    if lr is None and steps is None:
        uho = "none stored (metaseg adapt uses the evaluation steps and learning rate)"
    else:
        uho = (f"learning rate {'-' if lr is None else format(lr, 'g')}, "
               f"steps {'-' if steps is None else steps} (metaseg adapt's defaults)")
    return lines + [("UHO", uho)]


def run(args: argparse.Namespace) -> int:
    from metaseg.cli import checkpoint
    source = checkpoint.open_checkpoint(args.checkpoint, "CHECKPOINT")
    rows = describe(source)
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    return 0
