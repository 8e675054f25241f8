"""Typed, frozen configuration: the only place defaults live.

``metaseg.flags`` turns command-line flags into these objects at the edge; library code takes
them (or explicit arguments) and never reads ``absl.flags.FLAGS``. Defaults are the
original's (``spec/FLAGS.md``). Each ``__post_init__`` validates its own fields and
raises ``ConfigError`` (a ``ValueError``) naming the flag to change, so a user mistake ends in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional, Tuple

from absl import logging

from metaseg.errors import ConfigError
from metaseg.specs import EpisodeSpec

BACKBONES = ("efficientnet-b0", "efficientnet-b3")
SCHEDULES = ("fixed", "constant", "cosine_anneal", "step", "step_decay")
ALGORITHMS = ("reptile", "fomaml")
# MetaConfig.carry_over: how batch-norm statistics and optimiser slots pass between the
# tasks of meta-training (metaseg/meta/carry_over.py).
CARRY_OVER_POLICIES = ("sequential", "reset", "mean")
# ModelConfig.mixed_precision; bf16 = Keras's "mixed_bfloat16" policy. Not a command-line
# flag: on the measured CPU it lost 8.9 IoU points and was slower (README, Mixed precision).
PRECISIONS = ("fp32", "bf16")
QUERY_SIZE = 5  # REFERENCE.md section 3: the query set is always 5 images.


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(value, flag: str) -> None:
    _require(value > 0, f"{flag} must be positive, got {value}")


# Float settings whose flag is spelt with dashes; every other one is --<field name>.
_DASHED_FLAGS = {"learning_rate": "--learning-rate", "weight_decay": "--weight-decay",
                 "meta_step": "--meta-step", "meta_step_final": "--meta-step-final"}


def _finite_floats(config) -> None:
    """No float setting may be nan or inf (``--learning-rate inf`` passes "positive")."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            flag = _DASHED_FLAGS.get(field.name, f"--{field.name}")
            raise ConfigError(f"{flag} must be a finite number, got {value}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the shards are and how tasks are split (REFERENCE.md sections 1-2)."""

    data_dir: Optional[str] = None
    # "shards", "synthetic" (the embedded benchmark) or "tfds:NAME[/CONFIG]" (a prepared
    # TensorFlow Datasets dataset, read from tfds_data_dir; None: tfds's default directory)
    dataset: str = "shards"
    image_size: int = 320
    test_tasks_file: Optional[str] = None
    val_tasks_file: Optional[str] = None
    num_val_tasks: int = 0
    fp_k_test_set: bool = False
    fss_1000: bool = False
    drop_small_tasks: bool = False
    train_list: Optional[str] = None  # image-list file restricting the training tasks' images
    tfds_data_dir: Optional[str] = None

    def __post_init__(self):
        _require(self.dataset in ("shards", "synthetic") or bool(self.tfds_name),
                 "--dataset must be 'shards', 'synthetic' or 'tfds:NAME[/CONFIG]', "
                 f"got {self.dataset!r}")
        if self.tfds_name:
            _require(not self.data_dir, f"--data-dir and --dataset {self.dataset} both name "
                                        "the data; pass one of them")
            for wanted, flag in ((self.train_list, "--train_list"),
                                 (self.fp_k_test_set, "--fp_k_test_set")):
                _require(not wanted, f"{flag} needs shards (--data-dir); a tfds dataset "
                                     "stores no image keys or FP-k shard names")
        _require(self.tfds_data_dir is None or bool(self.tfds_name),
                 "--tfds_data_dir is where a --dataset tfds:NAME is read from; pass "
                 "--dataset tfds:NAME too, or drop it")
        _positive(self.image_size, "--image_size")
        _require(self.image_size % 16 == 0,
                 f"--image_size must be a multiple of 16, got {self.image_size}")
        _require(self.num_val_tasks >= 0,
                 f"--num_val_tasks must be >= 0, got {self.num_val_tasks}")

    @property
    def tfds_name(self) -> Optional[str]:
        """``NAME[/CONFIG]`` of ``--dataset tfds:NAME[/CONFIG]``, else None."""
        prefix = "tfds:"
        if self.dataset.startswith(prefix) and self.dataset[len(prefix):].strip("/"):
            return self.dataset[len(prefix):]
        return None


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
    # "bf16": compute in bfloat16, variables, batch norm and logits in float32.
    mixed_precision: str = "fp32"

    def __post_init__(self):
        _finite_floats(self)
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
        _require(self.mixed_precision in PRECISIONS,
                 f"ModelConfig.mixed_precision must be one of {', '.join(PRECISIONS)}, "
                 f"got {self.mixed_precision!r}")


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
        _finite_floats(self)
        _positive(self.learning_rate, "--learning-rate")
        _require(self.learning_rate_scheduler in SCHEDULES,
                 f"--learning_rate_scheduler must be one of {SCHEDULES}, "
                 f"got {self.learning_rate_scheduler!r}")
        _positive(self.decay_after_n_steps, "--decay_after_n_steps")
        _positive(self.step_decay_rate, "--step_decay_rate")
        # The original picked BCE + dice for any name containing "dice", else cross-entropy.
        _require(self.loss_name == "cross_entropy" or "dice" in self.loss_name,
                 f"--loss_name must be 'cross_entropy' or contain 'dice' (e.g. 'bce_dice'), "
                 f"got {self.loss_name!r}")
        _positive(self.weight_decay, "--weight-decay")
        _require(0.0 <= self.label_smoothing < 1.0,
                 f"--label_smoothing must be in [0, 1), got {self.label_smoothing}")
        # aug_rate is checked with the batches it draws (metaseg.specs.BatchSpec, by RunConfig)

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
    # during meta-training (REFERENCE.md section 11); True resets them per task, the same
    # as carry_over="reset".
    reset_state_per_task: bool = False
    seed: int = 0
    # One of CARRY_OVER_POLICIES; None: "reset" with reset_state_per_task, else "sequential"
    # on one device and "mean" under a tf.distribute strategy (the tasks run in parallel).
    carry_over: Optional[str] = None

    def __post_init__(self):
        _finite_floats(self)
        _require(self.algorithm in ALGORITHMS,
                 f"meta algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        for value, flag in ((self.meta_iters, "--meta-iters"), (self.meta_batch, "--meta-batch"),
                            (self.inner_iters, "--inner-iters"),
                            (self.eval_interval, "--eval-interval"),
                            (self.checkpoint_every, "--checkpoint_every"),
                            (self.keep_checkpoints, "--keep_checkpoints")):
            _positive(value, flag)
        _require(self.meta_step >= 0, f"--meta-step must be >= 0, got {self.meta_step}")
        _require(self.meta_step_final >= 0,
                 f"--meta-step-final must be >= 0, got {self.meta_step_final}")
        _require(self.carry_over in (None,) + CARRY_OVER_POLICIES,
                 f"--carry_over must be one of {', '.join(CARRY_OVER_POLICIES)}, "
                 f"got {self.carry_over!r}")
        _require(not self.reset_state_per_task or self.carry_over in (None, "reset"),
                 f"--reset_state_per_task means --carry_over reset, which contradicts "
                 f"--carry_over {self.carry_over}; pass only one of them")
        if self.foml_tail is not None:
            _require(self.algorithm == "fomaml", "--foml-tail needs --foml")
        EpisodeSpec.training(self)  # shots, batch size and tail (FieldError naming the field)


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
    eval_train_tasks: bool = True
    compare_random_init: bool = False
    seed: int = 0
    # Tasks adapted at once by Python threads (metaseg.evaluation.evaluate); 1 = one by one,
    # 0 = by the machine's cores (metaseg.threads.default_concurrent_tasks).
    concurrent_tasks: int = 0

    def __post_init__(self):
        _positive(self.eval_samples, "--eval-samples")
        _require(self.concurrent_tasks >= 0, "--concurrent_tasks must be a whole number >= 0 "
                 "(1: one task at a time, 0: by the machine's cores), got "
                 f"{self.concurrent_tasks}")
        EpisodeSpec.evaluation(self)  # shots, batch size, steps (FieldError naming the field)

    @property
    def query_size(self) -> int:
        return QUERY_SIZE


def default_cache_dir() -> str:
    """Where generated data is kept between runs: ``$METASEG_CACHE``, else ``~/.cache/metaseg``."""
    return os.environ.get("METASEG_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "metaseg")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The embedded procedural benchmark (``--dataset synthetic``), generated once into a cache."""

    num_classes: int = 1000
    examples_per_class: int = 10
    image_size: int = 224  # the stored shard size; episodes are resized to --image_size
    cache_dir: str = dataclasses.field(default_factory=default_cache_dir)

    def __post_init__(self):
        _positive(self.num_classes, "--synthetic_num_classes")
        _positive(self.examples_per_class, "--synthetic_examples_per_class")
        _positive(self.image_size, "--synthetic_image_size")
        _require(bool(self.cache_dir), "--cache_dir must not be empty")


def _ordered_range(low, high, name: str, legal, legal_text: str):
    """A UHO search range ``[low, high]``: legal values, samplable on a log scale.

    Returns ``(low, high)`` in order: a reversed range is swapped with a warning, as the
    original did.
    """
    pair = f"--{name}_search_range_low/high"
    if low > high:
        logging.warning("%s: low (%s) exceeds high (%s); swapping them", pair, low, high)
        low, high = high, low
    _require(legal(low) and legal(high), f"{pair} must be {legal_text}, got [{low}, {high}]")
    # Sampling is on a log scale, so a range that is actually searched cannot start at 0.
    _require(low == high or low > 0, f"{pair}: a searched range needs low > 0 (log scale), "
                                     f"got [{low}, {high}]")
    return low, high


@dataclasses.dataclass(frozen=True)
class UHOConfig:
    """Update-hyperparameter optimisation on the validation tasks (REFERENCE.md section 8)."""

    enabled: bool = False  # --optimize_update_hyperparms_on_val_set
    num_configs_to_sample: int = 100
    meta_fine_tune_steps_on_train_val: int = 0
    lr_search_range_low: float = 0.0005
    lr_search_range_high: float = 0.05
    drop_rate_search_range_low: float = 0.2
    drop_rate_search_range_high: float = 0.2
    aug_rate_search_range_low: float = 0.5
    aug_rate_search_range_high: float = 0.5
    batch_size_search_range_low: int = 8
    batch_size_search_range_high: int = 8
    eval_tasks_with_median_early_stopping_iterations: bool = False
    min_steps: int = 0
    max_steps: int = 80
    results_csv_name: str = "val-set_hyper_param_search_results.csv"
    estimator: str = "GP"

    def __post_init__(self):
        _finite_floats(self)
        _require(self.estimator == "GP", f"--uho_estimator must be 'GP', got {self.estimator!r}")
        _require(bool(self.results_csv_name), "--uho_results_csv_name must not be empty")
        _require(self.min_steps >= 0, f"--min_steps must be >= 0, got {self.min_steps}")
        _positive(self.max_steps, "--max_steps")
        _require(self.max_steps >= self.min_steps,
                 f"--max_steps ({self.max_steps}) must be >= --min_steps ({self.min_steps})")
        _require(self.meta_fine_tune_steps_on_train_val >= 0,
                 "--meta_fine_tune_steps_on_train_val must be >= 0, got "
                 f"{self.meta_fine_tune_steps_on_train_val}")
        # Half the samples are random and the rest GP-guided: fewer than 2 leaves no search.
        _require(not self.enabled or self.num_configs_to_sample >= 2,
                 "--num_configs_to_sample must be >= 2 with "
                 f"--optimize_update_hyperparms_on_val_set, got {self.num_configs_to_sample}")
        for name, legal, legal_text in (
                ("lr", lambda v: v > 0, "positive"),
                ("drop_rate", lambda v: 0 <= v < 1, "in [0, 1)"),
                ("aug_rate", lambda v: 0 <= v <= 1, "in [0, 1]"),
                ("batch_size", lambda v: v >= 1, ">= 1")):
            fields = (f"{name}_search_range_low", f"{name}_search_range_high")
            ordered = _ordered_range(*(getattr(self, f) for f in fields), name, legal,
                                     legal_text)
            for field, value in zip(fields, ordered):
                object.__setattr__(self, field, value)


@dataclasses.dataclass(frozen=True)
class KShotConfig:
    """FP-k k-shot learning curves (REFERENCE.md section 9)."""

    enabled: bool = False  # --run_k_shot_learning_curves_experiment
    iter_range: Optional[Tuple[int, ...]] = None  # --k_shot_iter_range

    def __post_init__(self):
        if self.iter_range is not None:
            object.__setattr__(self, "iter_range", tuple(int(i) for i in self.iter_range))
            _require(len(self.iter_range) > 0 and all(i > 0 for i in self.iter_range),
                     f"--k_shot_iter_range must be positive step counts, got "
                     f"{list(self.iter_range)}")


STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    """Meta-training and evaluation over several devices or machines (``tf.distribute``)."""

    strategy: str = "default"  # one device; see STRATEGIES
    num_cpu_devices: int = 0  # > 0: split the CPU into this many logical devices
    tpu: str = ""  # TPU name or grpc:// address for --distribution_strategy tpu ("" = local)

    def __post_init__(self):
        _require(self.strategy in STRATEGIES,
                 f"--distribution_strategy must be one of {', '.join(STRATEGIES)}, "
                 f"got {self.strategy!r}")
        _require(self.num_cpu_devices >= 0,
                 f"--num_cpu_devices must be >= 0 (0 keeps one CPU device), "
                 f"got {self.num_cpu_devices}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run of ``run_metasegnet.py`` needs; written beside its checkpoints."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    inner: InnerConfig = dataclasses.field(default_factory=InnerConfig)
    meta: MetaConfig = dataclasses.field(default_factory=MetaConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    uho: UHOConfig = dataclasses.field(default_factory=UHOConfig)
    kshot: KShotConfig = dataclasses.field(default_factory=KShotConfig)
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)
    distribute: DistributeConfig = dataclasses.field(default_factory=DistributeConfig)
    checkpoint: str = "model_checkpoint"
    pretrained: bool = False
    continue_training_from_checkpoint: Optional[str] = None
    fine_tune_task: Optional[str] = None
    fine_tuned_checkpoint: Optional[str] = None
    do_not_restore_final_layer_weights: bool = False
    seed: int = 0
    classes: int = 1
    # Accepted for compatibility with the original command lines; nothing reads them.
    n_unet_encoding_stacks: int = 4
    start_num_feature_maps_power: int = 5
    uho_outer_iters: int = 2

    def __post_init__(self):
        _require(self.classes == 1, f"--classes must be 1 (metaseg does binary segmentation: "
                                    f"foreground vs background), got {self.classes}")
        _require(bool(self.checkpoint), "--checkpoint must not be empty")
        _require(self.fine_tune_task is None or self.fine_tuned_checkpoint,
                 "--fine-tune-task needs --fine-tuned-checkpoint DIR to write its result to")
        no_val = self.data.num_val_tasks == 0
        _require(not (self.eval.eval_val_tasks and no_val),
                 "--eval_val_tasks needs validation tasks: set --num_val_tasks > 0")
        _require(not (self.uho.enabled and no_val),
                 "--optimize_update_hyperparms_on_val_set needs validation tasks: "
                 "set --num_val_tasks > 0")
        _require(not (self.kshot.enabled and self.data.tfds_name),
                 "--run_k_shot_learning_curves_experiment reads the FP-k classes from shards "
                 "(--data-dir), not from a --dataset tfds:NAME")
        self._check_episodes()
        if self.data.dataset == "synthetic":
            self._check_synthetic_size()

    def _check_episodes(self) -> None:
        # The episodes of the run with its inner settings (augmentation rate, and with
        # --replacement a batch of distinct examples fits the shots: the original crashed
        # there). UHO may replace --eval-iters 0 by the steps it finds, so the evaluation
        # batches are checked as if steps were taken.
        EpisodeSpec.training(self.meta, self.inner)
        EpisodeSpec.evaluation(self.eval, self.inner, steps=max(1, self.eval.eval_iters))

    def _check_synthetic_size(self) -> None:
        per_class = self.synthetic.examples_per_class
        needed = max(self.eval.shots + QUERY_SIZE, self.meta.train_shots)
        _require(needed <= per_class,
                 f"--synthetic_examples_per_class ({per_class}) must be >= {needed}: --shots plus "
                 f"{QUERY_SIZE} query images, and --train-shots, are drawn from one class")

    @classmethod
    def sections(cls) -> dict:
        """``{field name: config class}`` for the nested configs (``data``, ``model``, ...)."""
        return {f.name: f.default_factory for f in dataclasses.fields(cls)
                if f.default_factory is not dataclasses.MISSING}

    def to_json(self) -> str:
        """Stable, human-readable JSON; :meth:`from_json` reads it back to an equal config."""
        return to_json(self)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        """Rebuild a config written by :meth:`to_json`; missing fields take today's defaults."""
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"saved run config is not valid JSON: {e}") from None
        _require(isinstance(raw, dict), "saved run config must be a JSON object")
        kwargs = {}
        for name, value in raw.items():
            kwargs[name] = _section_from_dict(cls, name, value)
        _check_known(cls, kwargs, "the saved run config")
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class JointTrainConfig:
    """The joint-training baseline (``python -m metaseg.joint_train``, REFERENCE.md s. 9).

    ``run`` supplies the data, split, model, seed and checkpoint directory, and from its inner
    settings the optimiser (``--sgd``, step size ``--learning-rate``), the loss (``--loss_name``,
    ``--label_smoothing``) and augmentation (``--augment``, ``--aug_rate``); it is written to
    ``config.json`` beside the weights, as meta-training does.
    """

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    epochs: int = 10
    batch_size: int = 8

    def __post_init__(self):
        _positive(self.epochs, "--epochs")
        _positive(self.batch_size, "--batch_size")


def _check_known(config_cls, kwargs: dict, where: str) -> None:
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - known)
    _require(not unknown, f"unknown field(s) {unknown} in {where}; "
                          "was it written by a newer metaseg?")


def _section_from_dict(run_cls, name: str, value):
    """One top-level JSON entry: a nested config's dict becomes that config, else as is."""
    section = run_cls.sections().get(name)
    if section is None:
        return value
    _require(isinstance(value, dict), f"section {name!r} of the saved run config must be an object")
    _check_known(section, value, f"section {name!r} of the saved run config")
    return section(**value)


def to_json(config) -> str:
    """Serialise any (nested) config dataclass to stable, human-readable JSON."""
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)
