"""Every command-line flag once: name, type, where its value goes in ``RunConfig``, help.

Names and types are the original's (``spec/FLAGS.md``), spelt as it spelt them (some with
hyphens, some with underscores); flags this project adds use underscores. Defaults are NOT
here: ``definitions.py`` reads them from the config dataclasses, the only place they live.

A target is a path into ``RunConfig``: ``"meta.meta_iters"`` is ``RunConfig.meta.meta_iters``,
``"checkpoint"`` is ``RunConfig.checkpoint``. A flag may feed several targets (``--seed``).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Callable, Tuple

KINDS = ("str", "bool", "int", "float", "int list")


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One flag: how it is spelt and typed, and which config fields it sets."""

    name: str
    kind: str
    targets: Tuple[str, ...]
    help: str
    # Flag value -> config value, and its inverse for the default (only for flags whose
    # meaning is not the field's, such as --foml -> algorithm).
    to_field: Callable[[Any], Any] = lambda value: value
    from_field: Callable[[Any], Any] = lambda value: value
    compat: bool = False  # accepted so old command lines run; nothing reads it


def _flag(name: str, kind: str, target, help_text: str, **kwargs) -> FlagSpec:
    targets = (target,) if isinstance(target, str) else tuple(target)
    return FlagSpec(name, kind, targets, help_text, **kwargs)


def _compat(name: str, help_text: str) -> FlagSpec:
    return _flag(name, "int", name.replace("-", "_"),
                 f"{help_text} Accepted for compatibility with the original; ignored.",
                 compat=True)


def _foml_to_algorithm(foml: bool) -> str:
    return "fomaml" if foml else "reptile"


def _algorithm_to_foml(algorithm: str) -> bool:
    return algorithm == "fomaml"


_RUN = [
    _flag("fine-tune-task", "str", "fine_tune_task",
          "Adapt the initialisation to this one task (class name) and stop."),
    _flag("fine-tuned-checkpoint", "str", "fine_tuned_checkpoint",
          "Directory where --fine-tune-task writes the adapted weights."),
    _flag("pretrained", "bool", "pretrained",
          "Skip meta-training; evaluate the checkpoint in --checkpoint."),
    _flag("seed", "int", ("seed", "meta.seed", "eval.seed"), "Random seed."),
    _flag("checkpoint", "str", "checkpoint", "Checkpoint directory (read and written)."),
    _flag("classes", "int", "classes",
          "Classes per task; must be 1 (binary foreground/background segmentation)."),
    _flag("continue_training_from_checkpoint", "str", "continue_training_from_checkpoint",
          "Resume meta-training from this checkpoint directory."),
    _flag("do_not_restore_final_layer_weights", "bool", "do_not_restore_final_layer_weights",
          "When restoring a checkpoint, restore every layer except the last."),
    _compat("n_unet_encoding_stacks", "Number of U-Net encoding stacks."),
    _compat("start_num_feature_maps_power", "log2 of the U-Net's first-layer channels."),
    _compat("uho_outer_iters", "UHO outer iterations (unused by the original too)."),
]

