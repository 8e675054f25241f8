"""``checkpoints.detect`` on every kind of folder, each written by its real writer: a tiny
meta-training run, ``metaseg adapt --output`` (and its ``model/``), a checkpoint
``--save_fine_tuned_checkpoints`` wrote, the original's TF1 layout, a shipped preset, and
folders that hold none of these."""
import os

import pytest
import tensorflow as tf

from metaseg import checkpoints
from metaseg.__main__ import main
from metaseg.checkpoints import Kind
from metaseg.errors import CheckpointError
from tests.cli.test_metaseg_cli import SIZE, save_initialisation, write_queries, write_support
from tests.models import tf1_fixtures


def test_a_meta_training_run_is_a_run_with_its_newest_checkpoint(run_dir):
    found = checkpoints.detect(run_dir)
    assert found.kind is Kind.RUN and found.kind.is_metaseg and found.kind.family == "metaseg"
    assert found.prefix == str(run_dir / "model.ckpt-2") and found.directory == str(run_dir)
    # one model.ckpt-N of it: that checkpoint, config.json in its folder
    one = checkpoints.detect(str(run_dir / "model.ckpt-1"))
    assert (one.kind, one.prefix, one.directory) == (Kind.RUN, str(run_dir / "model.ckpt-1"),
                                                     str(run_dir))


def test_a_fine_tuned_checkpoint_has_no_optimiser_state(fine_tuned_dir):
    found = checkpoints.detect(fine_tuned_dir)
    assert found.kind is Kind.FINE_TUNED and found.kind.is_metaseg
    assert found.prefix == str(fine_tuned_dir / "model.ckpt-3")
    names = checkpoints.variable_shapes(found.prefix)
    assert not any(n.startswith("optimizer/") for n in names)
    assert not any(n.startswith("save_counter") for n in names)  # as evaluation always wrote


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """The --output folder of a real ``metaseg adapt`` run (1 step on 3 pairs at 64 px)."""
    root = tmp_path_factory.mktemp("adapt")
    init = save_initialisation(root / "init")
    out = root / "out"
    assert main(["adapt", "--init", str(init), "--support", str(write_support(root / "sup")),
                 "--query", str(write_queries(root / "query")), "--output", str(out),
                 "--image_size", str(SIZE), "--steps", "1"]) == 0
    return init, out


def test_metaseg_adapt_output_and_its_model_folder_are_an_adapted_model(adapted):
    init, out = adapted
    assert checkpoints.detect(init).kind is Kind.RUN  # a MetaState with optimiser state
    for path in (out, out / "model"):
        found = checkpoints.detect(path)
        assert found.kind is Kind.ADAPTED, path
        assert found.directory == str(out / "model")
        assert found.prefix == str(out / "model" / "model.ckpt-1")
    assert checkpoints.read_adaptation(str(out / "model"))["steps"] == 1
    source = checkpoints.open_checkpoint(str(out), "--model")
    assert source.kind is Kind.ADAPTED and source.adaptation["kind"] == "metaseg"
    assert source.config.data.image_size == SIZE


def test_a_tf1_checkpoint_folder_and_prefix(tmp_path, tf1_weights):
    prefix = tf1_fixtures.save_tf1_checkpoint(tmp_path / "tf1", tf1_weights, step=3)
    for path in (tmp_path / "tf1", prefix):
        found = checkpoints.detect(path)
        assert (found.kind, found.prefix) == (Kind.TF1, prefix), path
        assert not found.kind.is_metaseg and found.kind.family == "tf1"


def test_a_shipped_preset_by_name():
    found = checkpoints.detect("quickstart_b0_64")
    assert found.kind is Kind.PRESET and found.preset.name == "quickstart_b0_64"
    assert os.path.isdir(found.directory) and found.prefix is None


def test_folders_that_hold_no_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    foreign = tmp_path / "foreign"  # a TF2 checkpoint of something else
    tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(foreign), 1).save()
    for path in (tmp_path / "empty", tmp_path / "missing", foreign):
        found = checkpoints.detect(path)
        assert (found.kind, found.prefix) == (Kind.NONE, None), path


def test_a_damaged_index_is_one_line_naming_the_checkpoint(run_dir, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in os.listdir(run_dir):
        if not os.path.isdir(run_dir / name):
            (copy / name).write_bytes((run_dir / name).read_bytes())
    index = copy / "model.ckpt-2.index"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"^checkpoint \S+model\.ckpt-2 is incomplete or "
                                              r"damaged \(.*half-written or truncated") as info:
        checkpoints.detect(copy)
    assert "\n" not in str(info.value)


def test_a_kaggle_handle_is_refused_without_download():
    with pytest.raises(CheckpointError, match="metaseg downloads nothing"):
        checkpoints.detect("kaggle://someone/model")
