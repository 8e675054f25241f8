"""Shared test setup: quiet TensorFlow, TensorFlow backend, tiny generated fixtures, and the
time limits of subprocesses (scaled for a loaded machine)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# TensorFlow's thread pools sized as every entry point sizes them (metaseg.threads), so a
# result computed in the test process equals, bit for bit, one from a command subprocess.
from metaseg.quiet import import_tensorflow  # noqa: E402

import_tensorflow()

# Every subprocess time limit in the tests goes through time_limit(): the seconds a test
# names are what the step takes on an idle machine, times this factor. The default leaves
# room for a 2-core machine shared with other jobs; METASEG_TEST_TIME_SCALE overrides it.
DEFAULT_TIME_SCALE = 4.0


def time_limit(seconds: float) -> float:
    """``seconds`` scaled by ``$METASEG_TEST_TIME_SCALE`` (default 4): for ``timeout=`` and
    polling deadlines, never for how long a test sleeps on purpose."""
    scale = float(os.environ.get("METASEG_TEST_TIME_SCALE", DEFAULT_TIME_SCALE))
    if not scale > 0:
        raise ValueError(f"METASEG_TEST_TIME_SCALE must be a positive number, not {scale}")
    return seconds * scale
