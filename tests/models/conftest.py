"""Shared fixtures for the model tests: the published network and a TF1 checkpoint of it."""
import keras
import pytest

from metaseg.models import EfficientLab
from tests.models import tf1_fixtures


@pytest.fixture(scope="session")
def tf1_rows():
    """The published configuration's TF1 variables: [(name, shape, trainable)]."""
    return tf1_fixtures.read_tsv()


@pytest.fixture(scope="session")
def tf1_weights(tf1_rows):
    """{TF1 name: random float32 array} for every published variable."""
    return tf1_fixtures.random_weights(tf1_rows, seed=0)


@pytest.fixture(scope="session")
def tf1_checkpoint_dir(tmp_path_factory, tf1_rows, tf1_weights):
    """A checkpoint directory laid out as the authors' (relative 'checkpoint' file), with
    Adam slots, beta1/beta2 powers and the global step beside the weights."""
    directory = tmp_path_factory.mktemp("tf1") / "published"
    tf1_fixtures.save_tf1_checkpoint(
        directory, tf1_weights, adam_slots_for=[n for n, _, t in tf1_rows if t])
    return directory


@pytest.fixture(scope="module")
def published_model():
    """EfficientLab(rsd=(2, 4)) with random weights; tests must not modify it."""
    keras.utils.set_random_seed(1)
    return EfficientLab(rsd=(2, 4))
