"""Without the network, asking for ImageNet weights (``run_metasegnet.py --backbone_weights
imagenet``, ``make_pseudo_tasks.py``'s default backbone) ends in one line naming the file,
that it is downloaded once, and what to do offline.

Offline is simulated without touching the network: an empty KERAS_HOME (no cached weights)
and every proxy variable pointing at a closed local port, so Keras' download is refused
on this machine.
"""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.cli.conftest import own_stderr_lines, run_script, subprocess_env
from tests.cli.test_run_metasegnet import data_args
from tests.conftest import time_limit

REPO = pathlib.Path(__file__).resolve().parents[2]


def offline_env(tmp_path):
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    env = subprocess_env(KERAS_HOME=str(tmp_path / "keras_home"))
    for name in ("no_proxy", "NO_PROXY"):
        env.pop(name, None)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = proxy
    return env


def the_error_line(result):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in own_stderr_lines(result.stderr) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def test_run_metasegnet_imagenet_weights_offline(shards, tmp_path):
    env = offline_env(tmp_path)
    words = [*data_args(shards), "--image_size", "32", "--meta-iters", "1",
             "--backbone_weights", "imagenet", "--checkpoint", str(tmp_path / "run")]
    line = the_error_line(run_script(words, cwd=tmp_path, env=env, timeout=300))
    cache = tmp_path / "keras_home" / "models"
    assert line.startswith(
        "error: --backbone_weights imagenet needs Keras' ImageNet weights for efficientnet-b0 "
        "(efficientnetb0_notop.h5, downloaded from https://storage.googleapis.com/"
        f"keras-applications/ the first time and then kept in {cache}), and getting them "
        "failed: "), line
    assert "This needs the network once; offline, copy efficientnetb0_notop.h5 into " in line
    assert "--restore_efficient_net_weights_from" in line and "leave --backbone_weights unset" \
        in line


def test_make_pseudo_tasks_default_backbone_offline(tmp_path):
    env = offline_env(tmp_path)
    images = tmp_path / "unlabelled"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(images / f"{i}.jpg")
    result = subprocess.run(
        [sys.executable, str(REPO / "data_tools" / "make_pseudo_tasks.py"), "--input_dir",
         str(images), "--output_dir", str(tmp_path / "pseudo"), "--image_size", "32"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=time_limit(300))
    line = the_error_line(result)
    assert line.startswith("error: --backbone imagenet needs Keras' ImageNet weights for "
                           "efficientnet-b0 (efficientnetb0_notop.h5, downloaded from "), line
    assert "This needs the network once" in line
    assert "--backbone with a metaseg or TF1 checkpoint directory" in line
    assert not os.path.exists(tmp_path / "pseudo")
