"""What ``run_metasegnet.py`` does, as a library function of a ``RunConfig``.

The original's main (REFERENCE.md section 7), as named stages that ``run`` calls in order:

1. :func:`prepare`: read the splits and task stores, build the seeded model and evaluator;
2. :func:`meta_train_or_restore`: meta-train, or restore ``--checkpoint`` (``--pretrained``);
3. :func:`search_update_hyperparameters`: UHO on the validation tasks (section 8);
4. :func:`kshot_curves`: the FP-k learning curves instead of the usual evaluation (section 9);
5. :func:`fine_tune_one_task`: ``--fine-tune-task``, adapt to one task and save it;
6. :func:`final_evaluation`: the training and test (or validation) tasks, results written.

(:func:`evaluate_random_init` scores the model as built, for ``--compare_random_init``.)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import keras
from absl import logging

from metaseg import checkpoints, distribute, presets
from metaseg.config import QUERY_SIZE, RunConfig
from metaseg.data import (Splits, TaskStore, image_lists, list_tasks, make_splits,
                          read_class_list)
from metaseg.datasets.synthetic import ensure_benchmark
from metaseg.errors import ConfigError, DataError, Interrupted
from metaseg.evaluation import kshot
from metaseg.evaluation import uho
from metaseg.evaluation.evaluate import EvalResults, Evaluator, write_results
from metaseg.evaluation.kshot_report import KShotResults
from metaseg.meta import run_directory
from metaseg.meta.trainer import MetaTrainer
from metaseg.models import build_model

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
    syn = config.synthetic
    return ensure_benchmark(syn.cache_dir, num_classes=syn.num_classes,
                            examples_per_class=syn.examples_per_class,
                            image_size=syn.image_size, seed=config.seed)


def load_splits(config: RunConfig, data_dir: str):
    """Train/val/test task lists (REFERENCE.md section 2)."""
    data = config.data
    test_file = data.test_tasks_file
    if data.tfds_name:  # default test classes: the dataset's test split
        from metaseg import tfds  # pylint: disable=C0415  (tensorflow_datasets only for tfds:)
        tasks, test_classes = tfds.list_tasks(data.tfds_name, data.tfds_data_dir)
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


def _check_restorable(directory: str) -> checkpoints.Found:
    found = checkpoints.detect(directory)  # a damaged checkpoint or preset: its own error
    if found.kind is checkpoints.Kind.NONE:
        raise DataError(f"--pretrained: --checkpoint {directory} holds no metaseg or TF1 "
                        "checkpoint and is no preset; pass the directory meta-training "
                        "wrote, an authors' checkpoint directory, or a preset folder or name "
                        f"({', '.join(presets.shipped()) or 'none shipped'})")
    return found


def restore(model: keras.Model, directory: str, *, skip_final_layer: bool) -> None:
    """Load ``directory`` into ``model``: our checkpoints, the authors' TF1 ones and presets
    (folders, or names of shipped ones) alike."""
    checkpoints.load_into(model, _check_restorable(directory),
                          skip_final_layer=skip_final_layer)


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
    saved = checkpoints.listed(config.checkpoint)
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
    """The stages, in order: each takes what the earlier ones made and says what it makes."""
    prepared = prepare(config, strategy)
    random_init = evaluate_random_init(prepared)  # the model as built, before any weights
    meta_train_or_restore(prepared)
    prepared = search_update_hyperparameters(prepared)  # unchanged unless UHO is on
    if config.kshot.enabled:  # the curves replace the usual evaluation
        return kshot_curves(prepared)
    if config.fine_tune_task:
        return fine_tune_one_task(prepared)
    return final_evaluation(prepared, random_init)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What the stages after :func:`prepare` work on: the run's config (UHO replaces it with
    the values it found), the data, and the model with its evaluator."""

    config: RunConfig
    strategy: object  # a tf.distribute.Strategy
    data_dir: str
    splits: Splits  # the train / val / test task lists
    train_store: TaskStore  # the training tasks (restricted by --train_list)
    eval_store: TaskStore  # the test tasks, or the validation tasks with --eval_val_tasks
    model: keras.Model  # built in the strategy's scope; later stages set its weights
    evaluator: Evaluator


def _needed(config: RunConfig) -> int:
    """Examples an evaluation task needs: --shots support images plus the query set."""
    return config.eval.shots + QUERY_SIZE


def _labels(config: RunConfig) -> dict:
    """The result table's row names (``RunResult.label`` / ``random_label``)."""
    if not config.pretrained:
        return {}
    return dict(label="pretrained checkpoint",
                random_label=f"random (same architecture, --seed {config.seed})")


def prepare(config: RunConfig, strategy) -> Prepared:
    """Stage 1: read the splits and the task stores, build the seeded model and its evaluator."""
    data_dir = resolve_data_dir(config)
    splits = load_splits(config, data_dir)
    eval_tasks = splits.val if config.eval.eval_val_tasks else splits.test
    needed = _needed(config)
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
    return Prepared(config, strategy, data_dir, splits, train_store, eval_store, model,
                    evaluator)


