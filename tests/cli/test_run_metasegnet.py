"""End to end on tiny generated shards: run_metasegnet.py as a subprocess (meta-train 2
iterations, evaluate), --pretrained on its result and on a TF1 checkpoint, run.sh's published
command line, --fine-tune-task, and bad input ending in one line and exit 2."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

from metaseg import flags
from metaseg import pipeline
from metaseg.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from metaseg.data import TaskStore, episodes
from metaseg.errors import MetasegError
from metaseg.evaluation.evaluate import RESULTS_FILE, summary_path
from metaseg.evaluation.metrics import binary_iou
from metaseg import checkpoints
from metaseg.models import build_model
from tests.cli.conftest import TEST_CLASSES, own_stderr_lines, run_script, subprocess_env

MEAN_IOU_LINE = re.compile(r"^Mean IoU over all meta-test tasks: (\S+)$")

# Big enough steps that two SGD steps move a random EfficientLab's predictions off "all
# background", so the IoUs compared below are not all ~1e-9.
TRAINING = ("--image_size 32 --meta-iters 2 --meta-batch 1 --inner-iters 1 --inner-batch 2 "
            "--train-shots 4 --sgd --learning-rate 0.1 --loss_name bce_dice --shots 5 "
            "--eval-batch 2 --eval-iters 2 --eval-samples 2 --serially_eval_all_test_tasks "
            "--transductive").split()


def data_args(shards):
    return ["--data-dir", str(shards.data_dir), "--test_tasks_file", str(shards.test_classes)]


def config_from_words(words):
    """The RunConfig run_metasegnet.py builds from ``words`` (a fresh FlagValues)."""
    flag_values = absl_flags.FlagValues()
    flags.define_flags(flag_values)
    return flags.run_config_from_argv_or_exit(["run_metasegnet.py", *words], flag_values)


def mean_iou_printed(stdout):
    match = MEAN_IOU_LINE.match(stdout.rstrip("\n").splitlines()[-1])
    assert match, stdout
    return float(match.group(1))


def read_results(directory):
    """The per-task scores (the original's file) merged with our summary beside them."""
    with open(os.path.join(directory, RESULTS_FILE), encoding="utf-8") as f:
        results = {"task_scores": json.load(f)}
    with open(summary_path(os.path.join(directory, RESULTS_FILE)), encoding="utf-8") as f:
        return {**results, **json.load(f)}


# --- meta-train 2 iterations, then evaluate: the real script ---------------------------

@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    """One subprocess run; returns (completed process, checkpoint dir, its flag words)."""
    checkpoint = tmp_path_factory.mktemp("trained") / "run"
    words = [*data_args(shards), *TRAINING, "--checkpoint", str(checkpoint)]
    result = run_script(words, cwd=checkpoint.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, checkpoint, words


def test_meta_train_then_evaluate_subprocess(trained):
    result, checkpoint, words = trained
    printed = mean_iou_printed(result.stdout)
    files = set(os.listdir(checkpoint))
    assert {"model.ckpt-2.index", "checkpoint", "config.json", RESULTS_FILE} <= files
    assert not any(name.endswith(".tmp") for name in files)
    assert checkpoints.detect(str(checkpoint)).kind is checkpoints.Kind.RUN
    # config.json is the resolved config of these flags, and rebuilds it exactly
    saved = RunConfig.from_json((checkpoint / "config.json").read_text())
    assert saved == config_from_words(words)
    results = read_results(checkpoint)
    assert sorted(results["task_scores"]) == sorted(TEST_CLASSES)
    assert all(len(v) == 2 for v in results["task_scores"].values())  # --eval-samples 2
    scores = [s for v in results["task_scores"].values() for s in v]
    assert all(0 <= s <= 1 for s in scores) and max(scores) > 0.01, scores
    assert printed == pytest.approx(results["mean_iou"], rel=1e-12)
    assert results["ci95"] == pytest.approx(1.96 * np.std(scores) / np.sqrt(len(scores)))


def test_evaluation_reports_progress_per_task(trained):
    """2 test classes x --eval-samples 2: the log says how far evaluation is, with an ETA."""
    result, _, _ = trained
    lines = [line for line in own_stderr_lines(result.stderr) if "test evaluation: " in line]
    assert lines and "test evaluation: 4/4 tasks, " in lines[-1], result.stderr[-3000:]
    assert "ETA" in lines[-1]


def test_periodic_evaluation_line_says_it_is_one_random_task(trained):
    result, _, _ = trained
    lines = [line for line in own_stderr_lines(result.stderr) if re.search(r"\bbatch \d+: ", line)]
    assert lines, result.stderr[-3000:]
    assert re.search(r"batch 2: train\(1 task\)=\d\.\d{4} test\(1 task\)=\d\.\d{4}$",
                     lines[-1]), lines
    # a one-task evaluation logs no progress line of its own
    assert not any("evaluation: 1/1 tasks" in line for line in own_stderr_lines(result.stderr))


# --- --pretrained on that checkpoint, in-process ---------------------------------------

def test_pretrained_reproduces_the_trained_models_scores(trained, tmp_path):
    _, checkpoint, words = trained
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    os.remove(copy / RESULTS_FILE)
    config = config_from_words([*words, "--pretrained", "--checkpoint", str(copy)])
    assert config.pretrained and config.checkpoint == str(copy)
    result = pipeline.run(config)
    expected = read_results(checkpoint)
    assert result.test.task_scores == expected["task_scores"]
    assert result.test.mean_iou == expected["mean_iou"]
    assert read_results(copy)["task_scores"] == expected["task_scores"]
    # --pretrained trains nothing: the checkpoints are untouched
    assert sorted(p.name for p in copy.glob("model.ckpt-*.index")) == ["model.ckpt-2.index"]
    # the training tasks: one random task per repetition, as the original (its
    # --serially_eval_all_test_tasks is for the test tasks only)
    train_scores = result.train.task_scores
    assert sum(len(v) for v in train_scores.values()) == 2  # --eval-samples 2
    assert set(train_scores) <= {f"class_{k}" for k in range(6)}


@pytest.fixture(scope="module")
def fine_tuned(trained, tmp_path_factory):
    """--pretrained --do_not_restore_final_layer_weights --fine-tune-task class_6, in-process;
    returns (result, the run's model, the config, the fine-tuned directory)."""
    _, checkpoint, words = trained
    out = tmp_path_factory.mktemp("fine_tuned")
    config = config_from_words([*words, "--pretrained", "--checkpoint", str(checkpoint),
                                "--do_not_restore_final_layer_weights",
                                "--fine-tune-task", "class_6",
                                "--fine-tuned-checkpoint", str(out / "ft")])
    models = []
    build = pipeline.build
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "build", lambda c: models.append(build(c)) or models[-1])
        result = pipeline.run(config)
    assert len(models) == 1
    return result, models[0], config, out / "ft"


def _weights_of_checkpoint(config, directory):
    model = build_model(config.model)
    checkpoints.restore_weights(model, str(directory))
    return model


def test_do_not_restore_final_layer_weights(fine_tuned, trained):
    _, model, config, _ = fine_tuned
    stored = _weights_of_checkpoint(config, trained[1])
    fresh = pipeline.build(config)  # the seeded initialisation the run started from
    final = {id(v) for v in model.get_layer(model.final_layer_name).trainable_variables}
    assert len(final) == 2
    for var, want, init in zip(model.trainable_variables, stored.trainable_variables,
                               fresh.trainable_variables):
        if id(var) in final:  # kept the fresh final layer, not the trained one
            assert np.array_equal(var.numpy(), init.numpy())
            assert not np.array_equal(var.numpy(), want.numpy())
        else:
            assert np.array_equal(var.numpy(), want.numpy()), var.path
    for var, want in zip(model.non_trainable_variables, stored.non_trainable_variables):
        assert np.array_equal(var.numpy(), want.numpy()), var.path


def test_fine_tune_task_writes_a_loadable_checkpoint(fine_tuned):
    result, model, config, directory = fine_tuned
    assert list(result.test.task_scores) == ["class_6"]
    assert len(result.test.task_scores["class_6"]) == 1
    assert sorted(os.listdir(directory)) == ["class_6"]
    saved = directory / "class_6" / "0"
    assert (saved / "model.ckpt-2.index").exists()  # --eval-iters 2
    rebuilt_config = RunConfig.from_json(json.dumps(checkpoints.read_config(str(saved))))
    assert rebuilt_config == config
    rebuilt = build_model(rebuilt_config.model)
    assert checkpoints.restore_weights(rebuilt, str(saved)) == 2
    # the adapted weights: every trainable weight moved away from the initialisation ...
    for adapted, start in zip(rebuilt.trainable_variables, model.trainable_variables):
        assert adapted.shape == start.shape
        assert not np.array_equal(adapted.numpy(), start.numpy()), start.path
    # ... and they score the task's query set exactly as the evaluation did
    splits = pipeline.load_splits(config, config.data.data_dir)
    store = TaskStore.load(splits.test, config.data.image_size)
    _, _, query_x, query_y = episodes.evaluation_episode(
        store, store.names.index("class_6"), shots=config.eval.shots, seed=config.eval.seed)
    ious = binary_iou(rebuilt(query_x, training=False), query_y).numpy()
    assert np.mean(ious) == pytest.approx(result.test.task_scores["class_6"][0], abs=1e-6)


# --- --pretrained with the authors' TF1 checkpoint directory ---------------------------

def test_tf1_checkpoint_directory_is_detected(tf1_checkpoint, tf1_weights, tmp_path):
    config = RunConfig(model=ModelConfig(rsd=(2, 4)))
    model = pipeline.build(config)
    final = model.get_layer(model.final_layer_name)
    before = final.kernel.numpy().copy()
    pipeline.restore(model, str(tf1_checkpoint), skip_final_layer=True)
    np.testing.assert_array_equal(
        model.get_layer("rsd2_fuse_bn").moving_variance.numpy(),
        tf1_weights["decode/decode_skip_connections_1/batch_normalization_2/moving_variance"])
    assert np.array_equal(final.kernel.numpy(), before)
    pipeline.restore(model, str(tf1_checkpoint), skip_final_layer=False)
    np.testing.assert_array_equal(final.kernel.numpy(),
                                  tf1_weights["decode/final_layer_weights/kernel"])
    # a TF2 checkpoint of something else is neither ours nor the authors'
    foreign = tmp_path / "foreign"
    tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(foreign), 1).save()
    with pytest.raises(MetasegError, match="holds no metaseg or TF1 checkpoint"):
        pipeline.restore(model, str(foreign), skip_final_layer=False)


