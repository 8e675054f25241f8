"""Typed, frozen configuration: the only place defaults live.

``flags/`` turns command-line flags into these objects at the edge; library code takes
them (or explicit arguments) and never reads ``absl.flags.FLAGS``. Defaults are the
original's (``spec/FLAGS.md``). Each ``__post_init__`` validates its own fields and
raises ``ConfigError`` (a ``ValueError``) naming the flag to change, so a user mistake ends in one line.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Tuple

from metaseg.errors import ConfigError

BACKBONES = ("efficientnet-b0", "efficientnet-b3")
SCHEDULES = ("fixed", "constant", "cosine_anneal", "step", "step_decay")
ALGORITHMS = ("reptile", "fomaml")
QUERY_SIZE = 5  # REFERENCE.md section 3: the query set is always 5 images.


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(value, flag: str) -> None:
    _require(value > 0, f"{flag} must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the shards are and how tasks are split (REFERENCE.md sections 1-2)."""

    data_dir: Optional[str] = None
    dataset: str = "shards"  # "shards" or "synthetic" (the embedded benchmark)
    image_size: int = 320
    test_tasks_file: Optional[str] = None
    val_tasks_file: Optional[str] = None
    num_val_tasks: int = 0
    fp_k_test_set: bool = False
    fss_1000: bool = False
    drop_small_tasks: bool = False

    def __post_init__(self):
        _require(self.dataset in ("shards", "synthetic"),
                 f"--dataset must be 'shards' or 'synthetic', got {self.dataset!r}")
        _positive(self.image_size, "--image_size")
        _require(self.image_size % 16 == 0,
                 f"--image_size must be a multiple of 16, got {self.image_size}")
        _require(self.num_val_tasks >= 0,
                 f"--num_val_tasks must be >= 0, got {self.num_val_tasks}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network (spec/EFFICIENTLAB.md)."""

    model_name: str = "efficientlab"
    feature_extractor_name: str = "efficientnet-b0"
    rsd: Optional[Tuple[int, ...]] = None
    spatial_pyramid_pooling: bool = False
    skip_decoding: bool = False
    final_layer_dropout_rate: float = 0.0
    rsd_residual: bool = True
    backbone_weights: Optional[str] = None  # None or "imagenet"
    restore_efficient_net_weights_from: Optional[str] = None

    def __post_init__(self):
        _require(self.feature_extractor_name in BACKBONES,
                 f"--feature_extractor_name must be one of {BACKBONES}, "
                 f"got {self.feature_extractor_name!r}")
        _require(0.0 <= self.final_layer_dropout_rate < 1.0,
                 "--final_layer_dropout_rate must be in [0, 1), got "
                 f"{self.final_layer_dropout_rate}")
        if self.rsd is not None:
            object.__setattr__(self, "rsd", tuple(int(r) for r in self.rsd))
            _require(all(r in (1, 2, 3, 4) for r in self.rsd),
                     f"--rsd entries must be reductions 1-4, got {list(self.rsd)}")
        _require(self.backbone_weights in (None, "imagenet"),
                 f"--backbone_weights must be 'imagenet' or unset, got {self.backbone_weights!r}")


@dataclasses.dataclass(frozen=True)
class InnerConfig:
    """One adaptation: optimiser, schedule, loss, regularisers, augmentation (sections 3-5)."""

    learning_rate: float = 0.001
    sgd: bool = False
    learning_rate_scheduler: str = "fixed"
    step_decay_rate: float = 0.5
    decay_after_n_steps: int = 5
    weight_decay: float = 1.0
    loss_name: str = "cross_entropy"
    label_smoothing: float = 0.0
    l2: bool = False
    l1: bool = False
    darc1: bool = False
    augment: bool = False
    aug_rate: float = 0.5
    replacement: bool = False
    jit_compile: bool = False

    def __post_init__(self):
        _positive(self.learning_rate, "--learning-rate")
        _require(self.learning_rate_scheduler in SCHEDULES,
                 f"--learning_rate_scheduler must be one of {SCHEDULES}, "
                 f"got {self.learning_rate_scheduler!r}")
        _positive(self.decay_after_n_steps, "--decay_after_n_steps")
        _positive(self.weight_decay, "--weight-decay")
        _require(0.0 <= self.label_smoothing < 1.0,
                 f"--label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _require(0.0 <= self.aug_rate <= 1.0, f"--aug_rate must be in [0, 1], got {self.aug_rate}")

    @property
    def optimizer(self) -> str:
        return "sgd" if self.sgd else "adam"


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """Meta-training: Reptile or FOMAML outer loop (section 6)."""

    algorithm: str = "reptile"
    meta_iters: int = 400000
    meta_batch: int = 5
    meta_step: float = 0.1
    meta_step_final: float = 0.1
    train_shots: int = 5
    inner_batch: int = 8
    inner_iters: int = 8
    foml_tail: Optional[int] = None
    sample_foml_train_val_with_replacement: bool = False
    eval_interval: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    # The original carried batch-norm statistics and optimiser slots from task to task
    # during meta-training (REFERENCE.md section 11); True resets them per task.
    reset_state_per_task: bool = False
    seed: int = 0

    def __post_init__(self):
        _require(self.algorithm in ALGORITHMS,
                 f"meta algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        for value, flag in ((self.meta_iters, "--meta-iters"), (self.meta_batch, "--meta-batch"),
                            (self.train_shots, "--train-shots"), (self.inner_batch, "--inner-batch"),
                            (self.inner_iters, "--inner-iters"),
                            (self.eval_interval, "--eval-interval"),
                            (self.checkpoint_every, "checkpoint_every"),
                            (self.keep_checkpoints, "keep_checkpoints")):
            _positive(value, flag)
        _require(self.meta_step >= 0, f"--meta-step must be >= 0, got {self.meta_step}")
        _require(self.meta_step_final >= 0,
                 f"--meta-step-final must be >= 0, got {self.meta_step_final}")
        if self.foml_tail is not None:
            _require(self.algorithm == "fomaml", "--foml-tail needs --foml")
            _positive(self.foml_tail, "--foml-tail")
            _require(self.foml_tail < self.train_shots,
                     f"--foml-tail ({self.foml_tail}) must be smaller than --train-shots "
                     f"({self.train_shots}): the tail is held out of the training shots")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluating an initialisation (section 7)."""

    shots: int = 5
    eval_batch: int = 8
    eval_iters: int = 4
    eval_samples: int = 200
    transductive: bool = False
    serially_eval_all_test_tasks: bool = False
    eval_val_tasks: bool = False
    save_fine_tuned_checkpoints: bool = False
    save_fine_tuned_checkpoints_train: bool = False
    save_fine_tuned_checkpoints_dir: str = "/tmp/checkpoints/fine-tuned"
    save_predictions_dir: Optional[str] = None
    seed: int = 0

    def __post_init__(self):
        for value, flag in ((self.shots, "--shots"), (self.eval_batch, "--eval-batch"),
                            (self.eval_samples, "--eval-samples")):
            _positive(value, flag)
        _require(self.eval_iters >= 0, f"--eval-iters must be >= 0, got {self.eval_iters}")

    @property
    def query_size(self) -> int:
        return QUERY_SIZE


def to_json(config) -> str:
    """Serialise any (nested) config dataclass to stable, human-readable JSON."""
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)