_DATA = [
    _flag("data-dir", "str", "data.data_dir",
          "Directory of shards, one <class>.tfrecord.gzip per class."),
    _flag("dataset", "str", "data.dataset",
          "'shards' (read --data-dir), 'synthetic' (the embedded procedural benchmark; "
          "without --data-dir it is generated into --cache_dir once and reused) or "
          "'tfds:NAME[/CONFIG]' (a prepared TensorFlow Datasets dataset, e.g. "
          "tfds:metaseg_synthetic/quickstart; its test split is the test set)."),
    _flag("tfds_data_dir", "str", "data.tfds_data_dir",
          "Where --dataset tfds:NAME was built (tfds build --data_dir); unset: tfds's "
          "default (~/tensorflow_datasets or $TFDS_DATA_DIR)."),
    _flag("image_size", "int", "data.image_size", "Square image side in pixels."),
    _flag("test_tasks_file", "str", "data.test_tasks_file",
          "Text file naming the test classes, one per line. Without it the split is "
          "deterministic by sorted class name (FSS-1000's own split with --fss_1000)."),
    _flag("val_tasks_file", "str", "data.val_tasks_file",
          "Text file naming the validation classes, one per line (else --num_val_tasks)."),
    _flag("num_val_tasks", "int", "data.num_val_tasks",
          "Training classes held out for validation (the last N by sorted name)."),
    _flag("fss_1000", "bool", "data.fss_1000", "The data is FSS-1000."),
    _flag("fp_k_test_set", "bool", "data.fp_k_test_set",
          "Hold out the FP-k classes as the test set instead of FSS-1000's."),
    _flag("drop_small_tasks", "bool", "data.drop_small_tasks",
          "Skip classes with fewer examples than an episode needs, instead of stopping."),
    _flag("train_list", "str", "data.train_list",
          "Image-list file (one image key per line, e.g. UMTFSS's train_5/10/20 lists or "
          "data_tools/make_fraction_list.py output): meta-train only on the listed images. "
          "Needs shards that store image keys (written by a current converter)."),
    _flag("synthetic_num_classes", "int", "synthetic.num_classes",
          "Classes of the generated synthetic benchmark."),
    _flag("synthetic_examples_per_class", "int", "synthetic.examples_per_class",
          "Image/mask pairs per class of the synthetic benchmark."),
    _flag("synthetic_image_size", "int", "synthetic.image_size",
          "Stored side of the synthetic shards; episodes are resized to --image_size."),
    _flag("cache_dir", "str", "synthetic.cache_dir",
          "Where generated data is kept: $METASEG_CACHE, else ~/.cache/metaseg."),
]

_MODEL = [
    _flag("model_name", "str", "model.model_name", "Architecture."),
    _flag("feature_extractor_name", "str", "model.feature_extractor_name",
          "Backbone: efficientnet-b0 or efficientnet-b3."),
    _flag("rsd", "int list", "model.rsd",
          "Backbone reductions (1-4) feeding residual skip decoders, e.g. --rsd 2 4."),
    _flag("disable_rsd_residual_connections", "bool", "model.rsd_residual",
          "Drop the residual add inside the RSD blocks.",
          to_field=operator.not_, from_field=operator.not_),
    _flag("spatial_pyramid_pooling", "bool", "model.spatial_pyramid_pooling",
          "Add the ASPP block."),
    _flag("skip_decoding", "bool", "model.skip_decoding",
          "Add the DeepLab v3+ style skip decoder."),
    _flag("final_layer_dropout_rate", "float", "model.final_layer_dropout_rate",
          "Dropout rate before the last 1x1 convolution."),
    _flag("backbone_weights", "str", "model.backbone_weights",
          "'imagenet' to start the backbone from Keras' ImageNet weights; unset: random."),
    _flag("restore_efficient_net_weights_from", "str",
          "model.restore_efficient_net_weights_from",
          "Backbone checkpoint to start meta-training from."),
]

_INNER = [
    _flag("learning-rate", "float", "inner.learning_rate", "Inner-loop step size."),
    _flag("sgd", "bool", "inner.sgd", "Plain SGD in the inner loop instead of Adam (beta1=0)."),
    _flag("learning_rate_scheduler", "str", "inner.learning_rate_scheduler",
          "Inner schedule: fixed, constant, cosine_anneal, step or step_decay."),
    _flag("step_decay_rate", "float", "inner.step_decay_rate", "Step schedule factor."),
    _flag("decay_after_n_steps", "int", "inner.decay_after_n_steps", "Step schedule period."),
    _flag("weight-decay", "float", "inner.weight_decay",
          "Multiply the weights by this before each inner step."),
    _flag("loss_name", "str", "inner.loss_name",
          "cross_entropy, or any name containing 'dice' (bce_dice: cross-entropy + dice)."),
    _flag("label_smoothing", "float", "inner.label_smoothing", "Cross-entropy label smoothing."),
    _flag("l2", "bool", "inner.l2", "L2 weight penalty."),
    _flag("l1", "bool", "inner.l1", "L1 weight penalty."),
    _flag("darc1", "bool", "inner.darc1", "DARC1 penalty on the logits."),
    _flag("augment", "bool", "inner.augment", "Augment inner-loop batches."),
    _flag("aug_rate", "float", "inner.aug_rate", "Probability of augmenting an example."),
    _flag("replacement", "bool", "inner.replacement",
          "Draw each inner mini-batch independently (with replacement between batches)."),
    _flag("jit_compile", "bool", "inner.jit_compile",
          "XLA-compile the inner loop. Off by default: on CPU, XLA's depthwise "
          "convolution makes the step 30-45x slower (one 3x3 depthwise conv forward+"
          "backward, 8x56x56x144: 0.42 s vs 0.011 s), not recompilation. For GPU/TPU."),
]