def evaluate_random_init(prepared: Prepared) -> Optional[EvalResults]:
    """With --compare_random_init, the evaluation of the model as built (call it before
    :func:`meta_train_or_restore`); else None."""
    if not prepared.config.eval.compare_random_init:
        return None
    return prepared.evaluator.evaluate(prepared.eval_store, label="random-init")


def meta_train_or_restore(prepared: Prepared) -> None:
    """Stage 2: give the model its initialisation, restored from --checkpoint with
    --pretrained, else meta-trained (checkpoints written to, or resumed from, --checkpoint)."""
    config = prepared.config
    if config.pretrained:
        restore(prepared.model, config.checkpoint,
                skip_final_layer=config.do_not_restore_final_layer_weights)
    else:
        _meta_train(config, prepared.model, prepared.train_store, prepared.eval_store,
                    prepared.evaluator, prepared.strategy)


def search_update_hyperparameters(prepared: Prepared) -> Prepared:
    """Stage 3 (REFERENCE.md section 8), with --optimize_update_hyperparms_on_val_set:
    search the inner learning rate and step count on the validation tasks, optionally
    meta-fine-tune on train + val with them, and return the run with the found values in
    its config and evaluator. Without the flag, ``prepared`` itself."""
    config, evaluator = prepared.config, prepared.evaluator
    if not config.uho.enabled:
        return prepared
    splits, needed = prepared.splits, _needed(config)
    if not splits.val:
        raise DataError("--optimize_update_hyperparms_on_val_set: the splits hold no "
                        "validation tasks; set --num_val_tasks > 0 or --val_tasks_file")
    val_store = prepared.eval_store if config.eval.eval_val_tasks else _store(
        splits.val, config, min_examples=needed, purpose=(
            f"the update-hyperparameter search with --shots {config.eval.shots} needs "
            f"{needed} examples per validation task: "))
    found = uho.optimize_for_run(config, prepared.model, val_store, adapter=evaluator.adapter)
    config = uho.with_found_values(config, found)  # --learning-rate, --eval-iters
    evaluator = Evaluator(prepared.model, config.inner, config.eval, adapter=evaluator.adapter,
                          run_config=dataclasses.asdict(config), strategy=prepared.strategy)
    if config.uho.meta_fine_tune_steps_on_train_val:
        logging.info("Meta-fine-tuning %d iterations on train + val with the found values",
                     config.uho.meta_fine_tune_steps_on_train_val)
        _meta_train(uho.fine_tune_config(config), prepared.model,
                    _store(splits.train + splits.val, config, min_examples=1),
                    prepared.eval_store, evaluator, prepared.strategy)
    return dataclasses.replace(prepared, config=config, evaluator=evaluator)


def kshot_curves(prepared: Prepared) -> RunResult:
    """Stage 4 (REFERENCE.md section 9), --run_k_shot_learning_curves_experiment: the FP-k
    learning curves of the model's initialisation, written beside the checkpoints."""
    config = prepared.config
    fpk_store = kshot.load_fpk_store(prepared.data_dir, config.data.image_size,
                                     prepared.splits.train)
    curves = kshot.KShotExperiment(prepared.evaluator.adapter, config).run(fpk_store)
    return RunResult(test=curves.as_eval_results(), kshot=curves, **_labels(config))


def final_evaluation(prepared: Prepared,
                     random_init: Optional[EvalResults] = None) -> RunResult:
    """Stage 6 (REFERENCE.md section 7): evaluate the initialisation on the training tasks
    (--eval_train_tasks) and on the evaluation tasks, and write meta-test_results.json."""
    config, evaluator, splits = prepared.config, prepared.evaluator, prepared.splits
    train_results = None
    if config.eval.eval_train_tasks:
        # One random training task per repetition, as the original: its
        # --serially_eval_all_test_tasks applies to the test tasks only.
        train_results = evaluator.evaluate(
            _eval_subset(prepared.train_store, splits.train, config, _needed(config)),
            label="train", serial=False, save_dir=_save_dir(config, train=True))
        logging.info("Mean IoU over all meta-train tasks: %.4f", train_results.mean_iou)
    test_results = evaluator.evaluate(prepared.eval_store, label="test",
                                      save_dir=_save_dir(config))
    if distribute.is_chief(prepared.strategy):
        write_results(config.checkpoint, test_results)
    return RunResult(test=test_results, train=train_results, random_init=random_init,
                     **_labels(config))


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


def fine_tune_one_task(prepared: Prepared) -> RunResult:
    """Stage 5, ``--fine-tune-task NAME``: adapt the initialisation to that one task (an
    evaluation task, else a training task) and save it under --fine-tuned-checkpoint."""
    config = prepared.config
    for store in (prepared.eval_store, prepared.train_store):
        if config.fine_tune_task in store.names:
            index = store.names.index(config.fine_tune_task)
            results = prepared.evaluator.evaluate(
                store, task_indices=[index], num_samples=1, serial=True,
                save_dir=config.fine_tuned_checkpoint)
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
