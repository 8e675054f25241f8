"""Opening any checkpoint metaseg accepts, loading it into a model, and saving adapted models.

Wherever a checkpoint is asked for, ``detect`` decides what the path is and this module
turns it into a model:

* a metaseg checkpoint (what meta-training, ``--save_fine_tuned_checkpoints``, joint training
  or ``metaseg adapt`` wrote): ``model.ckpt-*`` plus ``config.json``, which rebuilds the model;
* the output folder of ``metaseg adapt`` (its ``model/`` subfolder is used);
* a preset (``preset_files``): a folder of ``config.json``, ``model.weights.h5`` and
  ``metadata.json``, or the name of one shipped with metaseg (``metaseg preset list``);
* an authors' TF1 checkpoint folder (no ``config.json``): the architecture is read from the
  variable names (backbone, ``--rsd`` blocks, ASPP, skip decoder) and everything else is the
  published evaluation setting of REFERENCE.md section 10 (224 px, SGD at 0.0005, 59 steps,
  batches of 8, ``bce_dice`` with L2, augmentation at rate 0.5, final-layer dropout 0.5).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import keras
from absl import logging

from metaseg.checkpoints import preset_files
from metaseg.checkpoints.config_file import (read_adaptation, read_config,
                                             run_config_from_dict)
from metaseg.checkpoints.detect import Found, Kind, detect
from metaseg.checkpoints.layout import ADAPTATION_FILE, CONFIG_FILE
from metaseg.checkpoints.state import MetaState, read_iteration, restore_weights
from metaseg.checkpoints.writer import Saver
from metaseg.config import DataConfig, EvalConfig, InnerConfig, MetaConfig, ModelConfig, \
    RunConfig
from metaseg.errors import CheckpointError
from metaseg.models import build_model, load_tf1_checkpoint
from metaseg.models.tf1_checkpoint import read_checkpoint_shapes


@dataclasses.dataclass(frozen=True)
class Source:
    """A checkpoint and what is known about it."""

    found: Found
    config: RunConfig    # rebuilds the model; for TF1, the published setting
    raw: dict            # config.json as stored ({} for TF1)
    adaptation: Optional[dict] = None  # adaptation.json of a model ``metaseg adapt`` wrote

    @property
    def kind(self) -> Kind:
        return self.found.kind

    @property
    def directory(self) -> str:
        """The folder (or TF1 path) the weights are read from."""
        return self.found.directory

    @property
    def preset(self) -> Optional[preset_files.Preset]:
        return self.found.preset


def published_config(model: ModelConfig) -> RunConfig:
    """REFERENCE.md section 10: the settings of the authors' FSS-1000 evaluation (run.sh)."""
    return RunConfig(
        data=DataConfig(image_size=224, fss_1000=True), model=model,
        inner=InnerConfig(learning_rate=0.0005, sgd=True, loss_name="bce_dice", l2=True,
                          augment=True, aug_rate=0.5),
        meta=MetaConfig(algorithm="fomaml", foml_tail=5, train_shots=10, inner_iters=59,
                        inner_batch=8, meta_batch=5, meta_step=0.1, meta_step_final=1e-5,
                        meta_iters=50000, eval_interval=500),
        eval=EvalConfig(shots=5, eval_batch=8, eval_iters=59, eval_samples=2,
                        transductive=True, serially_eval_all_test_tasks=True))


def tf1_model_config(found: Found) -> ModelConfig:
    """The EfficientLab a TF1 checkpoint holds, from its variable names."""
    names = list(read_checkpoint_shapes(found.prefix))
    backbones = sorted({n.split("/", 1)[0] for n in names if n.startswith("efficientnet-")})
    if len(backbones) != 1:
        raise CheckpointError(f"TF1 checkpoint {found.path} holds {len(backbones)} EfficientNet "
                              f"backbones ({backbones}); expected exactly one")
    rsd = tuple(r for r in (1, 2, 3, 4)
                if any(n.startswith(f"decode/decode_skip_connections_{r - 1}/") for n in names))
    return ModelConfig(
        feature_extractor_name=backbones[0], rsd=rsd or None, final_layer_dropout_rate=0.5,
        spatial_pyramid_pooling=any(n.startswith("decode/spatial_pyramid_pooling/")
                                    for n in names),
        skip_decoding=any(n.startswith("decode/decode_skip_connections/") for n in names))


