"""A mistake in a config field is named in each command's own spelling: the library raises a
``FieldError`` carrying the field (``metaseg.specs`` owns the rule), and ``run_metasegnet.py``
(through ``flags``) and ``metaseg`` each turn the field into their flag."""
import subprocess
import sys

import pytest

from metaseg import flags
from metaseg.config import EvalConfig, InnerConfig, MetaConfig, RunConfig
from metaseg.errors import FieldError, named_as
from tests.cli.conftest import own_stderr_lines, run_script, subprocess_env
from tests.conftest import time_limit


def test_too_few_steps_is_eval_iters_in_one_command_and_steps_in_the_other(shards, tmp_path):
    """The number of inner steps of an evaluation adaptation: --eval-iters to
    run_metasegnet.py, --steps to metaseg adapt; negative is one line and exit 2 in both."""
    run = run_script(["--data-dir", str(shards.data_dir), "--image_size", "32",
                      "--eval-iters", "-1", "--checkpoint", str(tmp_path / "run")],
                     cwd=tmp_path, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert own_stderr_lines(run.stderr) == ["error: --eval-iters must be >= 0, got -1"]
    (tmp_path / "support").mkdir()
    (tmp_path / "query").mkdir()
    adapt = subprocess.run(
        [sys.executable, "-m", "metaseg", "adapt", "--init", "quickstart_b0_64",
         "--support", str(tmp_path / "support"), "--query", str(tmp_path / "query"),
         "--output", str(tmp_path / "out"), "--steps", "-1"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path,
        timeout=time_limit(120))
    assert adapt.returncode == 2, adapt.stderr[-2000:]
    assert own_stderr_lines(adapt.stderr) == ["error: --steps must be >= 0, got -1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["query", "support"]  # nothing written


@pytest.mark.parametrize("build, field, run_metasegnet", [
    (lambda: RunConfig(inner=InnerConfig(replacement=True), meta=MetaConfig(inner_batch=9)),
     "meta.inner_batch", "--inner-batch (9) must be <= --train-shots (5) with --replacement"),
    (lambda: RunConfig(inner=InnerConfig(replacement=True), meta=MetaConfig(inner_batch=2),
                       eval=EvalConfig(shots=3, eval_batch=4)),
     "eval.eval_batch", "--eval-batch (4) must be <= --shots (3) with --replacement"),
    (lambda: RunConfig(meta=MetaConfig(algorithm="fomaml", train_shots=4, foml_tail=4)),
     "meta.foml_tail", "--foml-tail (4) must be smaller than --train-shots (4)"),
])
def test_the_library_names_the_field_and_flags_spells_it(build, field, run_metasegnet):
    with pytest.raises(FieldError) as info:
        build()
    assert info.value.field == field
    assert field in str(info.value) and "--" not in str(info.value)  # a library user's view
    with pytest.raises(FieldError) as info:
        with named_as(flags.flag_for_field):
            build()
    assert str(info.value).startswith(run_metasegnet) and info.value.field == field
