"""What ``run_metasegnet.py`` does, as a library function of a ``RunConfig``.

The original's main: build the model, read the splits, meta-train (or restore with
``--pretrained``), evaluate on the training tasks and then on the test (or validation)
tasks, and write the results (REFERENCE.md section 7).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import keras
from absl import logging

from metaseg import distribute, presets
from metaseg.config import QUERY_SIZE, RunConfig
from metaseg.data import TaskStore, image_lists, list_tasks, make_splits, read_class_list
from metaseg.data.tasks import list_tfds_tasks
from metaseg.errors import ConfigError, DataError, Interrupted
from metaseg.evaluation import kshot
from metaseg.evaluation import uho
from metaseg.evaluation.evaluate import EvalResults, Evaluator, write_results
from metaseg.evaluation.kshot_report import KShotResults
from metaseg.meta import checkpoints, run_directory, saving
from metaseg.meta.trainer import MetaTrainer
from metaseg.models import build_model, is_tf1_checkpoint, load_tf1_checkpoint

QUICKSTART_HINT = ("pass --data-dir DIR (a folder of <class>.tfrecord.gzip shards) or "
                   "--dataset synthetic for the embedded benchmark; see the README quickstart: "
                   "python run_metasegnet.py --flagfile flags/quickstart.flags")


@dataclasses.dataclass
class RunResult:
    """Headline numbers of one run (also written to ``meta-test_results.json``)."""

    test: EvalResults
    train: Optional[EvalResults] = None
    random_init: Optional[EvalResults] = None
    kshot: Optional[KShotResults] = None  # --run_k_shot_learning_curves_experiment
    label: str = "meta-learned"  # what ``test`` evaluated (the result table's row name)
    random_label: str = "random (start of meta-training)"


def resolve_data_dir(config: RunConfig) -> str:
    """The shard directory: ``--data-dir``, or the embedded benchmark generated once (for
    ``--dataset tfds:NAME``, that string: ``load_splits`` reads the tfds dataset)."""
    if config.data.data_dir:
        return config.data.data_dir
    if config.data.tfds_name:  # read by load_splits; the string names it in log lines
        return config.data.dataset
    if config.data.dataset != "synthetic":
        raise ConfigError(f"no data: {QUICKSTART_HINT}")
    from metaseg.data.synthetic import ensure_benchmark  # pylint: disable=import-outside-toplevel
    syn = config.synthetic
    return ensure_benchmark(syn.cache_dir, num_classes=syn.num_classes,
                            examples_per_class=syn.examples_per_class,
                            image_size=syn.image_size, seed=config.seed)


def load_splits(config: RunConfig, data_dir: str):
    """Train/val/test task lists (REFERENCE.md section 2)."""
    data = config.data
    test_file = data.test_tasks_file
    if data.tfds_name:  # default test classes: the dataset's test split
        tasks, test_classes = list_tfds_tasks(data.tfds_name, data.tfds_data_dir)
    else:
        tasks, test_classes = list_tasks(data_dir), None
        if test_file is None and not data.fp_k_test_set:
            default = os.path.join(data_dir, "test_classes.txt")  # the embedded benchmark's
            test_file = default if os.path.exists(default) else None
    return make_splits(
        tasks, test_classes=read_class_list(test_file) if test_file else test_classes,
        val_classes=read_class_list(data.val_tasks_file) if data.val_tasks_file else None,
        num_val_tasks=data.num_val_tasks, fp_k_test_set=data.fp_k_test_set)


def build(config: RunConfig) -> keras.Model:
    """A freshly initialised model, seeded so that one seed gives one initialisation."""
    keras.utils.set_random_seed(config.seed)
    # also restores --restore_efficient_net_weights_from
    return build_model(config.model, image_size=config.data.image_size)


def _check_restorable(directory: str) -> None:
    if not (checkpoints.is_metaseg_checkpoint(directory) or is_tf1_checkpoint(directory)
            or presets.find(directory) is not None):  # a damaged preset: its own error
        raise DataError(f"--pretrained: --checkpoint {directory} holds no metaseg or TF1 "
                        "checkpoint and is no preset; pass the directory meta-training "
                        "wrote, an authors' checkpoint directory, or a preset folder or name "
                        f"({', '.join(presets.shipped()) or 'none shipped'})")


def restore(model: keras.Model, directory: str, *, skip_final_layer: bool) -> None:
    """Load ``directory`` into ``model``: our checkpoints, the authors' TF1 ones and presets
    (folders, or names of shipped ones) alike."""
    preset = None if checkpoints.is_metaseg_checkpoint(directory) or is_tf1_checkpoint(
        directory) else presets.find(directory)
    if preset is not None:
        presets.load_weights(model, preset, skip_final_layer=skip_final_layer)
        logging.info("Restored preset %s (%s)", preset.name, preset.directory)
    elif checkpoints.is_metaseg_checkpoint(directory):
        iteration = checkpoints.restore_weights(model, directory,
                                                skip_final_layer=skip_final_layer)
        logging.info("Restored metaseg checkpoint %s (meta-iteration %d)", directory, iteration)
    elif is_tf1_checkpoint(directory):
        load_tf1_checkpoint(model, directory, skip_final_layer=skip_final_layer)
        logging.info("Restored TF1 checkpoint %s", directory)
    else:
        _check_restorable(directory)


def _store(tasks, config: RunConfig, min_examples: int, purpose: str = "",
           keep_keys=None) -> TaskStore:
    try:
        return TaskStore.load(tasks, config.data.image_size, min_examples=min_examples,
                              drop_small=config.data.drop_small_tasks, keep_keys=keep_keys)
    except DataError as e:
        raise DataError(f"{purpose}{e}" if purpose else str(e)) from None


def run(config: RunConfig) -> RunResult:
    """Meta-train and/or evaluate as the flags say; returns the headline results.

    The ``--checkpoint`` directory is locked for the run (a second run into it is refused)
    and removed again if the run fails before its first checkpoint. Ctrl-C ends in
    ``Interrupted``, saying what was kept."""
    strategy = distribute.make_strategy(config.distribute)  # before any other TensorFlow work
    if distribute.is_distributed(strategy) and not config.pretrained:
        distribute.tasks_per_replica(config.meta.meta_batch, strategy)  # fail before loading
    _unsupported_on_several_workers(config, strategy)
    _check_writable(config.checkpoint)
    if config.pretrained:  # fail before minutes of loading shards
        _check_restorable(config.checkpoint)
    with run_directory.claimed(config.checkpoint, chief=distribute.is_chief(strategy)):
        try:
            return _run(config, strategy)
        except KeyboardInterrupt:
            raise Interrupted(interrupted_message(config)) from None


def interrupted_message(config: RunConfig) -> str:
    """What Ctrl-C leaves: the newest checkpoint and what rerunning the command does."""
    if config.pretrained:
        return f"interrupted while evaluating --checkpoint {config.checkpoint}; nothing was written"
    saved = saving.listed(config.checkpoint)
    if not saved:
        return (f"interrupted before the first checkpoint of {config.checkpoint} (one is "
                f"written every --checkpoint_every {config.meta.checkpoint_every} "
                "meta-iterations); nothing was kept, rerunning starts again")
    newest, total = saved[-1], config.meta.meta_iters
    if newest.iteration >= total:
        return (f"interrupted after meta-training; the final checkpoint is {newest.prefix} "
                f"(meta-iteration {newest.iteration} of {total}); rerunning evaluates it "
                "without training again")
    return (f"interrupted during meta-training; the last checkpoint is {newest.prefix} "
            f"(meta-iteration {newest.iteration} of {total}); rerunning resumes from it")


def _run(config: RunConfig, strategy) -> RunResult:
    data_dir = resolve_data_dir(config)
    splits = load_splits(config, data_dir)
    eval_tasks = splits.val if config.eval.eval_val_tasks else splits.test
    needed = config.eval.shots + QUERY_SIZE
    # --train_list restricts the training tasks only; evaluation keeps every image.
    train_store = _store(splits.train, config, min_examples=1,
                         keep_keys=image_lists.maybe_read(config.data.train_list))
    eval_store = _store(eval_tasks, config, min_examples=needed, purpose=(
        f"evaluation with --shots {config.eval.shots} needs {needed} examples per task "
        f"(--shots + {QUERY_SIZE} query images): "))
    logging.info("%d training, %d validation, %d test tasks from %s", len(splits.train),
                 len(splits.val), len(splits.test), data_dir)

    with strategy.scope():
        model = build(config)
    evaluator = Evaluator(model, config.inner, config.eval, run_config=dataclasses.asdict(config),
                          strategy=strategy)
    random_init = None
    if config.eval.compare_random_init:  # the model as built, before training or restoring
        random_init = evaluator.evaluate(eval_store, label="random-init")
    labels = dict(label="pretrained checkpoint",
                  random_label=f"random (same architecture, --seed {config.seed})") \
        if config.pretrained else {}
    if config.pretrained:
        restore(model, config.checkpoint,
                skip_final_layer=config.do_not_restore_final_layer_weights)
    else:
        _meta_train(config, model, train_store, eval_store, evaluator, strategy)

    # --- UHO block (REFERENCE.md section 8) ---
    if config.uho.enabled:
        if not splits.val:
            raise DataError("--optimize_update_hyperparms_on_val_set: the splits hold no "
                            "validation tasks; set --num_val_tasks > 0 or --val_tasks_file")
        val_store = eval_store if config.eval.eval_val_tasks else _store(
            splits.val, config, min_examples=needed, purpose=(
                f"the update-hyperparameter search with --shots {config.eval.shots} needs "
                f"{needed} examples per validation task: "))
        found = uho.optimize_for_run(config, model, val_store, adapter=evaluator.adapter)
        config = uho.with_found_values(config, found)  # --learning-rate, --eval-iters
        evaluator = Evaluator(model, config.inner, config.eval, adapter=evaluator.adapter,
                              run_config=dataclasses.asdict(config), strategy=strategy)
        if config.uho.meta_fine_tune_steps_on_train_val:
            logging.info("Meta-fine-tuning %d iterations on train + val with the found values",
                         config.uho.meta_fine_tune_steps_on_train_val)
            _meta_train(uho.fine_tune_config(config), model,
                        _store(splits.train + splits.val, config, min_examples=1),
                        eval_store, evaluator, strategy)
    # --- end of UHO block ---
    # --- k-shot block (REFERENCE.md section 9) ---
    if config.kshot.enabled:  # the curves replace the usual evaluation
        fpk_store = kshot.load_fpk_store(data_dir, config.data.image_size, splits.train)
        curves = kshot.KShotExperiment(evaluator.adapter, config).run(fpk_store)
        return RunResult(test=curves.as_eval_results(), kshot=curves, **labels)
    # --- end of k-shot block ---

    if config.fine_tune_task:
        return _fine_tune_one(config, evaluator, train_store, eval_store)
    train_results = None
    if config.eval.eval_train_tasks:
        # One random training task per repetition, as the original: its
        # --serially_eval_all_test_tasks applies to the test tasks only.
        train_results = evaluator.evaluate(
            _eval_subset(train_store, splits.train, config, needed), label="train",
            serial=False, save_dir=_save_dir(config, train=True))
        logging.info("Mean IoU over all meta-train tasks: %.4f", train_results.mean_iou)
    test_results = evaluator.evaluate(eval_store, label="test", save_dir=_save_dir(config))
    if distribute.is_chief(strategy):
        write_results(config.checkpoint, test_results)
    return RunResult(test=test_results, train=train_results, random_init=random_init,
                     **labels)


def _meta_train(config: RunConfig, model, train_store, eval_store, evaluator,
                strategy=None) -> None:
    def one_random_task(store, label):  # as the original's periodic evaluation
        return lambda m: {"IoU": evaluator.evaluate(store, num_samples=1, serial=False,
                                                    label=label).mean_iou, "tasks": 1}

    periodic = {"train": one_random_task(train_store, "train"),
                "test": one_random_task(eval_store, "test")}
    trainer = MetaTrainer(model, train_store, meta=config.meta, inner=config.inner,
                          checkpoint_dir=config.checkpoint,
                          total_inner_steps=config.eval.eval_iters,
                          config=dataclasses.asdict(config), evaluators=periodic,
                          adapter=evaluator.adapter, strategy=strategy)
    trainer.train(resume_from=config.continue_training_from_checkpoint)


def _unsupported_on_several_workers(config: RunConfig, strategy) -> None:
    """Experiments that write files as they go run on one machine (mirrored is fine)."""
    if not distribute.is_multi_worker(strategy):
        return
    for wanted, flag in ((config.uho.enabled, "--optimize_update_hyperparms_on_val_set"),
                         (config.kshot.enabled, "--run_k_shot_learning_curves_experiment"),
                         (config.fine_tune_task, "--fine-tune-task")):
        if wanted:
            raise ConfigError(f"{flag} runs on one machine; use --distribution_strategy "
                              "mirrored or default (multi_worker_mirrored is for "
                              "meta-training and evaluation)")


def _eval_subset(train_store, tasks, config: RunConfig, needed: int) -> TaskStore:
    """The training tasks that can supply an evaluation episode (the others are named)."""
    small = {train_store.names[i] for i in range(len(train_store))
             if train_store.num_examples(i) < needed}
    if not small:
        return train_store
    logging.warning("Evaluating on training tasks: leaving out %d with fewer than --shots + %d "
                    "= %d examples: %s", len(small), QUERY_SIZE, needed, ", ".join(sorted(small)))
    return _store([t for t in tasks if t.name not in small], config, min_examples=needed,
                  keep_keys=image_lists.maybe_read(config.data.train_list))


def _save_dir(config: RunConfig, train: bool = False) -> Optional[str]:
    wanted = config.eval.save_fine_tuned_checkpoints_train if train \
        else config.eval.save_fine_tuned_checkpoints
    # Training and test task names are disjoint, so both share <dir>/<task>/<sample>/.
    return config.eval.save_fine_tuned_checkpoints_dir if wanted else None


def _fine_tune_one(config: RunConfig, evaluator, train_store, eval_store) -> RunResult:
    """``--fine-tune-task NAME``: adapt to one named task and save it."""
    for store in (eval_store, train_store):
        if config.fine_tune_task in store.names:
            index = store.names.index(config.fine_tune_task)
            results = evaluator.evaluate(store, task_indices=[index], num_samples=1,
                                         serial=True, save_dir=config.fine_tuned_checkpoint)
            logging.info("Fine-tuned %s: query IoU %.4f, saved under %s",
                         config.fine_tune_task, results.mean_iou, config.fine_tuned_checkpoint)
            return RunResult(test=results, label=f"fine-tuned on {config.fine_tune_task}")
    raise DataError(f"--fine-tune-task {config.fine_tune_task!r} is not a task in the data")


def _check_writable(directory: str) -> None:
    """Fail early, creating nothing, if ``directory`` could not be written."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise DataError(f"--checkpoint directory {directory} is not writable ({existing} is "
                        "not a writable directory); choose another --checkpoint")
