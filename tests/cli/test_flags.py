"""The flag layer: every original flag in both spellings, defaults from FLAGS.md, the published
command line, flagfiles, and one-line exits for every kind of bad input."""

import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags as absl_flags

from metaseg import flags
from metaseg.config import ModelConfig, RunConfig
from metaseg.errors import ConfigError
from metaseg.resources import ORIGINAL_FLAGS, resource_path
from tests.cli.conftest import own_stderr_lines, subprocess_env
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]

# The original run.sh's command line (REFERENCE.md section 10), word for word.
PUBLISHED = (
    "--data-dir fewshot_shards --checkpoint EfficientLab-6-3_FOMAML-star_checkpoint "
    "--pretrained --rsd 2 4 --feature_extractor_name efficientnet-b0 --l2 --foml --foml-tail 5 "
    "--final_layer_dropout_rate 0.5 --augment --aug_rate 0.5 --sgd --loss_name bce_dice "
    "--inner-batch 8 --learning-rate 0.0005 --train-shots 10 --inner-iters 59 "
    "--learning_rate_scheduler fixed --meta-batch 5 --meta-step 0.1 --meta-step-final 0.00001 "
    "--meta-iters 50000 --eval-interval 500 --serially_eval_all_test_tasks --eval-samples 2 "
    "--shots 5 --eval-batch 8 --eval-iters 59 --transductive --image_size 224 --fss_1000"
).split()

ABSL_TYPES = {"str": "string", "bool": "bool", "int": "int", "float": "float",
              "int list": "int list"}


def _flags_md_rows():
    """``[(name, type, default text)]`` from the shipped table of the original's flags."""
    rows = []
    for line in resource_path(ORIGINAL_FLAGS).read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if re.match(r"--[a-z]", cells[0]):
            rows.append((cells[0][2:], cells[1], cells[2]))
    assert len(rows) > 70, "flag table not found"
    return rows


def _md_value(kind, text):
    """A FLAGS.md default cell as a Python value of the flag's type."""
    if text == "none":
        return None
    return {"bool": lambda t: {"false": False, "true": True}[t], "int": int, "float": float,
            "str": str}[kind](text)


def _other_spelling(name):
    if "-" in name:
        return name.replace("-", "_")
    return name.replace("_", "-") if "_" in name else None


@pytest.fixture
def fv():
    """A fresh FlagValues with every metaseg flag defined (absl's global FLAGS untouched)."""
    flag_values = absl_flags.FlagValues()
    flags.define_flags(flag_values)
    return flag_values


def _config(fv, words):
    return flags.run_config_from_argv_or_exit(["prog", *words], fv)


# --- names, types, defaults ---------------------------------------------------------------

def test_flags_md_types_and_defaults(fv):
    for name, kind, default in _flags_md_rows():
        assert name in fv, f"--{name} of FLAGS.md is not defined"
        assert fv[name].flag_type() == ABSL_TYPES[kind], name
        assert fv[name].default == _md_value(kind, default), name


NEW_FLAGS = {"dataset", "test_tasks_file", "val_tasks_file", "backbone_weights",
             "drop_small_tasks", "jit_compile", "reset_state_per_task", "checkpoint_every",
             "keep_checkpoints", "save_predictions_dir", "compare_random_init", "eval_train_tasks", "synthetic_num_classes",
             "synthetic_examples_per_class", "synthetic_image_size", "cache_dir", "train_list",
             "distribution_strategy", "num_cpu_devices", "tpu",
             "tfds_data_dir", "carry_over", "concurrent_tasks"}


def test_flag_set_is_flags_md_plus_the_new_ones():
    names = [spec.name for spec in flags.FLAG_SPECS]
    original = {name for name, _, _ in _flags_md_rows()}
    assert set(names) == original | NEW_FLAGS and not original & NEW_FLAGS
    # No two flags may differ only by hyphen/underscore: both spellings must stay unambiguous.
    assert len({name.replace("-", "_") for name in names}) == len(names)


