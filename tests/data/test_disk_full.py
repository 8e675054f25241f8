"""A disk that fills up during a conversion: one ``error:`` line, exit 2, no temporary file
and no partial shard under its final name, and the shards already written stay readable.

The disk is a small tmpfs mounted for the test (the tests run as root). Where mounting is
not allowed (a container without CAP_SYS_ADMIN, or METASEG_TEST_NO_MOUNT=1), the same
fault is injected instead: the tool runs under a wrapper whose TFRecordWriter raises what
TensorFlow raises on a full disk (ResourceExhaustedError) once a byte budget is spent, after
really writing the partial file.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from metaseg.data.shards import SHARD_SUFFIX, read_shard
from tests.cli.conftest import own_stderr_lines
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]
DISK_BYTES = 64 * 1024

FAULT_WRAPPER = textwrap.dedent("""
    import os, runpy, sys
    import tensorflow as tf
    budget = [int(os.environ["METASEG_TEST_DISK_BYTES"])]
    Real = tf.io.TFRecordWriter

    class FullDiskWriter(Real):
        def write(self, record):
            super().write(record)  # the partial file is really written
            budget[0] -= len(record)
            if budget[0] < 0:
                raise tf.errors.ResourceExhaustedError(None, None, "")

    tf.io.TFRecordWriter = FullDiskWriter
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
""")


def _try_mount(directory) -> bool:
    if os.environ.get("METASEG_TEST_NO_MOUNT"):
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs",
                             str(directory)], capture_output=True, text=True, check=False)
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """(directory on a 64 KiB disk, command prefix that runs a script against it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _try_mount(disk)
    if mounted:
        prefix = [sys.executable]
    else:
        wrapper = tmp_path / "full_disk_wrapper.py"
        wrapper.write_text(FAULT_WRAPPER)
        prefix = [sys.executable, str(wrapper)]
    try:
        yield disk, prefix
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def _run(prefix, script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", METASEG_TEST_DISK_BYTES=str(DISK_BYTES),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([*prefix, str(REPO / "data_tools" / script), *args],
                          capture_output=True, text=True, env=env, timeout=time_limit(240))


def _check_one_line_and_no_leftovers(result, output):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in own_stderr_lines(result.stderr) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "no space left on the device" in errors[0].lower(), errors
    assert str(output) in errors[0] and "free space" in errors[0]
    leftovers = [f for f in os.listdir(output) if f.endswith(".tmp") or "_temp" in f]
    assert leftovers == []
    shards = sorted(f for f in os.listdir(output) if f.endswith(SHARD_SUFFIX))
    for shard in shards:  # every shard under its final name is complete
        assert len(read_shard(output / shard)[0]) > 0
    return shards


def test_fss1000_converter_on_a_full_disk(small_disk, tmp_path):
    disk, prefix = small_disk
    rng = np.random.default_rng(0)
    for c in range(16):  # about 16 x 18 KB of incompressible noise: the disk fills up
        class_dir = tmp_path / "fss" / f"class_{c:02d}"
        class_dir.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
                class_dir / f"{k}.jpg", quality=100)
            mask = np.zeros((48, 48), np.uint8)
            mask[10:30, 5 + k:25 + k] = 255
            Image.fromarray(mask).save(class_dir / f"{k}.png")
    output = disk / "shards"
    result = _run(prefix, "fss_1000_image_to_tfrecord.py", "--input_dir", str(tmp_path / "fss"),
                  "--tfrecord_dir", str(output), "--image_size", "48", "--num_workers", "2")
    shards = _check_one_line_and_no_leftovers(result, output)
    assert len(shards) < 16
    assert "Wrote" not in result.stdout  # no summary claiming success


def test_synthetic_benchmark_on_a_full_disk(small_disk):
    disk, prefix = small_disk
    output = disk / "synthetic"
    result = _run(prefix, "make_synthetic_fss.py", "--output_dir", str(output),
                  "--num_classes", "30", "--examples_per_class", "6", "--image_size", "48",
                  "--num_workers", "1")
    _check_one_line_and_no_leftovers(result, output)
    assert not (output / "synthetic_benchmark.json").exists()  # never claims completeness
