"""The embedded benchmark: catalogue and split, rendering, shards on disk, cache, the CLI."""
import collections
import itertools
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from metaseg.datasets import synthetic
from metaseg.data.shards import SHARD_SUFFIX
from metaseg.datasets.synthetic import scene, shapes
from metaseg.datasets.synthetic.appearance import APPEARANCE_FAMILIES, TEXTURES
from metaseg.errors import ConfigError, DataError
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "data_tools" / "make_synthetic_fss.py"
TINY = dict(num_classes=6, examples_per_class=4, image_size=32, seed=0)
NAME = re.compile(r"^([a-z0-9]+)__([a-z]+)__c(\d{2,})$")


def _families(name):
    shape, appearance, _ = NAME.match(name).groups()
    return shape, appearance


def _shard_files(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(SHARD_SUFFIX))


def _read_records(path):
    """Raw (image bytes, mask bytes) of every record, parsed independently of metaseg."""
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "mask": tf.io.FixedLenFeature([], tf.string)}
    records = tf.data.TFRecordDataset(str(path), compression_type="GZIP")
    return [(r["image"].numpy(), r["mask"].numpy())
            for r in records.map(lambda x: tf.io.parse_single_example(x, spec))]


# --- catalogue and split ---------------------------------------------------------------

def test_full_catalogue_uses_every_combination_four_times():
    names = synthetic.class_names(1000, seed=0)
    assert names == sorted(names) and len(set(names)) == 1000
    assert all(NAME.match(n) for n in names), "names must be filesystem-safe"
    combos = collections.Counter(_families(n) for n in names)
    assert len(combos) == 25 * 10 and set(combos.values()) == {4}
    assert {s for s, _ in combos} == set(shapes.SHAPE_FAMILIES)
    assert {a for _, a in combos} == set(APPEARANCE_FAMILIES)
    assert len(synthetic.test_class_names(1000, seed=0)) == 240


@pytest.mark.parametrize("num_classes, seed", [(5, 0), (6, 1), (37, 2), (300, 0), (1000, 3)])
def test_test_classes_are_new_combinations_of_trained_families(num_classes, seed):
    names = synthetic.class_names(num_classes, seed)
    test = synthetic.test_class_names(num_classes, seed)
    train = synthetic.train_class_names(num_classes, seed)
    assert test and set(test) | set(train) == set(names) and not set(test) & set(train)
    assert abs(len(test) - 0.24 * num_classes) <= max(1, 0.02 * num_classes)
    train_combos = {_families(n) for n in train}
    for name in test:
        shape, appearance = _families(name)
        assert (shape, appearance) not in train_combos, name
        assert any(s == shape for s, _ in train_combos), f"shape of {name} never trained"
        assert any(a == appearance for _, a in train_combos), f"texture of {name} never trained"


def test_split_depends_on_seed():
    assert synthetic.test_class_names(1000, 0) != synthetic.test_class_names(1000, 1)


def test_too_few_classes_to_split_names_the_flag():
    assert synthetic.test_class_names(synthetic.MIN_CLASSES, 0)
    with pytest.raises(ConfigError, match="--num_classes"):
        synthetic.class_names(synthetic.MIN_CLASSES - 1, 0)


# --- shapes, textures and scenes ------------------------------------------------------

def test_shape_families_are_distinct_object_kinds():
    axis = np.linspace(-1.3, 1.3, 96, dtype=np.float32)
    u, v = np.meshgrid(axis, axis)
    params = np.full(shapes.NUM_PARAMS, 0.5)
    masks = {f: shapes.SHAPES[f](u, v, params) for f in shapes.SHAPE_FAMILIES}
    for f, m in masks.items():
        assert 0.05 < m.mean() < 0.6, f
    for (fa, a), (fb, b) in itertools.combinations(masks.items(), 2):
        iou = (a & b).sum() / (a | b).sum()
        assert iou < 0.9, f"{fa} and {fb} overlap with IoU {iou:.2f}"


def test_textures_are_two_colour_mixes_in_range():
    axis = np.linspace(-1, 1, 64, dtype=np.float32)
    u, v = np.meshgrid(axis, axis)
    for name, texture in TEXTURES.items():
        t = texture(u, v, np.full(8, 0.3), np.array([0.1, 0.7]), 0.02)
        assert t.shape == u.shape and t.min() >= 0 and t.max() <= 1, name
        if name != "solid":
            assert t.max() - t.min() > 0.5, f"{name} shows no pattern"