def test_every_flag_has_help_and_a_known_kind():
    for spec in flags.FLAG_SPECS:
        assert spec.help.strip() and spec.kind in ABSL_TYPES, spec.name


def test_default_flags_give_default_config(fv):
    assert _config(fv, []) == RunConfig()


@pytest.mark.parametrize("words, carry_over, reset", [
    ([], None, False),  # chosen by the strategy: sequential on one device, mean with several
    (["--carry_over", "mean"], "mean", False),
    (["--carry-over=sequential"], "sequential", False),
    (["--reset_state_per_task"], None, True),  # the older spelling of reset
    (["--reset_state_per_task", "--carry_over", "reset"], "reset", True),
])
def test_carry_over_flag_and_its_older_spelling(fv, words, carry_over, reset):
    meta = _config(fv, words).meta
    assert (meta.carry_over, meta.reset_state_per_task) == (carry_over, reset)


def test_cache_dir_default_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("METASEG_CACHE", str(tmp_path))
    flag_values = absl_flags.FlagValues()
    flags.define_flags(flag_values)
    assert flag_values["cache_dir"].default == str(tmp_path)


def test_define_flags_is_idempotent(fv):
    flags.define_flags(fv)
    assert len([n for n in fv if n == "meta-iters"]) == 1


def _example(kind):
    """Command-line words for a flag of ``kind`` and the value absl should hold."""
    return {"str": (["x"], "x"), "int": (["3"], 3), "float": (["0.25"], 0.25),
            "bool": ([], True), "int list": (["2", "4"], [2, 4])}[kind]


def test_every_flags_md_flag_accepted_in_both_spellings():
    for name, kind, _ in _flags_md_rows():
        words, expected = _example(kind)
        for spelling in filter(None, (name, _other_spelling(name))):
            flag_values = absl_flags.FlagValues()
            flags.define_flags(flag_values)
            flags.parse_flags(["prog", f"--{spelling}", *words], flag_values)
            assert flag_values[name].value == expected, spelling
            assert flag_values[name].present == 1, spelling


def test_equals_form_and_negation_in_both_spellings(fv):
    flags.parse_flags(["prog", "--meta_iters=7", "--eval-batch=3", "--no-augment", "--no_l2",
                       "--nofoml", "--fine_tune_task=cat", "--fine-tuned-checkpoint", "out"], fv)
    assert (fv["meta-iters"].value, fv["eval-batch"].value) == (7, 3)
    assert not (fv["augment"].value or fv["l2"].value or fv["foml"].value)
    assert (fv["fine-tune-task"].value, fv["fine-tuned-checkpoint"].value) == ("cat", "out")


# --- the published command line, lists, flagfiles ----------------------------------------

def test_published_command_line(fv):
    default = RunConfig()
    replace = dataclasses.replace
    expected = replace(
        default, checkpoint="EfficientLab-6-3_FOMAML-star_checkpoint", pretrained=True,
        data=replace(default.data, data_dir="fewshot_shards", image_size=224, fss_1000=True),
        model=replace(default.model, rsd=(2, 4), feature_extractor_name="efficientnet-b0",
                      final_layer_dropout_rate=0.5),
        inner=replace(default.inner, l2=True, augment=True, aug_rate=0.5, sgd=True,
                      loss_name="bce_dice", learning_rate=0.0005, learning_rate_scheduler="fixed"),
        meta=replace(default.meta, algorithm="fomaml", foml_tail=5, inner_batch=8, train_shots=10,
                     inner_iters=59, meta_batch=5, meta_step=0.1, meta_step_final=1e-5,
                     meta_iters=50000, eval_interval=500),
        eval=replace(default.eval, serially_eval_all_test_tasks=True, eval_samples=2, shots=5,
                     eval_batch=8, eval_iters=59, transductive=True))
    assert _config(fv, PUBLISHED) == expected


