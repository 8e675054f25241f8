"""Importing TensorFlow without its start-up chatter on stderr, with our thread defaults.

TensorFlow 2.21 writes a few lines (oneDNN notice, missing CUDA drivers) from C++ before
``TF_CPP_MIN_LOG_LEVEL`` applies, so a command-line error would not be the single line
users are promised. Entry points call :func:`import_tensorflow` first, which also sizes
TensorFlow's thread pools (``metaseg.threads``) before anything runs.
"""

import contextlib
import os
import sys

from metaseg import threads


def import_tensorflow(verbose: bool = False):
    """Import TensorFlow (file descriptor 2 sent to /dev/null during the import) and set
    its thread pools: ConfigError for a bad TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS."""
    tensorflow = _import(verbose)
    threads.configure(tensorflow)
    return tensorflow


def _import(verbose: bool):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    if verbose or "tensorflow" in sys.modules:
        import tensorflow  # pylint: disable=import-outside-toplevel
        return tensorflow
    with native_stderr_silenced():
        import tensorflow  # pylint: disable=import-outside-toplevel
    return tensorflow


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 sent to /dev/null for the duration: what C++ code writes there
    (TensorFlow's start-up lines, the LiteRT converter's MLIR diagnostics, which its Python
    exception repeats) is dropped. Python's own sys.stderr writes are dropped too."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
