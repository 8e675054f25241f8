"""TensorFlow Datasets builders (metaseg.tfds) and --dataset tfds:NAME: the same tasks and
episodes as the equivalent shards, FSS-1000 / PASCAL-5i read by the converters' own code,
tfds build / tfds.load offline, and bad input in one line."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from metaseg.datasets import fss1000 as fss
from data_tools import pascal5i_to_tfrecord as pascal
from metaseg import pipeline
from metaseg.config import DataConfig, RunConfig
from metaseg.data import TaskStore, episodes
from metaseg.datasets import folds
from metaseg.data.shards import SHARD_SUFFIX, read_shard
from metaseg.datasets.synthetic import class_names, write_benchmark
from metaseg.errors import ConfigError, DataError
from metaseg.specs import BatchSpec, EpisodeSpec
from metaseg.tfds import fss1000 as fss_builder  # importing metaseg.tfds registers them
from tests.cli.conftest import own_stderr_lines, run_script, subprocess_env
from tests.conftest import time_limit
from tests.data.test_folds import make_voc


TINY = "metaseg_synthetic/tiny"
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tfds data_dir holding metaseg_synthetic/tiny, the same benchmark written as shards)."""
    root = tmp_path_factory.mktemp("tfds")
    tfds.builder(TINY, data_dir=str(root / "tfds")).download_and_prepare()
    write_benchmark(str(root / "shards"), num_classes=12, examples_per_class=10, image_size=64,
                    seed=0, num_workers=1)
    return root / "tfds", root / "shards"


def _config(**data):
    return RunConfig(data=DataConfig(image_size=64, **data))


def _stores(config):
    splits = pipeline.load_splits(config, pipeline.resolve_data_dir(config))
    return splits, TaskStore.load(splits.train, 64), TaskStore.load(splits.test, 64)


def test_tfds_load_tiny(tiny):
    data_dir, _ = tiny
    train, info = tfds.load(TINY, data_dir=str(data_dir), split="train", with_info=True,
                            download=False)
    assert info.splits["train"].num_examples == 90 and info.splits["test"].num_examples == 30
    assert "255 = foreground" in info.features["mask"].doc.desc
    example = next(iter(tfds.as_numpy(train)))
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert example["mask"].shape == (64, 64, 1)
    assert set(np.unique(example["mask"])) <= {0, 255}
    assert example["class_name"].decode() in class_names(12)


def test_tfds_tasks_and_episodes_equal_the_shards(tiny):
    data_dir, shard_dir = tiny
    from_tfds = _stores(_config(dataset=f"tfds:{TINY}", tfds_data_dir=str(data_dir)))
    from_shards = _stores(_config(data_dir=str(shard_dir)))
    names = [[t.name for t in part] for part in (from_tfds[0].train, from_tfds[0].test)]
    assert names == [[t.name for t in part] for part in (from_shards[0].train,
                                                        from_shards[0].test)]
    assert len(names[0]) == 9 and len(names[1]) == 3
    for a, b in zip(from_tfds[1:], from_shards[1:]):
        assert a.names == b.names
        np.testing.assert_array_equal(a.images.numpy(), b.images.numpy())
        np.testing.assert_array_equal(a.masks.numpy(), b.masks.numpy())
    train = [episodes.meta_training_dataset(s[1], EpisodeSpec(4, 2, BatchSpec(2)), seed=3).take(3)
             for s in (from_tfds, from_shards)]
    for a, b in zip(*train):
        assert int(a["task"]) == int(b["task"])
        np.testing.assert_array_equal(a["x"].numpy(), b["x"].numpy())
        np.testing.assert_array_equal(a["y"].numpy(), b["y"].numpy())
    a, b = (episodes.evaluation_episode(s[2], 1, shots=5, seed=3)
            for s in (from_tfds, from_shards))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_tfds_config_mistakes():
    with pytest.raises(ConfigError, match="--dataset must be 'shards', 'synthetic' or "
                                          "'tfds:NAME"):
        DataConfig(dataset="tfds:")
    with pytest.raises(ConfigError, match="--data-dir and --dataset tfds:x both"):
        DataConfig(dataset="tfds:x", data_dir="d")
    with pytest.raises(ConfigError, match="--train_list needs shards"):
        DataConfig(dataset="tfds:x", train_list="l.txt")
    with pytest.raises(ConfigError, match="--tfds_data_dir is where"):
        DataConfig(tfds_data_dir="d")