def test_render_class_is_deterministic_per_seed_and_class():
    images, masks = synthetic.render_class(3, 12, 3, 48, seed=1)
    assert images.shape == (3, 48, 48, 3) and images.dtype == np.uint8
    assert masks.shape == (3, 48, 48) and masks.dtype == np.uint8
    synthetic.render_class(7, 12, 2, 48, seed=1)  # rendering another class changes nothing
    again = synthetic.render_class(3, 12, 3, 48, seed=1)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(masks, again[1])
    other_seed = synthetic.render_class(3, 12, 3, 48, seed=2)
    assert not np.array_equal(images, other_seed[0])
    assert len({im.tobytes() for im in images}) == 3, "examples of a class must differ"


def test_masks_are_binary_and_cover_a_sane_share_of_the_image():
    for index in range(0, 1000, 97):
        _, masks = synthetic.render_class(index, 1000, 3, 64, seed=0)
        assert set(np.unique(masks)) == {0, 255}
        coverage = (masks > 0).mean(axis=(1, 2))
        assert np.all((coverage > 0.03) & (coverage < 0.45)), (index, coverage)


def test_distractors_are_visible_and_outside_the_mask():
    scenes = synthetic.render_examples(11, 40, 6, 64, seed=0)
    for s in scenes:
        assert s.distractors.sum() > 0.01 * s.distractors.size
        assert not np.any(s.distractors & (s.mask > 0))
    plain = synthetic.render_examples(11, 40, 2, 64, seed=0, distractors=False)
    assert all(not s.distractors.any() for s in plain)


def _square_layer(size, y0, y1, x0, x1):
    mask = np.ones((y1 - y0, x1 - x0), dtype=bool)
    return scene.Layer((y0, y1, x0, x1), mask, np.zeros(mask.shape + (3,), np.float32))


def test_occlusion_cuts_the_target_but_never_hides_most_of_it(monkeypatch):
    monkeypatch.setattr(scene, "FRONT_PROBABILITY", 1.0)  # every distractor tries the front
    target = _square_layer(20, 0, 10, 0, 10)  # 100 pixels
    small = _square_layer(20, 0, 2, 0, 10)  # would hide 20 of them
    large = _square_layer(20, 0, 6, 0, 10)  # would hide 60 of them
    behind, front, visible = scene._arrange(target, [small, large], 20,
                                            np.random.default_rng(0))
    assert front == [small] and behind == [large]
    assert visible.sum() == 80 and not visible[:2].any() and visible[2:10, :10].all()


# --- writing shards -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    names = synthetic.write_benchmark(directory, num_workers=1, **TINY)
    return directory, names


def test_shards_read_back_in_the_original_format(tiny_benchmark):
    directory, names = tiny_benchmark
    assert names == synthetic.class_names(6, 0)
    assert _shard_files(directory) == [n + SHARD_SUFFIX for n in names]
    size = TINY["image_size"]
    for index, name in enumerate(names):
        records = _read_records(directory / (name + SHARD_SUFFIX))
        assert len(records) == TINY["examples_per_class"]
        assert all(len(im) == size * size * 3 and len(m) == size * size for im, m in records)
        images, masks = synthetic.render_class(index, 6, 4, size, seed=0)
        stored = np.stack([np.frombuffer(im, np.uint8) for im, _ in records])
        np.testing.assert_array_equal(stored.reshape(images.shape), images)
        stored = np.stack([np.frombuffer(m, np.uint8) for _, m in records])
        np.testing.assert_array_equal(stored.reshape(masks.shape), masks)


def test_split_files_list_the_split(tiny_benchmark):
    directory, names = tiny_benchmark
    test = (directory / synthetic.TEST_SPLIT_FILE).read_text().split()
    train = (directory / synthetic.TRAIN_SPLIT_FILE).read_text().split()
    assert test == synthetic.test_class_names(6, 0)
    assert sorted(test + train) == names
    assert (directory / synthetic.MARKER_FILE).is_file()


def test_same_seed_gives_byte_identical_shards(tiny_benchmark, tmp_path):
    directory, names = tiny_benchmark
    synthetic.write_benchmark(tmp_path / "again", num_workers=1, **TINY)
    synthetic.write_benchmark(tmp_path / "seed1", num_workers=1, **dict(TINY, seed=1))
    for name in names:
        first = (directory / (name + SHARD_SUFFIX)).read_bytes()
        assert (tmp_path / "again" / (name + SHARD_SUFFIX)).read_bytes() == first
        seed1 = tmp_path / "seed1" / (name + SHARD_SUFFIX)
        assert not seed1.exists() or seed1.read_bytes() != first