@pytest.mark.parametrize("words", [["--rsd", "2", "4"], ["--rsd=2,4"], ["--rsd", "2,4"],
                                   ["--rsd", "2", "4", "--l2"], ["--rsd", "2", "--rsd", "2", "4"]])
def test_rsd_list_forms_agree(fv, words):
    assert _config(fv, words).model.rsd == (2, 4)


def test_k_shot_iter_range_space_separated(fv):
    config = _config(fv, ["--k_shot_iter_range", "1", "5", "10", "--shots", "5"])
    assert config.kshot.iter_range == (1, 5, 10) and config.eval.shots == 5


def test_normalize_argv_leaves_values_and_tail_alone(fv):
    argv = ["prog", "--learning_rate", "-1e-3", "--fine-tune-task", "--odd-name",
            "--image-size=224", "--", "--meta_iters", "x"]
    assert flags.normalize_argv(argv, fv) == [
        "prog", "--learning-rate", "-1e-3", "--fine-tune-task", "--odd-name",
        "--image_size=224", "--", "--meta_iters", "x"]


def test_flagfile_with_both_spellings(fv, tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_text("--train_shots=6\n")
    outer = tmp_path / "run.flags"
    outer.write_text(f"# a comment\n--meta_iters=7\n--meta-batch 3\n--rsd 2 4\n--image-size=224\n"
                     f"--foml\n--data_dir /data/some dir\n--flagfile={inner}\n")
    config = _config(fv, ["--flagfile", str(outer), "--meta-batch=4"])
    assert (config.meta.meta_iters, config.meta.meta_batch, config.meta.train_shots) == (7, 4, 6)
    assert config.model.rsd == (2, 4) and config.data.image_size == 224
    assert config.meta.algorithm == "fomaml" and config.data.data_dir == "/data/some dir"


# --- configs ------------------------------------------------------------------------------

def test_mapped_flags(fv):
    config = _config(fv, ["--disable_rsd_residual_connections", "--seed", "9",
                          "--optimize_update_hyperparms_on_val_set", "--num_val_tasks", "4",
                          "--run_k_shot_learning_curves_experiment", "--uho_estimator", "GP",
                          "--n_unet_encoding_stacks", "3", "--dataset", "synthetic",
                          "--synthetic_examples_per_class", "12", "--cache_dir", "/c"])
    assert config.model.rsd_residual is False and config.meta.algorithm == "reptile"
    assert (config.seed, config.meta.seed, config.eval.seed) == (9, 9, 9)
    assert config.uho.enabled and config.kshot.enabled and config.n_unet_encoding_stacks == 3
    assert config.synthetic.examples_per_class == 12 and config.synthetic.cache_dir == "/c"


def test_train_list_flag(fv):
    config = _config(fv, ["--train_list", "lists/train_5.txt"])
    assert config.data.train_list == "lists/train_5.txt"
    assert RunConfig.from_json(config.to_json()) == config
    assert RunConfig().data.train_list is None


def test_run_config_json_round_trip(fv):
    config = _config(fv, PUBLISHED + ["--k_shot_iter_range", "3", "4"])
    again = RunConfig.from_json(config.to_json())
    assert again == config and again.model.rsd == (2, 4) and again.kshot.iter_range == (3, 4)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"model": {"rsd": [2, 4], "colour": 1}}', "colour"),
    ('{"extra": 1}', "extra"),
    ('{"model": {"rsd": [9]}}', "--rsd"),
])
def test_run_config_from_bad_json(text, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_json(text)


def test_library_validates_without_flags():
    with pytest.raises(ConfigError, match="--final_layer_dropout_rate"):
        ModelConfig(final_layer_dropout_rate=1.0)


# --- bad input: one line, exit 2 ----------------------------------------------------------

BAD = [
    (["--meta_itres", "5"], "Did you mean: --meta_iters"),
    (["--meta-itres", "5"], "Did you mean: --meta-iters"),
    (["--lsd", "2", "4"], "--rsd"),
    (["--meta-iters", "abc"], "--meta-iters=abc"),
    (["--learning_rate", "fast"], "--learning-rate=fast"),
    (["--rsd", "2", "x"], "expected integers"),
    (["--rsd"], "Missing value for flag --rsd"),
    (["--meta-iters", "0"], "--meta-iters must be positive"),
    (["--inner-iters", "-1"], "--inner-iters must be positive"),
    (["--meta-step", "-0.1"], "--meta-step must be >= 0"),
    (["--learning-rate", "0"], "--learning-rate must be positive"),
    (["--foml", "--foml-tail", "5"],
     "--foml-tail (5) must be smaller than --train-shots (5)"),
    (["--image_size", "100"], "--image_size must be a multiple of 16"),
    (["--aug_rate", "1.5"], "--aug_rate"),
    (["--feature_extractor_name", "efficientnet-b7"], "--feature_extractor_name"),
    (["--loss_name", "focal"], "--loss_name"),
    (["--learning_rate_scheduler", "linear"], "--learning_rate_scheduler"),
    (["--classes", "2"], "--classes must be 1"),
    (["--foml-tail", "2"], "--foml-tail needs --foml"),
    (["--eval_val_tasks"], "--eval_val_tasks needs validation tasks"),
    (["--eval_val_tasks", "--num_val_tasks", "0"], "--num_val_tasks > 0"),
    (["--optimize_update_hyperparms_on_val_set"], "--num_val_tasks > 0"),
    (["--max_steps", "3", "--min_steps", "5"], "--max_steps (3) must be >= --min_steps (5)"),
    (["--optimize_update_hyperparms_on_val_set", "--num_val_tasks", "2",
      "--num_configs_to_sample", "1"], "--num_configs_to_sample must be >= 2"),
    # A reversed range is swapped with a warning (as the original); a searched range
    # starting at 0 cannot be sampled on a log scale.
    (["--drop_rate_search_range_low", "0", "--drop_rate_search_range_high", "0.5"],
     "--drop_rate_search_range_low/high: a searched range needs low > 0 (log scale)"),
    (["--replacement", "--inner-batch", "9"], "--inner-batch (9) must be <= --train-shots (5)"),
    (["--replacement", "--foml", "--foml-tail", "2", "--inner-batch", "4"],
     "--train-shots minus --foml-tail (3)"),
    (["--replacement", "--inner-batch", "4", "--eval-batch", "8"], "--eval-batch (8)"),
    (["--fine-tune-task", "cat"], "--fine-tuned-checkpoint"),
    (["--carry_over", "last"], "--carry_over must be one of sequential, reset, mean, got 'last'"),
    (["--reset_state_per_task", "--carry_over", "mean"],
     "--reset_state_per_task means --carry_over reset, which contradicts --carry_over mean"),
    (["--dataset", "synthetic", "--synthetic_examples_per_class", "8"],
     "--synthetic_examples_per_class (8) must be >= 10"),
    (["--dataset", "imagenet"], "--dataset"),
    (["--backbone_weights", "coco"], "--backbone_weights"),
    (["--uho_estimator", "RF"], "--uho_estimator"),
    (["--flagfile", "/nonexistent/run.flags"], "Unable to open flagfile"),
    (["stray"], "unexpected argument 'stray': every setting is a --flag (see --helpfull)"),
    (["--augment", "False"], "unexpected argument 'False': --augment is a switch and takes no "
                             "value ('False' is not read); write --augment to turn it on, "
                             "--noaugment to turn it off"),
]


def _assert_one_line_exit(capsys, call, message):
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err


@pytest.mark.parametrize("words, message", BAD)
def test_bad_input_one_line_exit_2(fv, capsys, words, message):
    _assert_one_line_exit(capsys, lambda: _config(fv, words), message)


@pytest.mark.parametrize("words, message", BAD[:7])
def test_parse_flags_or_exit_one_line(fv, capsys, words, message):
    _assert_one_line_exit(capsys, lambda: flags.parse_flags_or_exit(["prog", *words], fv),
                          message)


# --- as a script: absl's app.run and global FLAGS ------------------------------------------

SCRIPT = """
from absl import app
from metaseg import flags
flags.define_flags()
def main(argv):
    config = flags.to_run_config()
    print(config.meta.meta_iters, config.model.rsd, argv[1:])
app.run(main, flags_parser=flags.parse_flags_or_exit)
"""


def _run_script(*words):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", SCRIPT, *words], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=time_limit(60))


def test_script_with_absl_app():
    good = _run_script("--meta_iters", "3", "--rsd", "2", "4", "--verbosity", "0")
    assert good.returncode == 0 and good.stdout.split() == ["3", "(2,", "4)", "[]"], good.stderr
    bad = _run_script("--meta-iters", "abc")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "error: flag --meta-iters=abc: invalid literal for int() with base 10: 'abc'"]


