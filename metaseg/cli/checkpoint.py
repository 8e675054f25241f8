"""Opening the checkpoints ``metaseg`` accepts, and saving adapted models.

Four kinds of folder are accepted wherever a checkpoint is asked for:

* a metaseg checkpoint (what meta-training, ``--save_fine_tuned_checkpoints`` or
  ``metaseg adapt`` wrote): ``model.ckpt-*`` plus ``config.json``, which rebuilds the model;
* the output folder of ``metaseg adapt`` (its ``model/`` subfolder is used);
* a preset (``metaseg.presets``): a folder of ``config.json``, ``model.weights.h5`` and
  ``metadata.json``, or the name of one shipped with metaseg (``metaseg preset list``);
* an authors' TF1 checkpoint folder (no ``config.json``): the architecture is read from the
  variable names (backbone, ``--rsd`` blocks, ASPP, skip decoder) and everything else is the
  published evaluation setting of REFERENCE.md section 10 (224 px, SGD at 0.0005, 59 steps,
  batches of 8, ``bce_dice`` with L2, augmentation at rate 0.5, final-layer dropout 0.5).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional, Tuple

import keras
import tensorflow as tf
from absl import logging

from metaseg.config import DataConfig, EvalConfig, InnerConfig, MetaConfig, ModelConfig, \
    RunConfig
from metaseg import presets
from metaseg.errors import CheckpointError
from metaseg.meta import checkpoints
from metaseg.models import is_tf1_checkpoint, load_tf1_checkpoint
from metaseg.models.tf1_checkpoint import read_checkpoint_shapes, resolve_checkpoint_prefix

ADAPTED_SUBDIR = "model"  # where ``metaseg adapt`` puts the adapted model in --output
ADAPTATION_FILE = "adaptation.json"  # how an adapted model was made, beside config.json
# Where UHO's chosen values are looked up in config.json: these keys at the top level, then
# inside the "uho" section. Absent keys fall back to eval.eval_iters / inner.learning_rate.
UHO_LEARNING_RATE, UHO_STEPS = "uho_learning_rate", "uho_steps"
METASEG, TF1, PRESET = "metaseg", "tf1", "preset"


@dataclasses.dataclass(frozen=True)
class Source:
    """A checkpoint folder and what is known about it."""

    directory: str       # the folder (or TF1 prefix) the weights are read from
    kind: str            # METASEG, TF1 or PRESET
    config: RunConfig    # rebuilds the model; for TF1, the published setting
    raw: dict            # config.json as stored ({} for TF1)
    adaptation: Optional[dict] = None  # adaptation.json of a model ``metaseg adapt`` wrote
    preset: Optional[presets.Preset] = None  # for PRESET: its files, read and checked


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


def tf1_model_config(path: str) -> ModelConfig:
    """The EfficientLab a TF1 checkpoint holds, from its variable names."""
    names = list(read_checkpoint_shapes(resolve_checkpoint_prefix(path)))
    backbones = sorted({n.split("/", 1)[0] for n in names if n.startswith("efficientnet-")})
    if len(backbones) != 1:
        raise CheckpointError(f"TF1 checkpoint {path} holds {len(backbones)} EfficientNet "
                              f"backbones ({backbones}); expected exactly one")
    rsd = tuple(r for r in (1, 2, 3, 4)
                if any(n.startswith(f"decode/decode_skip_connections_{r - 1}/") for n in names))
    return ModelConfig(
        feature_extractor_name=backbones[0], rsd=rsd or None, final_layer_dropout_rate=0.5,
        spatial_pyramid_pooling=any(n.startswith("decode/spatial_pyramid_pooling/")
                                    for n in names),
        skip_decoding=any(n.startswith("decode/decode_skip_connections/") for n in names))


def config_from_dict(raw: dict, where: str) -> RunConfig:
    """A RunConfig from a stored config.json (``checkpoints.run_config_from_dict``)."""
    return checkpoints.run_config_from_dict(raw, where)


def open_checkpoint(path: str, flag: str) -> Source:
    """Identify ``path`` (see the module docstring); CheckpointError for anything else."""
    presets.refuse_handle(path)  # kaggle:// and hf:// handles: one line, nothing downloaded
    if not os.path.exists(path) and not tf.io.gfile.exists(path + ".index"):
        preset = presets.find(path)  # the name of a shipped preset
        if preset is not None:
            return _preset_source(preset)
        names = ", ".join(presets.shipped()) or "none"
        raise CheckpointError(f"{flag} {path} does not exist (nor is it a shipped preset: "
                              f"{names})")
    inner = os.path.join(path, ADAPTED_SUBDIR)
    if not checkpoints.is_metaseg_checkpoint(path) and checkpoints.is_metaseg_checkpoint(inner):
        path = inner
    if checkpoints.is_metaseg_checkpoint(path):
        raw = checkpoints.read_config(path)
        if raw is None:
            raise CheckpointError(f"{flag} {path}: metaseg checkpoint without "
                                  f"{checkpoints.CONFIG_FILE}, which says which model the "
                                  "weights belong to; copy it from the run that wrote them")
        adaptation = _read_json(os.path.join(path, ADAPTATION_FILE))
        return Source(path, METASEG, config_from_dict(raw, path), raw, adaptation)
    if is_tf1_checkpoint(path):
        return Source(path, TF1, published_config(tf1_model_config(path)), {})
    preset = presets.find(path)
    if preset is not None:
        return _preset_source(preset)
    raise CheckpointError(
        f"{flag} {path} is not a checkpoint metaseg knows: expected a folder meta-training "
        "wrote (model.ckpt-* and config.json), the --output folder of metaseg adapt, a "
        "preset (config.json, model.weights.h5, metadata.json), or an authors' TF1 "
        "checkpoint folder")


def _preset_source(preset: presets.Preset) -> Source:
    where = os.path.join(preset.directory, presets.CONFIG_FILE)
    return Source(preset.directory, PRESET, config_from_dict(preset.config, where),
                  preset.config, preset=preset)


def iteration_of(source: Source) -> Optional[int]:
    """The meta-iteration (or adaptation step) the weights were saved at; None for TF1."""
    if source.kind == PRESET:
        return source.preset.metadata.get("training", {}).get("meta_iterations")
    if source.kind != METASEG:
        return None
    reader = tf.train.load_checkpoint(checkpoints.latest(source.directory))
    return int(reader.get_tensor(checkpoints.ITERATION_KEY))


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def uho_values(raw: dict) -> Tuple[Optional[float], Optional[int]]:
    """(learning rate, steps) UHO stored in config.json, each None if absent."""
    places = [raw, raw.get("uho") if isinstance(raw.get("uho"), dict) else {}]
    lr = next((p[UHO_LEARNING_RATE] for p in places if p.get(UHO_LEARNING_RATE) is not None),
              None)
    steps = next((p[UHO_STEPS] for p in places if p.get(UHO_STEPS) is not None), None)
    return (None if lr is None else float(lr)), (None if steps is None else int(steps))


def build_and_restore(source: Source, image_size: Optional[int] = None) -> keras.Model:
    """The model of ``source.config`` with the checkpoint's weights (all of them), built for
    ``image_size`` (default: the checkpoint's; it matters to models built for one size)."""
    from metaseg import pipeline  # pylint: disable=import-outside-toplevel
    # The checkpoint supplies every weight: never download or read backbone weights.
    model_config = dataclasses.replace(source.config.model, backbone_weights=None,
                                       restore_efficient_net_weights_from=None)
    data = dataclasses.replace(source.config.data,
                               image_size=image_size or source.config.data.image_size)
    model = pipeline.build(dataclasses.replace(source.config, model=model_config, data=data))
    if source.kind == METASEG:
        checkpoints.restore_weights(model, source.directory)
    elif source.kind == PRESET:
        presets.load_weights(model, source.preset)
    else:
        load_tf1_checkpoint(model, source.directory)
    logging.info("Restored %s checkpoint %s", source.kind, source.directory)
    return model


def save_adapted(model: keras.Model, opt_state, directory: str, config: dict,
                 record: dict) -> str:
    """Write ``model``'s current weights (and the inner optimiser state) in metaseg's layout,
    with ``config.json`` (``config``, JSON-able) and ``adaptation.json`` (``record``);
    returns the checkpoint path."""
    state = checkpoints.MetaState(model, opt_state)
    state.assign_opt_state(opt_state)
    state.iteration.assign(int(record.get("steps", 0)))
    manager = tf.train.CheckpointManager(state.checkpoint, directory, max_to_keep=1,
                                         checkpoint_name=checkpoints.CHECKPOINT_NAME)
    path = manager.save(checkpoint_number=int(record.get("steps", 0)))
    checkpoints.write_config(directory, config)
    with open(os.path.join(directory, ADAPTATION_FILE), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return path