def test_existing_benchmark_needs_overwrite_and_stale_shards_go(tmp_path):
    synthetic.write_benchmark(tmp_path, num_workers=1, **dict(TINY, num_classes=7))
    with pytest.raises(DataError, match="already holds a synthetic benchmark.*--overwrite"):
        synthetic.write_benchmark(tmp_path, num_workers=1, **TINY)
    names = synthetic.write_benchmark(tmp_path, num_workers=1, overwrite=True, **TINY)
    assert _shard_files(tmp_path) == [n + SHARD_SUFFIX for n in names]


def test_foreign_shards_are_never_deleted(tmp_path):
    foreign = tmp_path / ("airliner" + SHARD_SUFFIX)
    foreign.write_bytes(b"not ours")
    with pytest.raises(DataError, match="already holds 1 shard;"):
        synthetic.write_benchmark(tmp_path, num_workers=1, **TINY)
    with pytest.raises(DataError, match="not part of this benchmark.*airliner"):
        synthetic.write_benchmark(tmp_path, num_workers=1, overwrite=True, **TINY)
    assert foreign.read_bytes() == b"not ours"


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot write to output directory"):
        synthetic.write_benchmark(blocker / "out", num_workers=1, **TINY)


def test_ensure_benchmark_generates_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("METASEG_CACHE", str(tmp_path))
    params = dict(num_classes=6, examples_per_class=2, image_size=16, seed=0)
    path = synthetic.ensure_benchmark(None, num_workers=1, **params)
    assert path == str(tmp_path / "synthetic-fss-n6-e2-s16-seed0")
    assert len(_shard_files(path)) == 6
    stamp = os.stat(os.path.join(path, synthetic.MARKER_FILE)).st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("a complete cached benchmark must be reused")

    with monkeypatch.context() as m:
        m.setattr(synthetic.writer, "write_benchmark", fail)
        assert synthetic.ensure_benchmark(tmp_path, num_workers=1, **params) == path
    os.remove(os.path.join(path, synthetic.MARKER_FILE))  # as if interrupted
    synthetic.ensure_benchmark(tmp_path, num_workers=1, **params)
    assert os.stat(os.path.join(path, synthetic.MARKER_FILE)).st_mtime_ns != stamp


def test_ensure_benchmark_says_how_to_fix_an_unwritable_cache(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=r"\$METASEG_CACHE"):
        synthetic.ensure_benchmark(tmp_path / "a_file", num_classes=6, examples_per_class=2,
                                   image_size=16, seed=0, num_workers=1)


# --- the script -----------------------------------------------------------------------

def _run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=env, timeout=time_limit(120))


def _tiny_flags(output_dir):
    return ["--output_dir", str(output_dir), "--num_classes", "6", "--examples_per_class",
            "4", "--image_size", "32"]


def test_script_with_two_workers_writes_the_same_bytes(tiny_benchmark, tmp_path):
    directory, names = tiny_benchmark
    result = _run_script(*_tiny_flags(tmp_path / "out"), "--num_workers", "2")
    assert result.returncode == 0, result.stderr
    assert "wrote 6 classes (5 train, 1 test) x 4 images at 32 px" in result.stdout
    for name in names:  # parallel workers give the bytes of the single-process run
        written = (tmp_path / "out" / (name + SHARD_SUFFIX)).read_bytes()
        assert written == (directory / (name + SHARD_SUFFIX)).read_bytes()
    again = _run_script(*_tiny_flags(tmp_path / "out"), "--num_workers", "1")
    assert again.returncode == 2
    assert re.search(r"^error: .*already holds.*--overwrite", again.stderr, re.M)


@pytest.mark.parametrize("extra, message", [
    (["--num_classes", "3"], r"--num_classes must be at least 5"),
    (["--output_dir", "BLOCKED/out"], r"cannot write to output directory"),
])
def test_script_bad_input_ends_in_one_error_line(tmp_path, extra, message):
    (tmp_path / "blocker").write_text("")
    argv = _tiny_flags(tmp_path / "out") + [
        str(tmp_path / "blocker" / "out") if a == "BLOCKED/out" else a for a in extra]
    result = _run_script(*argv)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr
    assert "Traceback" not in result.stderr
