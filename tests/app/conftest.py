"""Fixtures of the app tests: a cheap 64-px initialisation, small image folders (generated
scenes and scikit-image photos, of several sizes, with an undecodable file), a test client."""
import io
import pathlib

import numpy as np
import pytest
from PIL import Image

from metaseg.app.server import create_app
from metaseg.app.service import Service
from metaseg.app.workdir import WorkDir
from tests.cli.test_metaseg_cli import save_initialisation, scene

# (name, width, height) of the generated scenes: other sizes and aspects than the model's 64
SCENES = (("a.jpg", 80, 60), ("b.png", 64, 64), ("c.jpg", 100, 40), ("d.jpg", 70, 50))
BROKEN = "broken.jpg"


@pytest.fixture(scope="session")
def init(tmp_path_factory):
    """A saved initialisation (built, not trained: cheap) of EfficientLab-B0 at 64 px."""
    return save_initialisation(tmp_path_factory.mktemp("app_init") / "init")


def write_scenes(directory: pathlib.Path) -> pathlib.Path:
    """The SCENES images, an undecodable BROKEN file and a text file (ignored)."""
    directory.mkdir(parents=True)
    for seed, (name, w, h) in enumerate(SCENES):
        Image.fromarray(scene(seed, w, h)[0]).save(directory / name, quality=95)
    (directory / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (directory / "notes.txt").write_text("not an image\n")
    return directory


def scene_mask(name: str) -> np.ndarray:
    """The true mask uint8 [H, W] 0/255 of scene ``name``."""
    seed, (_, w, h) = next((i, s) for i, s in enumerate(SCENES) if s[0] == name)
    return scene(seed, w, h)[1]


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def read_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


@pytest.fixture
def scenes(tmp_path):
    return write_scenes(tmp_path / "images")


def make_client(workdir, images, init):
    """A TestClient of a fresh server on ``workdir`` (a new one = a server restart)."""
    from starlette.testclient import TestClient  # pylint: disable=import-outside-toplevel
    work = WorkDir(str(workdir), str(images))
    work.prepare()
    service = Service(work, None if init is None else str(init))
    return TestClient(create_app(service)), service


def start_server(args, cwd, seconds=120):
    """``python -m metaseg app ARGS`` in a subprocess -> (process, URL it printed)."""
    import select  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel
    from tests.cli.conftest import subprocess_env  # pylint: disable=import-outside-toplevel
    from tests.conftest import time_limit  # pylint: disable=import-outside-toplevel
    process = subprocess.Popen([sys.executable, "-m", "metaseg", "app", *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=cwd, env=subprocess_env())
    deadline = time.time() + time_limit(seconds)
    while time.time() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            if line.startswith("metaseg app: http"):
                return process, line.split()[2]
        if process.poll() is not None:
            raise AssertionError(f"metaseg app exited {process.returncode}: "
                                 f"{process.stderr.read()}")
    process.kill()
    raise AssertionError("metaseg app printed no URL")


def stop_server(process):
    """Ctrl+C, as a user stops it; returns the exit code."""
    import signal  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    from tests.conftest import time_limit  # pylint: disable=import-outside-toplevel
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=time_limit(30))
    except subprocess.TimeoutExpired:
        process.kill()
        raise