def test_build_command_line_offline(tmp_path):
    """python -m metaseg.tfds, the build command metaseg names; then tfds.load reads it.
    (tfds's own `tfds build` of tfds 4.9.8-4.9.10 cannot start without apache-beam.)"""
    done = _module_command(TINY, "--data_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith(f"{TINY} prepared in {tmp_path}")
    assert "train 90, test 30 examples" in done.stdout
    test = tfds.load(TINY, data_dir=str(tmp_path), split="test", download=False)
    assert len(list(test)) == 30


# --- FSS-1000: the converter's reader, the authors' split, bad pairs ---------------------

def _fake_fss1000(root: pathlib.Path, bad_class=None) -> pathlib.Path:
    """Every class folder of the authors' lists, two 24 px pairs each (masks with grey
    pixels, to be thresholded); ``bad_class`` gets a truncated JPEG as its third pair."""
    rng = np.random.default_rng(0)
    for names in fss_builder.split_classes().values():
        for name in names:
            folder = root / name
            folder.mkdir(parents=True)
            for n in (1, 2):
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                    folder / f"{n}.jpg", quality=95)
                mask = np.zeros((24, 24), np.uint8)
                mask[4:4 + 4 * n, 5:17] = 255
                mask[20, 3] = 200
                Image.fromarray(mask).save(folder / f"{n}.png")
            if name == bad_class:
                (folder / "3.jpg").write_bytes((folder / "1.jpg").read_bytes()[:100])
                (folder / "3.png").write_bytes((folder / "1.png").read_bytes())
    return root


def _fss_builder(data_dir, allow_skips=False):
    config = fss_builder.Fss1000Config(name="test32", image_size=32, allow_skips=allow_skips)
    return fss_builder.Fss1000(data_dir=str(data_dir), config=config)


def test_fss1000_builder_reads_what_the_converter_writes(tmp_path):
    manual = _fake_fss1000(tmp_path / "fewshot_data")
    builder = _fss_builder(tmp_path / "tfds")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert builder.info.splits["train"].num_examples == 2 * 760
    assert builder.info.splits["test"].num_examples == 2 * 240
    shards = tmp_path / "shards"
    fss.convert_dataset(str(manual), str(shards), fss.ConvertOptions(image_size=32),
                        num_workers=2)
    test = fss_builder.split_classes()["test"]
    read = {}
    for example in tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False)):
        read.setdefault(example["class_name"].decode(), []).append(example)
    assert sorted(read) == sorted(test)
    for name in test[:20]:
        images, masks = read_shard(shards / (name + SHARD_SUFFIX))
        np.testing.assert_array_equal(np.stack([e["image"] for e in read[name]]), images)
        np.testing.assert_array_equal(np.stack([e["mask"][..., 0] for e in read[name]]), masks)
    assert set(np.unique(masks)) == {0, 255}  # the grey pixel was thresholded


def test_fss1000_bad_pair_stops_the_build_unless_allowed(tmp_path):
    bad = fss_builder.split_classes()["train"][3]
    manual = _fake_fss1000(tmp_path / "fewshot_data", bad_class=bad)
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    strict = _fss_builder(tmp_path / "strict")
    with pytest.raises(DataError, match=rf"train split: 1 files skipped .*{bad}/3.jpg: corrupt "
                                        r"or truncated.*fss1000/allow_skips"):
        strict.download_and_prepare(download_config=config)
    assert not strict.is_prepared()
    assert not list((tmp_path / "strict").rglob("*.tfrecord*"))  # nothing half-written
    lenient = _fss_builder(tmp_path / "lenient", allow_skips=True)
    lenient.download_and_prepare(download_config=config)
    assert lenient.info.splits["train"].num_examples == 2 * 760


def _module_command(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "metaseg.tfds", *args], capture_output=True,
                          text=True, env=subprocess_env(), cwd=REPO, timeout=time_limit(timeout))


def test_fss1000_manual_dir_without_the_layout_is_one_line(tmp_path):
    wrong = tmp_path / "downloads"
    (wrong / "fewshot_data" / "abacus").mkdir(parents=True)  # one level too high
    done = _module_command("fss1000", "--manual_dir", str(wrong), "--data_dir",
                           str(tmp_path / "tfds"))
    lines = own_stderr_lines(done.stderr)
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: manual_dir {wrong} is not in the "
                                                   "FSS-1000 layout: 1000 of the 1000"), lines
    assert "github.com/HKUSTCV/FSS-1000" in lines[0]
    assert not list((tmp_path / "tfds").rglob("*.tfrecord*"))
    done = _module_command("fss1000", "--data_dir", str(tmp_path / "tfds"))
    lines = own_stderr_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: fss1000 needs --manual_dir: FSS-1000 is not "
                               "downloaded automatically. Get it from "
                               "https://github.com/HKUSTCV/FSS-1000"), lines
    done = _module_command("fss1000", "--manual-dir", str(wrong))  # a mistyped flag
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "error: python -m metaseg.tfds: unrecognized arguments: --manual-dir "
        f"{wrong} (see python -m metaseg.tfds --help)"], done.stderr[-3000:]


