"""Where ``metaseg adapt|predict|export`` write: masks appear under their final name only when
complete (a kill mid-write leaves none half-written), ``--output`` under a file or on a
read-only file system is one ``error:`` line with exit code 2 and nothing written, and the
progress line counts only the images that were segmented."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.cli.conftest import REPO, own_stderr_lines, subprocess_env
from tests.cli.test_metaseg_cli import QUERIES, save_initialisation, write_queries, \
    write_support
from tests.conftest import time_limit

# `metaseg ARGV` with two optional faults: METASEG_TEST_KILL_AT_PNG=n kills the process
# (SIGKILL) halfway through writing the n-th PNG; METASEG_TEST_READONLY=DIR makes every
# write under DIR fail as on a read-only file system (used where mounting one is not
# allowed).
WRAPPER = textwrap.dedent("""
    import builtins, errno, io, os, signal, sys
    kill_at = int(os.environ.get("METASEG_TEST_KILL_AT_PNG", "0"))
    if kill_at:
        from PIL import PngImagePlugin
        real_save, calls = PngImagePlugin._save, [0]
        def save(im, fp, filename, *args, **kwargs):
            calls[0] += 1
            if calls[0] < kill_at:
                return real_save(im, fp, filename, *args, **kwargs)
            encoded = io.BytesIO()
            real_save(im, encoded, filename, *args, **kwargs)
            fp.write(encoded.getvalue()[:len(encoded.getvalue()) // 2])
            fp.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        PngImagePlugin._save = save
        from PIL import Image
        Image.register_save("PNG", save)
    readonly = os.environ.get("METASEG_TEST_READONLY")
    if readonly:
        readonly = os.path.abspath(readonly)
        def refuse(path):
            path = os.path.abspath(os.fsdecode(path))
            if path == readonly or path.startswith(readonly + os.sep):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        real_open, real_mkdir, real_builtin_open = os.open, os.mkdir, builtins.open
        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_open(path, flags, *args, **kwargs)
        def mkdir(path, *args, **kwargs):
            refuse(path)
            return real_mkdir(path, *args, **kwargs)
        def builtin_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+"):
                refuse(file)
            return real_builtin_open(file, mode, *args, **kwargs)
        os.open, os.mkdir, builtins.open = os_open, mkdir, builtin_open
    import json
    from metaseg.__main__ import main
    if sys.argv[1] != "--cases":
        sys.exit(main(sys.argv[1:]))
    for argv in json.loads(sys.argv[2]):  # several commands, each after a marker line
        print(CASE_MARKER, file=sys.stderr, flush=True)
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        print(f"{CASE_MARKER} exit {code}", file=sys.stderr, flush=True)
""").replace("CASE_MARKER", repr("--- metaseg case ---"))


def metaseg(*argv, timeout=300, **faults):
    env = subprocess_env(**{f"METASEG_TEST_{k.upper()}": str(v) for k, v in faults.items()})
    return subprocess.run([sys.executable, "-c", WRAPPER, *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=time_limit(timeout))


def metaseg_cases(cases, **faults):
    """[(exit code, stderr)] of each ``metaseg ARGV`` in ``cases``, run one after the other in
    one subprocess (TensorFlow loads once)."""
    result = metaseg("--cases", json.dumps([[str(a) for a in argv] for argv in cases]),
                     **faults)
    assert result.returncode == 0, result.stderr[-3000:]
    parts = result.stderr.split("--- metaseg case ---\n")[1:]
    outcomes = []
    for part in parts:
        text, _, code = part.rpartition("--- metaseg case --- exit ")
        outcomes.append((int(code.strip()), text))
    assert len(outcomes) == len(cases), result.stderr[-3000:]
    return outcomes


def error_line(stderr):
    """The one ``error:`` line of ``stderr`` (log lines aside), asserting there is no other."""
    lines = [line for line in own_stderr_lines(stderr)
             if not line.startswith(("INFO:", "WARNING:", "ERROR:absl:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


def tree(root):
    """Every path under ``root`` (relative), with the size of each file."""
    found = {}
    for directory, _, files in os.walk(root):
        rel = os.path.relpath(directory, root)
        found[rel] = None
        for name in files:
            found[os.path.join(rel, name)] = os.path.getsize(os.path.join(directory, name))
    return found


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(initialisation, support folder, query folder) shared by the module's tests."""
    root = tmp_path_factory.mktemp("metaseg_output")
    return (save_initialisation(root / "init"), write_support(root / "support"),
            write_queries(root / "query"))


def test_predict_counts_only_the_images_it_segmented(inputs, tmp_path):
    init, _, _ = inputs
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(images / name)
    for name in ("c.jpg", "d.jpg"):
        (images / name).write_bytes(b"not an image")
    result = metaseg("predict", "--model", init, "--input", images, "--output", tmp_path / "out")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Segmented 2/4 images (2 could not be decoded)" in result.stderr
    assert "Segmented 4/4" not in result.stderr
    assert error_line(result.stderr).startswith("error: 2 of 4 input images could not be decoded")
    assert sorted(os.listdir(tmp_path / "out" / "masks")) == ["a.png", "b.png"]


def test_kill_while_writing_a_mask_leaves_no_partial_mask(inputs, tmp_path):
    """Killed halfway through the 3rd PNG (the mask of the 2nd query image)."""
    init, _, query = inputs
    out = tmp_path / "out"
    result = metaseg("predict", "--model", init, "--input", query, "--output", out,
                     kill_at_png=3)
    assert result.returncode == -9, result.stderr[-3000:]
    first, second = (os.path.splitext(name)[0] + ".png" for name, _, _ in QUERIES[:2])
    for sub in ("masks", "overlays"):
        final = sorted(n for n in os.listdir(out / sub) if not n.startswith("."))
        assert final == [first], (sub, final)  # the second mask is not under its name
        with Image.open(out / sub / first) as img:
            img.load()  # complete
    assert [n for n in os.listdir(out / "masks") if n.startswith(".")] != [], \
        "the half-written file is under a hidden temporary name"
    assert not (out / "masks" / second).exists()


def test_output_under_a_file_is_one_error_line(inputs, tmp_path):
    init, support, query = inputs
    (tmp_path / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    cases = [
        ["adapt", "--init", init, "--support", support, "--query", query, "--output",
         tmp_path / "notes.txt" / "out"],
        ["predict", "--model", init, "--input", query, "--output",
         tmp_path / "notes.txt" / "out"],
        ["export", "--model", init, "--format", "keras", "--output",
         tmp_path / "notes.txt" / "model.keras"],
        ["export", "--model", init, "--format", "saved_model", "--output",
         tmp_path / "notes.txt" / "sub" / "saved"],
    ]
    for argv, (code, stderr) in zip(cases, metaseg_cases(cases)):
        assert code == 2, (argv, stderr[-3000:])
        line = error_line(stderr)
        assert f"{tmp_path / 'notes.txt'} is a file, not a folder" in line, line
        assert "--output" in line and "Traceback" not in stderr
    assert tree(tmp_path) == before  # nothing written
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture
def readonly_folder(tmp_path):
    """(a read-only folder, faults for ``metaseg``): a read-only tmpfs where mounting is
    allowed (the tests run as root, whom chmod does not stop), else an injected EROFS."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    mounted = not os.environ.get("METASEG_TEST_NO_MOUNT") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
        capture_output=True, check=False).returncode == 0
    try:
        yield folder, ({} if mounted else {"readonly": folder})
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_output_on_a_read_only_file_system_is_one_error_line(inputs, readonly_folder, tmp_path):
    init, support, query = inputs
    folder, faults = readonly_folder
    cases = [
        ["adapt", "--init", init, "--support", support, "--query", query, "--output",
         folder / "out"],
        ["predict", "--model", init, "--input", query, "--output", folder],
        ["export", "--model", init, "--format", "keras", "--output", folder / "model.keras"],
        ["export", "--model", init, "--format", "saved_model", "--output", folder / "saved"],
    ]
    for argv, (code, stderr) in zip(cases, metaseg_cases(cases, **faults)):
        assert code == 2, (argv, stderr[-3000:])
        line = error_line(stderr)
        assert "Read-only file system" in line and str(folder) in line, line
        assert "--output" in line and "Traceback" not in stderr
    assert os.listdir(folder) == []
