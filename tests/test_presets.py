"""Presets (metaseg.presets): save / load round trip, the compact weights file, the shipped
quickstart preset adapting to a support folder through `metaseg adapt --init NAME`,
`metaseg preset save|list`, `metaseg info` and `--pretrained --checkpoint NAME` on presets,
and bad presets and kaggle:// / hf:// handles ending in one line (nothing downloaded)."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metaseg import presets
from metaseg.config import DataConfig, ModelConfig, RunConfig
from metaseg.errors import CheckpointError
from metaseg.evaluation import quality
from metaseg.pipeline import build
from tests.cli.conftest import (  # noqa: F401  (shards: a fixture)
    own_stderr_lines, run_script, shards, subprocess_env)
from tests.cli.test_metaseg_cli import (QUERIES, UHO_LR, UHO_STEPS, save_initialisation,
                                        write_queries, write_support)
from tests.conftest import time_limit

SHIPPED = "quickstart_b0_64"
REPO = pathlib.Path(__file__).resolve().parents[1]


def metaseg_command(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "metaseg", *map(str, args)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=cwd,
                          timeout=time_limit(timeout))


def one_error_line(done):
    lines = own_stderr_lines(done.stderr)
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _images(seed=0, n=4, size=64):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_round_trip_rebuilds_the_model(tmp_path):
    config = RunConfig(data=DataConfig(image_size=64), model=ModelConfig(rsd=(2, 4)), seed=3)
    model = build(config)
    target = tmp_path / "my_preset"
    preset = presets.save_preset(model, target, config=config, description="a test",
                                 trained_on="nothing (random initialisation)")
    assert sorted(os.listdir(target)) == sorted(presets.PRESET_FILES)
    assert os.listdir(tmp_path) == ["my_preset"]  # no temporary folder left behind
    assert preset.metadata["format_version"] == presets.FORMAT_VERSION
    assert preset.metadata["image_size"] == 64 and preset.metadata["model"]["rsd"] == [2, 4]
    assert preset.metadata["trained_on"] == "nothing (random initialisation)"
    loaded = presets.load_preset(str(target))
    assert loaded is not model and len(loaded.weights) == len(model.weights)
    for a, b in zip(loaded.weights, model.weights):
        a, b = a.numpy(), b.numpy()
        assert a.dtype == np.float32 and a.shape == b.shape
        if b.ndim < presets.FLOAT16_MIN_NDIM:
            np.testing.assert_array_equal(a, b)  # vectors (batch-norm statistics) exact
        else:
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float16 kernels
    x = _images()
    p1, p2 = (m(x, training=False).numpy()[..., 1] > 0.5 for m in (model, loaded))
    assert (p1 == p2).mean() >= 0.995
    # compact: about half of Keras's float32 weights file
    model.save_weights(str(tmp_path / "full.weights.h5"))
    assert os.path.getsize(preset.weights_path) < 0.6 * os.path.getsize(
        tmp_path / "full.weights.h5")
    with pytest.raises(CheckpointError, match="already exists and is not empty; pass "
                                              "--overwrite"):
        presets.save_preset(model, target, config=config)


def test_shipped_preset_is_labelled_and_small():
    assert SHIPPED in presets.shipped()
    preset = presets.find(SHIPPED)
    assert "procedurally generated benchmark" in preset.metadata["trained_on"]
    assert "NOT on photographs" in preset.metadata["trained_on"]
    assert preset.metadata["training"]["meta_iterations"] == 150
    assert preset.metadata["training"]["synthetic"]["num_classes"] == 100
    assert os.path.getsize(preset.weights_path) < 6_000_000


def test_a_built_package_ships_the_presets(tmp_path):
    """What setup.py installs (build_py: packages plus package_data) finds the presets."""
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                   cwd=REPO, check=True, capture_output=True, timeout=time_limit(120))
    code = ("from metaseg import presets\n"
            "for p in presets.list_presets():\n"
            "    print(p.name, p.weights_path)\n")
    env = dict(os.environ, PYTHONPATH=str(lib), TF_CPP_MIN_LOG_LEVEL="3")
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                           capture_output=True, text=True, timeout=time_limit(120))
    weights = lib / "metaseg" / "shipped_presets" / SHIPPED / presets.WEIGHTS_FILE
    assert f"{SHIPPED} {weights}" in found.stdout.splitlines()
    assert os.path.getsize(weights) == os.path.getsize(presets.find(SHIPPED).weights_path)


def test_preset_list_names_first(tmp_path):
    done = metaseg_command("preset", "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    names = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert names == sorted(presets.shipped()) and SHIPPED in names


def test_shipped_preset_adapts_to_a_support_folder(tmp_path):
    support, query = write_support(tmp_path / "support"), write_queries(tmp_path / "query")
    out = tmp_path / "out"
    done = metaseg_command("adapt", "--init", SHIPPED, "--support", support, "--query", query,
                           "--output", out, "--steps", 2, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, w, h in QUERIES:
        with Image.open(out / "masks" / (os.path.splitext(name)[0] + ".png")) as img:
            mask = np.asarray(img)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
    record = json.loads((out / "model" / "adaptation.json").read_text())
    assert record["kind"] == "preset" and record["steps"] == 2 and record["image_size"] == 64
    assert record["initialisation"] == presets.shipped()[SHIPPED]


def test_preset_save_from_a_checkpoint_then_info(tmp_path):
    init = save_initialisation(tmp_path / "init")
    done = metaseg_command("preset", "save", init, tmp_path / "saved", "--trained_on",
                           "nothing, built for a test", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = presets.read(str(tmp_path / "saved"))
    assert saved.metadata["uho"] == {"learning_rate": UHO_LR, "steps": UHO_STEPS}
    assert saved.metadata["training"]["meta_iterations"] == 7
    assert saved.config["uho_steps"] == UHO_STEPS  # config.json keeps what adapt reads
    assert "without a mask quality calibration" in done.stdout  # init has no quality.json
    assert saved.metadata["quality_calibration"] is None
    assert not (tmp_path / "saved" / quality.QUALITY_FILE).exists()
    done = metaseg_command("info", tmp_path / "saved", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(line.split(":", 1) for line in done.stdout.splitlines())
    assert "metaseg preset saved" in rows["checkpoint"]
    assert rows["trained on"].strip() == "nothing, built for a test"
    assert rows["image size"].strip() == "64 px"
    assert rows["UHO"].strip().startswith(f"learning rate {UHO_LR:g}, steps {UHO_STEPS}")
    refused = metaseg_command("preset", "save", init, tmp_path / "saved", cwd=tmp_path)
    assert "already exists and is not empty; pass --overwrite" in one_error_line(refused)


def test_preset_save_carries_the_quality_calibration(tmp_path):
    """The shipped preset's quality.json goes with a preset saved from it, so adapting from
    the saved preset still writes calibrated estimated IoUs (and no missing-calibration
    warning)."""
    saved = tmp_path / "saved"
    done = metaseg_command("preset", "save", SHIPPED, saved, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"with its mask quality calibration ({quality.QUALITY_FILE})" in done.stdout
    shipped_quality = os.path.join(presets.shipped()[SHIPPED], quality.QUALITY_FILE)
    with open(shipped_quality, encoding="utf-8") as f:
        assert json.loads((saved / quality.QUALITY_FILE).read_text()) == json.load(f)
    assert presets.read(str(saved)).metadata["quality_calibration"] == quality.QUALITY_FILE
    support, query = write_support(tmp_path / "support"), write_queries(tmp_path / "query")
    out = tmp_path / "out"
    done = metaseg_command("adapt", "--init", saved, "--support", support, "--query", query,
                           "--output", out, "--steps", 1, "--image_size", 32, cwd=tmp_path,
                           timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "has no quality.json" not in done.stderr
    record = json.loads((out / "model" / "adaptation.json").read_text())
    assert record["query_quality"]["estimate"].startswith("calibrated")
    assert (out / "model" / quality.QUALITY_FILE).exists()


def test_preset_save_refuses_a_damaged_quality_json(tmp_path):
    """A source whose quality.json is not JSON: one error line naming it, no preset written
    (rather than a preset that silently lost its calibration)."""
    init = save_initialisation(tmp_path / "init")
    (init / quality.QUALITY_FILE).write_text("{")
    done = metaseg_command("preset", "save", "-q", init, tmp_path / "saved", cwd=tmp_path)
    assert quality.QUALITY_FILE in one_error_line(done)
    assert not (tmp_path / "saved").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".saved")] == []


def _damaged(tmp_path, case):
    target = tmp_path / case
    shipped = presets.shipped()[SHIPPED]
    os.makedirs(target)
    for name in presets.PRESET_FILES:
        if not (case == "missing weights" and name == presets.WEIGHTS_FILE):
            with open(os.path.join(shipped, name), "rb") as f:
                (target / name).write_bytes(f.read())
    if case == "newer format":
        metadata = json.loads((target / presets.METADATA_FILE).read_text())
        (target / presets.METADATA_FILE).write_text(json.dumps({**metadata,
                                                                "format_version": 99}))
    return target


@pytest.mark.parametrize("case, expected", [
    ("missing weights", "has no model.weights.h5 (a preset holds config.json, "
                        "model.weights.h5, metadata.json)"),
    ("newer format", "has format version 99; this metaseg reads up to version 1: upgrade"),
])
def test_damaged_preset_is_one_line(case, expected, tmp_path):
    target = _damaged(tmp_path, case)
    line = one_error_line(metaseg_command("info", target, cwd=tmp_path))
    assert line.startswith(f"error: preset {target} {expected}"), line
    support, query = write_support(tmp_path / "support"), write_queries(tmp_path / "query")
    done = metaseg_command("adapt", "--init", target, "--support", support, "--query", query,
                           "--output", tmp_path / "out", cwd=tmp_path)
    assert expected in one_error_line(done)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("handle, url", [
    ("kaggle://metaseg/efficientlab/keras/b0", "https://www.kaggle.com/models/metaseg/"
                                               "efficientlab/keras/b0"),
    ("hf://metaseg/efficientlab-b0", "https://huggingface.co/metaseg/efficientlab-b0"),
])
def test_hub_handles_are_refused_offline(handle, url, tmp_path):
    line = one_error_line(metaseg_command("info", handle, cwd=tmp_path))
    assert line.startswith(f"error: {handle} names a ") and f"{url} was not fetched" in line
    with pytest.raises(CheckpointError, match="metaseg downloads nothing"):
        presets.load_preset(handle)


def test_pretrained_checkpoint_takes_a_preset_name(shards, tmp_path):
    words = ["--data-dir", str(shards.data_dir), "--test_tasks_file", str(shards.test_classes),
             "--pretrained", "--checkpoint", SHIPPED, "--image_size", "64", "--shots", "5",
             "--eval-batch", "2", "--eval-iters", "1", "--eval-samples", "1",
             "--serially_eval_all_test_tasks", "--transductive", "--sgd",
             "--learning-rate", "0.1", "--loss_name", "bce_dice"]
    done = run_script([*words, "--rsd", "2", "4"], cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith("Mean IoU over all meta-test tasks: ")
    assert "Restored preset quickstart_b0_64" in done.stderr
    other = run_script([*words, "--rsd", "2"], cwd=tmp_path, timeout=600)  # another model
    lines = own_stderr_lines(other.stderr)
    assert other.returncode == 2, other.stderr[-3000:]
    assert lines[-1].startswith(f"error: preset {presets.shipped()[SHIPPED]}: "
                                "model.weights.h5 does not fit the model"), lines[-1]


def test_pretrained_restore_of_a_preset_can_keep_the_final_layer():
    from metaseg import pipeline  # pylint: disable=import-outside-toplevel
    config = RunConfig(data=DataConfig(image_size=64), model=ModelConfig(rsd=(2, 4)), seed=5)
    model = build(config)
    final = model.get_layer("final_layer_weights").kernel
    before = final.numpy()
    pipeline.restore(model, SHIPPED, skip_final_layer=True)
    np.testing.assert_array_equal(final.numpy(), before)
    reference = presets.load_preset(SHIPPED)
    others = [v for v in model.weights if v.path != final.path]
    assert any(not np.array_equal(v.numpy(), w.numpy())  # the rest came from the preset
               for v, w in zip(model.weights, build(config).weights) if v.path != final.path)
    np.testing.assert_array_equal(others[0].numpy(), reference.weights[0].numpy())
    pipeline.restore(model, SHIPPED, skip_final_layer=False)
    np.testing.assert_array_equal(final.numpy(),
                                  reference.get_layer("final_layer_weights").kernel.numpy())
