"""A half-written or truncated checkpoint (its .data file missing or short) is one
``error:`` line with exit code 2 in every command that reads checkpoints: ``--pretrained``,
``metaseg adapt --init``, ``metaseg info`` and ``make_pseudo_tasks.py --backbone DIR``."""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.cli.conftest import REPO, own_stderr_lines, run_script, subprocess_env
from tests.cli.test_resume import TIMEOUT, words

DAMAGES = ("missing", "short")


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    """A checkpoint directory meta-training wrote (2 iterations, 32 px, --rsd 2 4)."""
    checkpoint = tmp_path_factory.mktemp("trained") / "run"
    result = run_script(words(shards, checkpoint), cwd=checkpoint.parent, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return checkpoint


def damaged_copy(trained, tmp_path, damage):
    """A copy of ``trained`` whose newest checkpoint lost its .data file or its second half."""
    target = tmp_path / f"{damage}_checkpoint"
    shutil.copytree(trained, target)
    (data,) = glob.glob(str(target / "model.ckpt-2.data-*"))
    if damage == "missing":
        os.remove(data)
    else:
        os.truncate(data, os.path.getsize(data) // 2)
    return target


def images(directory, count, masks=False):
    directory.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(directory / f"img{i}.jpg")
        if masks:
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 8:24] = 255
            Image.fromarray(mask).save(directory / f"img{i}.png")
    return directory


def run_command(command, checkpoint, shards, tmp_path):
    """(completed process, the output path the command must not leave behind or None)."""
    python = [sys.executable]
    if command == "pretrained":
        return run_script(words(shards, checkpoint, "--pretrained"), cwd=tmp_path,
                          timeout=TIMEOUT), None
    if command == "adapt":
        out = None  # its --output folder is metaseg adapt's own business (metaseg.cli)
        args = [*python, "-m", "metaseg", "adapt", "--init", str(checkpoint),
                "--support", str(images(tmp_path / "support", 2, masks=True)),
                "--query", str(images(tmp_path / "query", 1)),
                "--output", str(tmp_path / "adapted")]
    elif command == "info":
        out, args = None, [*python, "-m", "metaseg", "info", str(checkpoint)]
    else:
        out = tmp_path / "pseudo"
        args = [*python, str(REPO / "data_tools" / "make_pseudo_tasks.py"),
                "--input_dir", str(images(tmp_path / "unlabelled", 4)),
                "--output_dir", str(out), "--backbone", str(checkpoint), "--image_size", "32"]
    return subprocess.run(args, cwd=tmp_path, env=subprocess_env(), capture_output=True,
                          text=True, timeout=TIMEOUT), out


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", ["pretrained", "adapt", "info", "pseudo_tasks"])
def test_a_damaged_checkpoint_is_one_error_line(trained, shards, tmp_path, command, damage):
    checkpoint = damaged_copy(trained, tmp_path, damage)
    result, out = run_command(command, checkpoint, shards, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = own_stderr_lines(result.stderr)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    assert errors[0].startswith(f"error: checkpoint {checkpoint}/model.ckpt-2 is incomplete "
                                "or damaged ("), errors[0]
    assert "half-written or truncated" in errors[0]
    assert out is None or not out.exists()
