"""Shared test setup: quiet TensorFlow, TensorFlow backend, tiny generated fixtures."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    """``../shared`` beside the checkout (class lists and spec); tests that need it fail loudly."""
    assert SHARED.is_dir(), f"expected the shared folder at {SHARED}"
    return SHARED
