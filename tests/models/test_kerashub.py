"""keras-hub segmenters as --model_name choices, built offline from their configurations:
meta-trained end to end by run_metasegnet.py (2 meta-iterations, 64 px, the tiny embedded
benchmark), their logits wired the way the registry expects, and one-line refusals."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg import pipeline
from metaseg.config import DataConfig, ModelConfig, RunConfig
from metaseg.errors import ConfigError
from metaseg import checkpoints
from metaseg.models import build_model
from tests.cli.conftest import own_stderr_lines, run_script, subprocess_env
from tests.cli.test_export_formats import save_model_initialisation
from tests.cli.test_metaseg_cli import write_queries, write_support
from tests.cli.test_run_metasegnet import mean_iou_printed
from tests.conftest import time_limit

SIZE = 64
HUB_MODELS = ("segformer_b0", "deeplabv3_hub")
TINY_BENCHMARK = ("--dataset synthetic --synthetic_num_classes 12 "
                  "--synthetic_examples_per_class 10 --synthetic_image_size 64").split()
TRAINING = ("--image_size 64 --meta-iters 2 --meta-batch 1 --inner-iters 1 --inner-batch 2 "
            "--train-shots 4 --sgd --learning-rate 0.1 --loss_name bce_dice --shots 5 "
            "--eval-batch 2 --eval-iters 2 --eval-samples 1 --serially_eval_all_test_tasks "
            "--noeval_train_tasks").split()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Where the tiny benchmark is generated once for the module's runs."""
    return tmp_path_factory.mktemp("hub_cache")


@pytest.mark.parametrize("name", HUB_MODELS)
def test_logits_at_the_input_resolution(name):
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(model_name=name), image_size=SIZE)
    x = tf.random.uniform([2, SIZE, SIZE, 3], maxval=255.0)
    logits = model.logits_model(x, training=False)
    assert logits.shape == (2, SIZE, SIZE, 2)  # SegFormer's 1/4-resolution map resized
    np.testing.assert_allclose(tf.nn.softmax(logits), model(x, training=False), atol=1e-6)
    # The final 1x1 convolution is a top-level layer (--do_not_restore_final_layer_weights).
    final = model.get_layer(model.final_layer_name)
    assert isinstance(final, keras.layers.Conv2D) and final.filters == 2
    # The meta-learner traces with unknown image sizes: the graph still runs.
    traced = tf.function(lambda images: model.logits_model(images, training=True),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    assert traced(x).shape == (2, SIZE, SIZE, 2)


@pytest.mark.slow  # meta-trains each keras-hub model through run_metasegnet.py (minutes)
@pytest.mark.parametrize("name", HUB_MODELS)
def test_meta_trained_end_to_end_by_run_metasegnet(name, cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    words = ["--model_name", name, *TINY_BENCHMARK, "--cache_dir", str(cache_dir), *TRAINING,
             "--checkpoint", str(run_dir)]
    result = run_script(words, cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 0.0 <= mean_iou_printed(result.stdout) <= 1.0
    assert checkpoints.read_config(str(run_dir))["model"]["model_name"] == name
    # The meta-learned weights moved away from the seeded initialisation the run started from.
    config = RunConfig(data=DataConfig(image_size=SIZE), model=ModelConfig(model_name=name))
    start = pipeline.build(config)
    before = [v.numpy().copy() for v in start.trainable_variables]
    assert checkpoints.restore_weights(start, str(run_dir)) == 2
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, start.trainable_variables)]
    assert sum(changed) > len(changed) // 2, "meta-training left most weights unchanged"


def test_image_size_not_a_multiple_of_32_is_one_line(tmp_path):
    result = run_script(["--model_name", "segformer_b0", *TINY_BENCHMARK, "--cache_dir",
                         str(tmp_path / "cache"), "--image_size", "48", "--meta-iters", "1",
                         "--checkpoint", str(tmp_path / "run")], cwd=tmp_path, timeout=200)
    assert result.returncode == 2
    lines = own_stderr_lines(result.stderr)
    assert lines[-1].startswith("error: --model_name segformer_b0 needs --image_size a "
                                "multiple of 32"), lines[-3:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", HUB_MODELS)
def test_without_keras_hub_says_how_to_install(name, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub -> ImportError
    with pytest.raises(ConfigError, match=r'pip install "metaseg\[kerashub\]"'):
        build_model(ModelConfig(model_name=name), image_size=SIZE)


def test_sized_models_need_the_image_size():
    with pytest.raises(ConfigError, match="built for one image size"):
        build_model(ModelConfig(model_name="segformer_b0"))


def test_metaseg_adapt_rebuilds_a_sized_model_at_the_image_size_asked_for(tmp_path):
    init = save_model_initialisation(tmp_path / "init", "segformer_b0")  # built at 64 px
    support, query = write_support(tmp_path / "support"), write_queries(tmp_path / "query")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "metaseg", "adapt", "--init", str(init), "--support",
         str(support), "--query", str(query), "--output", str(out), "--image_size", "96",
         "--steps", "1"], capture_output=True, text=True, env=subprocess_env(),
        timeout=time_limit(400))
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoints.read_config(str(out / "model"))["data"]["image_size"] == 96
    assert sorted(os.listdir(out / "masks")) == ["q1.png", "q2.png", "q3.png"]