# --- run.sh ----------------------------------------------------------------------------

def test_run_sh_runs_the_published_command_line(shards, tf1_checkpoint, tmp_path):
    checkpoint = tmp_path / "EfficientLab-6-3_FOMAML-star_checkpoint"
    shutil.copytree(tf1_checkpoint, checkpoint)  # the results file is written beside it
    env = subprocess_env(METASEG_DATA_DIR=str(shards.data_dir),
                         METASEG_CHECKPOINT_DIR=str(checkpoint),
                         METASEG_TEST_CLASSES=str(shards.test_classes))
    result = run_script(["run.sh", "--image_size", "32", "--eval-iters", "1",
                         "--eval-samples", "1"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = mean_iou_printed(result.stdout)
    results = read_results(checkpoint)
    assert sorted(results["task_scores"]) == sorted(TEST_CLASSES)
    assert all(len(v) == 1 for v in results["task_scores"].values())  # later flags win
    assert printed == pytest.approx(results["mean_iou"], rel=1e-12)
    assert "Restored TF1 checkpoint" in result.stderr  # --pretrained, detected as TF1


def test_run_sh_names_what_is_missing(shards, tf1_checkpoint, tmp_path):
    env = subprocess_env(METASEG_DATA_DIR=str(tmp_path / "no_shards"),
                         METASEG_CHECKPOINT_DIR=str(tf1_checkpoint),
                         METASEG_TEST_CLASSES=str(shards.test_classes))
    result = run_script(["run.sh"], cwd=tmp_path, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"run.sh: no FSS-1000 shards at '{tmp_path / 'no_shards'}': download the authors' "
        "shards or convert FSS-1000 with data_tools/fss_1000_image_to_tfrecord.py, then set "
        "METASEG_DATA_DIR"]
    # nothing set, nothing in the working directory: both downloads named, by the original
    # defaults; the test-class list is shipped, so it is never missing
    bare = {k: v for k, v in subprocess_env().items() if not k.startswith("METASEG_")}
    result = run_script(["run.sh"], cwd=tmp_path, env=bare)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 2, result.stderr
    assert "'fewshot_shards/'" in lines[0] and "METASEG_DATA_DIR" in lines[0]
    assert "'EfficientLab-6-3_FOMAML-star_checkpoint'" in lines[1]
    assert "METASEG_CHECKPOINT_DIR" in lines[1]
    assert os.listdir(tmp_path) == []
    # a test-class list that is not there is named
    result = run_script(["run.sh"], cwd=tmp_path,
                        env=dict(env, METASEG_TEST_CLASSES=str(tmp_path / "nope.txt")))
    assert result.returncode == 2
    assert f"run.sh: no test-class list '{tmp_path / 'nope.txt'}'" in result.stderr


def test_run_sh_uses_the_shipped_fss1000_test_classes_by_default(shards, tf1_checkpoint,
                                                                 tmp_path):
    """Unset METASEG_TEST_CLASSES means the authors' 240 test classes: on shards without
    them the run stops naming the first of that list, not a missing file."""
    env = {k: v for k, v in subprocess_env().items() if k != "METASEG_TEST_CLASSES"}
    env.update(METASEG_DATA_DIR=str(shards.data_dir), METASEG_CHECKPOINT_DIR=str(tf1_checkpoint))
    result = run_script(["run.sh", "--image_size", "32"], cwd=tmp_path, env=env)
    assert result.returncode == 2 and result.stdout == ""
    lines = own_stderr_lines(result.stderr)
    assert lines[-1].startswith(
        "error: 240 test classes have no shard among the 8 candidate tasks: bus, hotel_slipper, "
        ), result.stderr[-2000:]


# --- bad input: one line, exit 2, nothing written --------------------------------------

def test_no_data_subprocess_one_line_exit_2(tmp_path):
    result = run_script(["--image_size", "32"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = own_stderr_lines(result.stderr)
    assert lines == [
        "error: no data: pass --data-dir DIR (a folder of <class>.tfrecord.gzip shards) or "
        "--dataset synthetic for the embedded benchmark; see the README quickstart: "
        "python run_metasegnet.py --flagfile flags/quickstart.flags"], result.stderr
    assert result.stderr.splitlines()[-1] == lines[0]
    assert os.listdir(tmp_path) == []  # not even the default --checkpoint model_checkpoint/


def _config(shards, checkpoint, **changes):
    data = dict(data_dir=str(shards.data_dir), image_size=32,
                test_tasks_file=str(shards.test_classes))
    data.update(changes.pop("data", {}))
    return RunConfig(data=DataConfig(**data), checkpoint=str(checkpoint),
                     eval=EvalConfig(**changes.pop("eval", {})), **changes)


def _fails(config, *fragments):
    with pytest.raises(MetasegError) as info:
        pipeline.run(config)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_data_inputs_in_process(shards, tmp_path):
    out = tmp_path / "out"
    _fails(_config(shards, out, data={"data_dir": None}), "--data-dir",
           "--dataset synthetic", "flags/quickstart.flags")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(_config(shards, out, data={"data_dir": str(empty)}), f"data directory {empty} is empty")
    (empty / "notes.txt").write_text("no shards here")
    _fails(_config(shards, out, data={"data_dir": str(empty)}), "holds no *.tfrecord.gzip shards")
    _fails(_config(shards, out, data={"data_dir": str(tmp_path / "missing")}), "does not exist")
    split = tmp_path / "split.txt"
    split.write_text("class_6\nunicorn\nclass_0x\n")
    _fails(_config(shards, out, data={"test_tasks_file": str(split)}),
           "2 test classes have no shard", "unicorn, class_0x")
    # --shots 8 + 5 queries = 13 > the 12 examples of each test class
    _fails(_config(shards, out, eval={"shots": 8}), "13 examples", "class_6 (12)",
           "class_7 (12)")
    # --train_list needs shards that store image keys (these were written without)
    listed = tmp_path / "train_5.txt"
    listed.write_text("class_0/1\n")
    _fails(_config(shards, out, data={"train_list": str(listed)}), "store no image keys",
           "re-convert with a current converter")
    assert sorted(os.listdir(tmp_path)) == ["empty", "split.txt", "train_5.txt"]  # no out/


def test_unwritable_checkpoint_directory(shards, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    _fails(_config(shards, a_file / "run"), f"--checkpoint directory {a_file}/run is not "
           f"writable ({a_file} is not a writable directory)")
    _fails(_config(shards, a_file), f"--checkpoint directory {a_file} is not writable")
    assert os.listdir(tmp_path) == ["a_file"] and a_file.read_text() == ""


def test_pretrained_without_a_checkpoint(shards, tmp_path):
    empty = tmp_path / "empty_checkpoint"
    empty.mkdir()
    _fails(_config(shards, empty, pretrained=True), f"--checkpoint {empty} holds no metaseg "
                                                    "or TF1 checkpoint")
    assert os.listdir(empty) == []
    _fails(_config(shards, tmp_path / "typo", pretrained=True), "holds no metaseg or TF1")
    assert os.listdir(tmp_path) == ["empty_checkpoint"]


def test_fine_tune_task_that_is_not_in_the_data(shards, trained, tmp_path):
    config = _config(shards, trained[1], pretrained=True, fine_tune_task="unicorn",
                     fine_tuned_checkpoint=str(tmp_path / "ft"))
    _fails(config, "--fine-tune-task 'unicorn' is not a task in the data")
    assert os.listdir(tmp_path) == []
