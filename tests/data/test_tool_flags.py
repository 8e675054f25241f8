"""Flag mistakes on the data tools end in one ``error:`` line and exit 2, as
``run_metasegnet.py`` (the same parser, ``metaseg.flags.argv.parse_flags_or_exit``), not
absl's ``FATAL Flags parsing error`` and exit 1."""
import os
import pathlib
import subprocess
import sys

import pytest

from tests.cli.conftest import own_stderr_lines
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]

CASES = {
    "converter: flag without its value": (
        "fss_1000_image_to_tfrecord.py", ["--input_dir"],
        "error: Missing value for flag --input_dir"),
    "synthetic: not a number": (
        "make_synthetic_fss.py", ["--output_dir", "x", "--num_classes", "abc"],
        "error: flag --num_classes=abc: invalid literal for int() with base 10: 'abc'"),
    "pseudo-tasks: misspelt flag": (
        "make_pseudo_tasks.py", ["--input_dir", "a", "--output_dir", "b", "--num_cluster", "5"],
        "error: Unknown command line flag 'num_cluster'. Did you mean: --num_clusters ?"),
    "fraction list: required flags missing": (
        "make_fraction_list.py", ["--fraction", "0.1"],
        "error: flag --input_dir=None: Flag --input_dir must have a value other than None."),
    "PASCAL-5i: stray word": (
        "pascal5i_to_tfrecord.py", ["--voc_dir", "v", "--output_dir", "o", "--overwrite",
                                    "False"],
        "error: unexpected argument 'False': --overwrite is a switch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_flag_mistakes_are_one_error_line_and_exit_2(case, tmp_path):
    script, args, expected = CASES[case]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(REPO / "data_tools" / script), *args],
                            capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=time_limit(120))
    assert result.returncode == 2, result.stderr
    lines = own_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert "FATAL" not in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []  # nothing written
