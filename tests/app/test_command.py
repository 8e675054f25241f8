"""``metaseg app`` as a user starts it: the URL on 127.0.0.1, settings kept in the work
directory across restarts, and one ``error:`` line (exit 2) for a port in use or bad flags."""
import json
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.app.conftest import SCENES, start_server, stop_server, write_scenes
from tests.cli.conftest import own_stderr_lines, subprocess_env
from tests.conftest import time_limit


def get_json(url):
    with urllib.request.urlopen(url, timeout=time_limit(30)) as response:
        return json.loads(response.read())


def run_app(args, cwd):
    return subprocess.run([sys.executable, "-m", "metaseg", "app", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=subprocess_env(),
                          timeout=time_limit(120))


def test_serves_on_loopback_and_a_restart_continues_from_the_work_directory(init, tmp_path):
    images = write_scenes(tmp_path / "images")
    work = tmp_path / "work"
    process, url = start_server(["--init", init, "--images", images, "--workdir", work,
                                 "--port", 0], cwd=tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert get_json(url + "api/images") == sorted(n for n, _, _ in SCENES)
    finally:
        assert stop_server(process) == 0
    process, url = start_server(["--workdir", work, "--port", 0], cwd=tmp_path)  # restart
    try:
        overview = get_json(url + "api/gallery")
        assert overview["images_folder"] == str(images)
        assert overview["defaults"]["init"] == str(init) and overview["defaults"]["steps"] == 3
    finally:
        stop_server(process)


def test_port_in_use_is_one_error_line(init, tmp_path):
    images = write_scenes(tmp_path / "images")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_app(["--init", init, "--images", images, "--workdir", tmp_path / "work",
                          "--port", port], cwd=tmp_path)
    assert result.returncode == 2
    assert own_stderr_lines(result.stderr) == [
        f"error: port {port} on 127.0.0.1 is already in use (another metaseg app?); stop that "
        "server or pass another --port"]
    assert result.stdout == ""


@pytest.mark.parametrize("case", ["no images folder yet", "missing images folder", "bad init",
                                  "port out of range", "unknown flag"])
def test_bad_startup_is_one_error_line(case, init, tmp_path):
    images = write_scenes(tmp_path / "images")
    args, expected = {
        "no images folder yet": (["--init", init], "--images FOLDER is needed: work directory"),
        "missing images folder": (["--images", tmp_path / "nope"], "does not exist"),
        "bad init": (["--images", images, "--init", tmp_path / "nope"],
                     f"error: --init {tmp_path / 'nope'} does not exist"),
        "port out of range": (["--images", images, "--port", 70000],
                              "--port must be in 0..65535, got 70000"),
        "unknown flag": (["--images", images, "--prot", 1], "(did you mean --port?)"),
    }[case]
    result = run_app([*args, "--workdir", tmp_path / "work"], cwd=tmp_path)
    assert result.returncode == 2
    lines = own_stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_the_output_of_metaseg_adapt_names_the_initialisation(tmp_path):
    """``metaseg app --workdir OUT --images DIR`` on an adapt output: its adaptation.json says
    which initialisation to adapt again; flags and stored settings come first."""
    from metaseg.app import command, workdir  # pylint: disable=import-outside-toplevel
    images = write_scenes(tmp_path / "images")
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "adaptation.json").write_text(json.dumps({"initialisation": "/runs/q"}))
    assert command.resolve(str(out), str(images), None) == (str(images), "/runs/q")
    assert command.resolve(str(out), str(images), "/other") == (str(images), "/other")
    workdir.store_settings(str(out), {"images": str(images), "init": "/stored"})
    assert command.resolve(str(out), None, None) == (str(images), "/stored")
