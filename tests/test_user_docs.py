"""What users read never cites the reference notes they do not have (REFERENCE.md)."""
import ast
import json
import pathlib
import shlex

from absl import flags as absl_flags

from metaseg import flags
from metaseg import joint_train

REPO = pathlib.Path(__file__).resolve().parents[1]
CODE = [*sorted((REPO / "metaseg").rglob("*.py")), *sorted((REPO / "data_tools").rglob("*.py")),
        REPO / "run_metasegnet.py"]


def _docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                yield body[0].value


def test_no_message_or_help_text_cites_reference_md():
    """String literals other than docstrings are what users see: help, log and error lines."""
    cited = []
    for path in CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node) for node in _docstrings(tree)}
        cited += [f"{path.relative_to(REPO)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings and "REFERENCE" in node.value]
    assert len(CODE) > 50 and cited == []


def test_readme_and_run_sh_do_not_cite_reference_md():
    for name in ("README.md", "run.sh"):
        assert "REFERENCE" not in (REPO / name).read_text(encoding="utf-8"), name


def _bash_commands(section):
    """The commands of the first bash block under README heading ``section``: one word list
    per command, backslash continuations joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(f"\n{section}\n", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()]


def test_readme_evaluates_the_joint_baseline_at_the_studys_fair_step_size():
    """The documented joint-training commands are the study's: its training recipe, and the
    fine-tuning step size the study chose for joint-trained weights on validation classes."""
    # The single-seed run with all four initialisations, which the README's baseline follows.
    study = json.loads((REPO / "studies" / "learning_signal" / "single_seed_four_inits"
                        / "results.json").read_text())
    train, evaluate = _bash_commands("### Joint-training baseline")
    assert train[:3] == ["python", "-m", "metaseg.joint_train"]
    flag_values = absl_flags.FlagValues()
    joint_train.define_flags(flag_values)
    flags.parse_flags(["joint_train", *train[3:]], flag_values)
    joint = joint_train.config_from_flags(flag_values)
    assert (joint.epochs, joint.batch_size) == (study["budget"]["joint_epochs"],
                                                study["budget"]["joint_batch"])
    assert not joint.run.inner.sgd  # Adam, as the study
    assert joint.run.inner.learning_rate == study["settings"]["joint_learning_rate"]
    assert evaluate[:2] == ["python", "run_metasegnet.py"]
    flag_values = absl_flags.FlagValues()
    flags.define_flags(flag_values)
    config = flags.run_config_from_argv_or_exit(["run_metasegnet.py", *evaluate[2:]],
                                                flag_values)
    assert config.pretrained and config.checkpoint == joint.run.checkpoint
    assert config.inner.learning_rate == study["learning_rates"]["joint"]["learning_rate"]


def test_readme_says_where_the_published_evaluations_inputs_come_from():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n### The published evaluation\n", 1)[1].split("\n### ", 1)[0]
    for source in ("https://github.com/ml4ai/mliis", "EfficientLab-6-3_FOMAML-star_checkpoint",
                   "https://drive.google.com/open?id=1aGHP0ev_1eAFSnYtN0ObDI-DnB0TsQUU",
                   "https://github.com/HKUSTCV/FSS-1000",
                   "metaseg/resources/fss1000_test_classes.txt"):
        assert source in section, source
    assert (REPO / "metaseg" / "resources" / "fss1000_test_classes.txt").is_file()
    assert "metaseg/resources/fss1000_test_classes.txt" in (REPO / "run.sh").read_text()
