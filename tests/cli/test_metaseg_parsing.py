"""``metaseg`` parses its arguments before TensorFlow loads, refuses flag prefixes and
suggests the flag meant, each mistake in one ``error:`` line with exit code 2."""
import subprocess
import sys
import textwrap

import pytest

from tests.cli.conftest import REPO, subprocess_env
from tests.conftest import time_limit

# Runs `metaseg ARGV` in this process and prints, after it, whether TensorFlow was imported.
PROBE = textwrap.dedent("""
    import sys
    from metaseg.__main__ import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
    print("exit", code, "tensorflow", "tensorflow" in sys.modules, "keras" in sys.modules)
""")


def metaseg(*argv):
    """(stdout lines, stderr lines) of ``metaseg ARGV`` run by PROBE in a subprocess."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                            text=True, env=subprocess_env(), cwd=REPO,
                            timeout=time_limit(120))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines(), result.stderr.splitlines()


ADAPT = ["adapt", "--init", "init", "--support", "support", "--query", "query",
         "--output", "out"]


@pytest.mark.parametrize("argv", [["--help"], ["adapt", "--help"], ["predict", "--help"],
                                  ["export", "--help"], ["info", "--help"],
                                  ["app", "--help"], ["preset", "--help"]])
def test_help_imports_no_tensorflow(argv):
    out, _ = metaseg(*argv)
    assert out[0].startswith("usage: metaseg")
    assert out[-1] == "exit 0 tensorflow False False"


# argv -> the one error line, exactly (a mistake is named before anything is opened)
MISTAKES = [
    (ADAPT + ["--step", "5"],
     "error: metaseg adapt: unrecognized arguments: --step (did you mean --steps?) "
     "(see metaseg adapt --help)"),
    # an unknown flag is named even when required flags are missing too
    (["adapt", "--init", "x", "--learning-rate", "0.1"],
     "error: metaseg adapt: unrecognized arguments: --learning-rate (did you mean "
     "--learning_rate?) (see metaseg adapt --help)"),
    (["predict", "--model", "m", "--input", "i", "--output", "o", "--batch=4"],
     "error: metaseg predict: unrecognized arguments: --batch=4 (did you mean --batch_size?) "
     "(see metaseg predict --help)"),
    (["adpat"] + ADAPT[1:],
     "error: metaseg: argument COMMAND: invalid choice: 'adpat' (choose from "),
    (["export", "--model", "m", "--format", "keras3", "--output", "o.keras"],
     "error: metaseg export: argument --format: invalid choice: 'keras3' (choose from "
     "'keras', 'saved_model'"),
    (["info", "checkpoint", "stray"],
     "error: metaseg info: unrecognized arguments: stray (see metaseg info --help)"),
]


@pytest.mark.parametrize("argv,expected", MISTAKES, ids=[" ".join(a[:3]) for a, _ in MISTAKES])
def test_mistake_is_one_line_without_tensorflow(argv, expected):
    out, err = metaseg(*argv)
    assert out == ["exit 2 tensorflow False False"]
    assert len(err) == 1 and err[0].startswith(expected), err
    if argv[0] == "adpat":
        assert err[0].endswith("(did you mean adapt?) (see metaseg --help)")
    if argv[0] == "export":
        assert err[0].endswith("(did you mean keras?) (see metaseg export --help)")


def test_prefix_of_a_flag_is_not_the_flag():
    """argparse would read --step as --steps and go on to open --init: it must refuse."""
    _, err = metaseg(*ADAPT, "--step", "5")
    assert "unrecognized arguments: --step" in err[0]
    _, err = metaseg(*ADAPT[:-2], "--out", "o")
    assert err[0].startswith("error: metaseg adapt: unrecognized arguments: --out (did you "
                             "mean --output?)")