def open_checkpoint(path: str, flag: str) -> Source:
    """``detect`` ``path`` and read what rebuilds its model; CheckpointError (one line naming
    ``flag``) for anything that is not a checkpoint metaseg knows."""
    found = detect(path)
    if found.kind.is_metaseg:
        raw = read_config(found.directory)
        if raw is None:
            raise CheckpointError(f"{flag} {found.directory}: metaseg checkpoint without "
                                  f"{CONFIG_FILE}, which says which model the weights "
                                  "belong to; copy it from the run that wrote them")
        config = run_config_from_dict(raw, os.path.join(found.directory, CONFIG_FILE))
        adaptation = read_adaptation(found.directory) if found.kind is Kind.ADAPTED else None
        return Source(found, config, raw, adaptation)
    if found.kind is Kind.TF1:
        return Source(found, published_config(tf1_model_config(found)), {})
    if found.kind is Kind.PRESET:
        where = os.path.join(found.directory, CONFIG_FILE)
        return Source(found, run_config_from_dict(found.preset.config, where),
                      found.preset.config)
    if not os.path.exists(path):
        names = ", ".join(preset_files.shipped()) or "none"
        raise CheckpointError(f"{flag} {path} does not exist (nor is it a shipped preset: "
                              f"{names})")
    raise CheckpointError(
        f"{flag} {path} is not a checkpoint metaseg knows: expected a folder meta-training "
        "wrote (model.ckpt-* and config.json), the --output folder of metaseg adapt, a "
        "preset (config.json, model.weights.h5, metadata.json), or an authors' TF1 "
        "checkpoint folder")


def iteration_of(source: Source) -> Optional[int]:
    """The meta-iteration (or adaptation step) the weights were saved at; None for TF1."""
    if source.kind is Kind.PRESET:
        return source.preset.metadata.get("training", {}).get("meta_iterations")
    if not source.kind.is_metaseg:
        return None
    return read_iteration(source.found.prefix)


def load_into(model: keras.Model, found: Found, *, skip_final_layer: bool = False) -> None:
    """Load the weights ``detect`` found into ``model`` (built for them), whatever their
    kind. ``skip_final_layer`` keeps the model's final layer
    (``--do_not_restore_final_layer_weights``)."""
    if found.kind.is_metaseg:
        iteration = restore_weights(model, found.prefix, skip_final_layer=skip_final_layer)
        logging.info("Restored metaseg checkpoint %s (meta-iteration %d)", found.prefix,
                     iteration)
    elif found.kind is Kind.TF1:
        load_tf1_checkpoint(model, found.path, skip_final_layer=skip_final_layer)
        logging.info("Restored TF1 checkpoint %s", found.path)
    elif found.kind is Kind.PRESET:
        preset_files.load_weights(model, found.preset, skip_final_layer=skip_final_layer)
        logging.info("Restored preset %s (%s)", found.preset.name, found.directory)
    else:
        raise CheckpointError(f"{found.path} holds no checkpoint metaseg knows")


def build_and_restore(source: Source, image_size: Optional[int] = None) -> keras.Model:
    """The model of ``source.config`` with the checkpoint's weights (all of them), built for
    ``image_size`` (default: the checkpoint's; it matters to models built for one size)."""
    # The checkpoint supplies every weight: never download or read backbone weights.
    model_config = dataclasses.replace(source.config.model, backbone_weights=None,
                                       restore_efficient_net_weights_from=None)
    keras.utils.set_random_seed(source.config.seed)  # as pipeline.build: one seed, one model
    model = build_model(model_config, image_size=image_size or source.config.data.image_size)
    load_into(model, source.found)
    return model


def save_adapted(model: keras.Model, opt_state, directory: str, config: dict,
                 record: dict) -> str:
    """Write ``model``'s current weights (and the inner optimiser state) in metaseg's layout,
    with ``config.json`` (``config``, JSON-able) and ``adaptation.json`` (``record``);
    returns the checkpoint path."""
    state = MetaState(model, opt_state)
    state.assign_opt_state(opt_state)
    steps = int(record.get("steps", 0))
    state.iteration.assign(steps)
    saved = Saver(state.checkpoint, directory, keep=1).save(
        steps, beside={CONFIG_FILE: config, ADAPTATION_FILE: record})
    return saved.prefix


def architecture(config: RunConfig) -> str:
    """The model of ``config`` in words (``metaseg info``, a preset's metadata.json)."""
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