# --- PASCAL-5i: the converter's reader, one config per fold ------------------------------

def test_pascal5i_fold_matches_the_converters_fold_shards(tmp_path):
    from metaseg.tfds.pascal5i import Pascal5i, Pascal5iConfig
    voc = make_voc(tmp_path)
    builder = Pascal5i(data_dir=str(tmp_path / "tfds"),
                       config=Pascal5iConfig(name="fold0_32", fold=0, image_size=32))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(voc)))
    pascal.convert(str(voc), str(tmp_path / "shards"), image_size=32, num_workers=1)
    fold0 = tmp_path / "shards" / "fold0"
    for split, classes in (("train", ["bus", "person"]), ("test", ["aeroplane", "bicycle"])):
        read = {}
        for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            read.setdefault(example["class_name"].decode(), []).append(example)
        assert sorted(read) == classes
        assert all(c in folds.pascal5i_test_classes(0) for c in read) == (split == "test")
        for name in classes:
            images, masks = read_shard(fold0 / (name + SHARD_SUFFIX))
            np.testing.assert_array_equal(np.stack([e["image"] for e in read[name]]), images)
            np.testing.assert_array_equal(np.stack([e["mask"][..., 0] for e in read[name]]),
                                          masks)


def test_pascal5i_manual_dir_without_labels_is_one_line(tmp_path):
    voc = make_voc(tmp_path, with_labels=False)
    done = _module_command("pascal5i/fold1", "--manual_dir", str(voc), "--data_dir",
                           str(tmp_path / "tfds"))
    lines = own_stderr_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"error: {voc} has no SegmentationClassAug/ folder"), lines


# --- run_metasegnet.py --dataset tfds:NAME -----------------------------------------------

RUN = ("--image_size 64 --meta-iters 2 --meta-batch 1 --inner-iters 1 --inner-batch 2 "
       "--train-shots 4 --sgd --learning-rate 0.1 --loss_name bce_dice --shots 5 "
       "--eval-batch 2 --eval-iters 2 --eval-samples 1 --serially_eval_all_test_tasks "
       "--transductive --noeval_train_tasks").split()


def test_run_metasegnet_from_tfds_equals_from_shards(tiny, tmp_path):
    data_dir, shard_dir = tiny
    outputs = []
    for name, data in (("tfds", ["--dataset", f"tfds:{TINY}", "--tfds_data_dir",
                                 str(data_dir)]),
                       ("shards", ["--data-dir", str(shard_dir)])):
        done = run_script([*data, *RUN, "--checkpoint", str(tmp_path / name)], cwd=tmp_path,
                          timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout.rstrip("\n").splitlines()[-1])
    assert outputs[0].startswith("Mean IoU over all meta-test tasks: ")
    assert outputs[0] == outputs[1]


def test_run_metasegnet_tfds_not_prepared_names_the_build_command(tmp_path):
    done = run_script(["--dataset", "tfds:metaseg_synthetic/quickstart", "--tfds_data_dir",
                       str(tmp_path / "empty"), *RUN, "--checkpoint", str(tmp_path / "run")],
                      cwd=tmp_path)
    lines = own_stderr_lines(done.stderr)  # run_metasegnet.py logs INFO lines before
    assert done.returncode == 2, done.stderr[-3000:]
    assert not [line for line in lines if line.startswith(("W", "E", "Traceback"))], lines
    assert lines[-1] == (
        f"error: tfds dataset metaseg_synthetic/quickstart is not prepared in "
        f"{tmp_path / 'empty'}; prepare it with `python -m metaseg.tfds "
        f"metaseg_synthetic/quickstart --data_dir {tmp_path / 'empty'}` or `tfds build "
        f"metaseg_synthetic/quickstart --imports metaseg.tfds --data_dir {tmp_path / 'empty'}`"
        ", or pass --tfds_data_dir where it was built")
    assert not (tmp_path / "run").exists()