_META = [
    _flag("foml", "bool", "meta.algorithm", "FOMAML instead of Reptile.",
          to_field=_foml_to_algorithm, from_field=_algorithm_to_foml),
    _flag("foml-tail", "int", "meta.foml_tail",
          "Training shots held out for FOMAML's last inner step."),
    _flag("sample_foml_train_val_with_replacement", "bool",
          "meta.sample_foml_train_val_with_replacement",
          "Draw the FOMAML tail split with replacement."),
    _flag("train-shots", "int", "meta.train_shots", "Examples drawn per task in meta-training."),
    _flag("inner-batch", "int", "meta.inner_batch", "Inner-loop batch size in meta-training."),
    _flag("inner-iters", "int", "meta.inner_iters", "Inner-loop steps in meta-training."),
    _flag("meta-step", "float", "meta.meta_step", "Outer step size at the start."),
    _flag("meta-step-final", "float", "meta.meta_step_final", "Outer step size at the end."),
    _flag("meta-batch", "int", "meta.meta_batch", "Tasks per outer step."),
    _flag("meta-iters", "int", "meta.meta_iters", "Outer steps."),
    _flag("eval-interval", "int", "meta.eval_interval", "Outer steps between evaluations."),
    _flag("checkpoint_every", "int", "meta.checkpoint_every",
          "Outer steps between checkpoints during meta-training."),
    _flag("keep_checkpoints", "int", "meta.keep_checkpoints",
          "Most recent meta-training checkpoints kept on disk."),
    _flag("reset_state_per_task", "bool", "meta.reset_state_per_task",
          "Reset batch-norm statistics and inner-optimiser slots for every task during "
          "meta-training (the original carried them over; published checkpoints rely on it)."
          " The same as --carry_over reset."),
    _flag("carry_over", "str", "meta.carry_over",
          "How batch-norm statistics and inner-optimiser slots pass between the tasks of a "
          "meta-batch: sequential (each task starts from the previous task's end state; the "
          "original's), reset (every task from the saved statistics and fresh slots; the "
          "statistics kept are the mean over the tasks) or mean (every task from the same "
          "state; the mean of the tasks' end states is kept). Default: sequential on one "
          "device, mean under a --distribution_strategy (its tasks run in parallel)."),
]

_EVAL = [
    _flag("shots", "int", "eval.shots", "Support examples per task at evaluation."),
    _flag("eval-batch", "int", "eval.eval_batch", "Inner batch size at evaluation."),
    _flag("eval-iters", "int", "eval.eval_iters", "Inner steps at evaluation."),
    _flag("eval-samples", "int", "eval.eval_samples", "Evaluation repetitions."),
    _flag("transductive", "bool", "eval.transductive", "Predict the query set as one batch."),
    _flag("serially_eval_all_test_tasks", "bool", "eval.serially_eval_all_test_tasks",
          "Evaluate every task once per repetition (else one random task)."),
    _flag("eval_val_tasks", "bool", "eval.eval_val_tasks",
          "Final evaluation on the validation tasks instead of the test tasks."),
    _flag("save_fine_tuned_checkpoints", "bool", "eval.save_fine_tuned_checkpoints",
          "Save the weights fine-tuned on each test task."),
    _flag("save_fine_tuned_checkpoints_train", "bool", "eval.save_fine_tuned_checkpoints_train",
          "Same for the training tasks."),
    _flag("save_fine_tuned_checkpoints_dir", "str", "eval.save_fine_tuned_checkpoints_dir",
          "Where fine-tuned checkpoints go: <dir>/<task>/<sample>/."),
    _flag("save_predictions_dir", "str", "eval.save_predictions_dir",
          "Write each query image with its predicted and true mask overlaid here."),
    _flag("eval_train_tasks", "bool", "eval.eval_train_tasks",
          "After meta-training, also evaluate on the training tasks (the original always did)."),
    _flag("compare_random_init", "bool", "eval.compare_random_init",
          "Also evaluate the random initialisation meta-training starts from, and print both."),
    _flag("concurrent_tasks", "int", "eval.concurrent_tasks",
          "Evaluation tasks adapted at once, each by its own Python thread calling the "
          "compiled adaptation (1: one at a time; 0, the default: 2 on a machine with 2 "
          "usable cores, else 1). Scores, files and their order are identical to 1 under "
          "the same TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS; N tasks' memory at "
          "once. On 2 idle cores (1 + 2 threads) 2 at once gave 1.29x the tasks/hour at "
          "64 px and 1.40x at 224 px (bench/run_all.py's eval group). Under a "
          "--distribution_strategy with several replicas, and nothing saved per task, the "
          "replicas run the tasks and this is ignored."),
]