# --- stray words: refused by parse_flags itself, so every script using it refuses them ----

@pytest.mark.parametrize("words, message", [
    (["--augment", "False"], "unexpected argument 'False': --augment is a switch and takes no "
                             "value ('False' is not read); write --augment to turn it on, "
                             "--noaugment to turn it off"),
    (["--no-augment", "true"], "unexpected argument 'true': --noaugment is a switch"),
    (["--l2", "0", "--meta-iters", "3"], "write --l2 to turn it on, --nol2 to turn it off"),
    (["--augment", "0.5"], "--augment is a switch and takes no value ('0.5' is not read)"),
    (["--meta-iters", "3", "runs/x"], "unexpected argument 'runs/x': every setting is a "
                                      "--flag (see --helpfull)"),
    (["false", "x"], "unexpected arguments 'false', 'x': every setting is a --flag (see "
                     "--helpfull); switches take no value: write --NAME to turn one on, "
                     "--noNAME to turn it off (e.g. --noaugment)"),
    (["--", "--augment"], "unexpected argument '--augment'"),
])
def test_parse_flags_refuses_stray_words(fv, words, message):
    with pytest.raises(flags.argv.StrayArgumentError) as error:
        flags.parse_flags(["prog", *words], fv)
    assert message in str(error.value)


