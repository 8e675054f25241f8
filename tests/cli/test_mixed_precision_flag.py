"""--mixed_precision: a flag of ModelConfig; a bad value ends in one error line, exit 2."""
import pytest
from absl import flags as absl_flags

import flags
from metaseg.config import ModelConfig

from tests.cli.conftest import own_stderr_lines, run_script


@pytest.fixture
def fv():
    flag_values = absl_flags.FlagValues()
    flags.define_flags(flag_values)
    return flag_values


@pytest.mark.parametrize("value", ["fp32", "bf16"])
def test_values_reach_model_config(fv, value):
    config = flags.run_config_from_argv_or_exit(["prog", f"--mixed_precision={value}"], fv)
    assert config.model.mixed_precision == value


def test_default_is_fp32(fv):
    assert flags.run_config_from_argv_or_exit(["prog"], fv).model == ModelConfig()
    assert ModelConfig().mixed_precision == "fp32"


def test_bad_value_one_line_exit_2_in_process(fv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        flags.run_config_from_argv_or_exit(["prog", "--mixed_precision", "fp16x"], fv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("error: --mixed_precision must be one of fp32, bf16, "
                                 "got 'fp16x'\n")


def test_bad_value_one_line_exit_2_subprocess(tmp_path):
    result = run_script(["--mixed_precision", "fp16x", "--dataset", "synthetic"], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert own_stderr_lines(result.stderr) == [
        "error: --mixed_precision must be one of fp32, bf16, got 'fp16x'"], result.stderr
    assert list(tmp_path.iterdir()) == []