_UHO = [
    _flag("optimize_update_hyperparms_on_val_set", "bool", "uho.enabled",
          "Search update hyperparameters (UHO) on the validation tasks."),
    _flag("num_configs_to_sample", "int", "uho.num_configs_to_sample", "UHO configurations."),
    _flag("meta_fine_tune_steps_on_train_val", "int", "uho.meta_fine_tune_steps_on_train_val",
          "Meta-fine-tune this many iterations on train+val after UHO."),
    *(_flag(f"{p}_search_range_{end}", kind, f"uho.{p}_search_range_{end}",
            f"{end.capitalize()} end of the UHO search range of the {what} (low == high: fixed).")
      for p, kind, what in (("lr", "float", "inner learning rate"),
                            ("drop_rate", "float", "final-layer dropout rate"),
                            ("aug_rate", "float", "augmentation rate"),
                            ("batch_size", "int", "inner batch size"))
      for end in ("low", "high")),
    _flag("eval_tasks_with_median_early_stopping_iterations", "bool",
          "uho.eval_tasks_with_median_early_stopping_iterations",
          "UHO: re-evaluate with the median early-stopping step count."),
    _flag("min_steps", "int", "uho.min_steps", "UHO early stopping: minimum steps."),
    _flag("max_steps", "int", "uho.max_steps", "UHO early stopping: maximum steps."),
    _flag("uho_results_csv_name", "str", "uho.results_csv_name",
          "UHO results CSV, written in the checkpoint directory."),
    _flag("uho_estimator", "str", "uho.estimator", "UHO surrogate model (only GP)."),
]

_KSHOT = [
    _flag("run_k_shot_learning_curves_experiment", "bool", "kshot.enabled",
          "Run the FP-k k-shot learning-curves experiment."),
    _flag("k_shot_iter_range", "int list", "kshot.iter_range",
          "Inner steps per k in the k-shot experiment, e.g. --k_shot_iter_range 1 5 10."),
]

_DISTRIBUTE = [
    _flag("distribution_strategy", "str", "distribute.strategy",
          "tf.distribute strategy: default (one device), mirrored (all local GPUs, or the "
          "--num_cpu_devices logical CPUs), multi_worker_mirrored (machines in TF_CONFIG) or "
          "tpu. The --meta-batch tasks are spread over the replicas."),
    _flag("num_cpu_devices", "int", "distribute.num_cpu_devices",
          "Split the CPU into this many logical devices (0: one), e.g. to run "
          "--distribution_strategy mirrored without GPUs."),
    _flag("tpu", "str", "distribute.tpu",
          "TPU name or grpc:// address for --distribution_strategy tpu (empty: the local TPU)."),
]

FLAG_SPECS: Tuple[FlagSpec, ...] = tuple(_RUN + _DATA + _MODEL + _INNER + _META + _EVAL
                                         + _UHO + _KSHOT + _DISTRIBUTE)


def flag_for_field(path: str) -> str:
    """``--name`` of the flag that sets config field ``path`` (``"eval.eval_batch"`` ->
    ``"--eval-batch"``), as errors carrying a field (``metaseg.errors.FieldError``) are spelt
    for ``run_metasegnet.py`` users; ``path`` itself if no flag sets it."""
    for spec in FLAG_SPECS:
        if path in spec.targets:
            return f"--{spec.name}"
    return path