def test_boolean_values_in_the_equals_form_still_work(fv):
    assert flags.parse_flags(["prog", "--augment=false", "--l2=True"], fv) == ["prog"]
    assert not fv["augment"].value and fv["l2"].value


@pytest.mark.parametrize("command", [["run_metasegnet.py"], ["-m", "metaseg.joint_train"]])
@pytest.mark.parametrize("words, message", [
    (["--augment", "False"], "error: unexpected argument 'False': --augment is a switch and "
                             "takes no value ('False' is not read); write --augment to turn it "
                             "on, --noaugment to turn it off"),
    (["quickstart"], "error: unexpected argument 'quickstart': every setting is a --flag (see "
                     "--helpfull)"),
])
def test_scripts_refuse_stray_words_in_one_line(tmp_path, command, words, message):
    """What a user types after the quickstart flagfile; exit 2, one line, nothing written."""
    if command[0].endswith(".py"):
        command = [str(REPO / command[0])]
    flagfile = str(REPO / "flags" / "quickstart.flags")
    result = subprocess.run([sys.executable, *command, "--flagfile", flagfile, *words],
                            capture_output=True, text=True, cwd=tmp_path,
                            env=subprocess_env(METASEG_CACHE=str(tmp_path / "cache")),
                            timeout=time_limit(120))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr[-2000:]
    assert own_stderr_lines(result.stderr) == [message]
    assert os.listdir(tmp_path) == []
