"""``metaseg export`` in all four formats, each loaded in a fresh process by its own runtime
(keras, TensorFlow's SavedModel loader, ai-edge-litert's interpreter, onnxruntime) and
compared with Keras's masks; quantised LiteRT files; .keras files of the keras-cv and
keras-hub models; and the bad input of the deployment formats, one line and exit 2 each."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.cli.segment import to_model_size
from metaseg.config import DataConfig, InnerConfig, ModelConfig, RunConfig
from metaseg import checkpoints
from metaseg.meta.adapt import Adapter
from metaseg.models import MODELS, register_model
from metaseg.pipeline import build
from tests.cli.conftest import own_stderr_lines, subprocess_env
from tests.cli.test_metaseg_cli import SIZE, save_initialisation, scene
from tests.conftest import time_limit

pytestmark = pytest.mark.slow  # every export format converted and run (minutes)

FILES = {"keras": "model.keras", "saved_model": "saved_model", "litert": "model.tflite",
         "onnx": "model.onnx"}
AGREEMENT = 0.995  # share of mask pixels every export must give as Keras does
# (width, height) of the real-ish scenes (a bright disc on dark noise), resized to the model's
# 64 x 64 the way metaseg predict does before they are fed to every export.
SCENES = ((70, 50), (64, 64), (100, 40), (48, 80), (64, 64), (90, 90))


def metaseg(*words, env=None, timeout=400):
    """``python -m metaseg WORDS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "metaseg", *words], capture_output=True,
                          text=True, env=env or subprocess_env(), timeout=time_limit(timeout))


def python(code, *args, timeout=300):
    """``python -c CODE ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, env=subprocess_env(),
                          timeout=time_limit(timeout))


def one_error_line(result):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in own_stderr_lines(result.stderr) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def save_model_initialisation(directory, model_name):
    """A metaseg checkpoint of a freshly built ``model_name`` at 64 px (cheap: not trained)."""
    config = RunConfig(data=DataConfig(image_size=SIZE), model=ModelConfig(model_name=model_name),
                       inner=InnerConfig(sgd=True), checkpoint=str(directory))
    model = build(config)
    state = checkpoints.MetaState(model, Adapter(model, config.inner).initial_state().opt)
    checkpoints.Saver(state.checkpoint, str(directory), keep=1).save(1)
    checkpoints.write_config(str(directory), dataclasses.asdict(config))
    return directory


def keras_model(init):
    return checkpoints.build_and_restore(checkpoints.open_checkpoint(str(init), "--model"))


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    return save_initialisation(tmp_path_factory.mktemp("export_init") / "init")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """uint8 [6, 64, 64, 3]: the scenes at the model's size, saved for the loaders."""
    batch = np.stack([to_model_size(scene(seed, w, h)[0], SIZE).numpy().astype(np.uint8)
                      for seed, (w, h) in enumerate(SCENES, start=20)])
    path = tmp_path_factory.mktemp("export_images") / "images.npy"
    np.save(path, batch)
    return batch, path


@pytest.fixture(scope="module")
def exported(init, tmp_path_factory):
    """{format: path}: ``metaseg export`` of the initialisation in each of the four formats."""
    root = tmp_path_factory.mktemp("exported")
    paths = {}
    for fmt, name in FILES.items():
        paths[fmt] = root / name
        result = metaseg("export", "--model", str(init), "--format", fmt,
                         "--output", str(paths[fmt]))
        assert result.returncode == 0, result.stderr[-3000:]
    return paths


# Each loader: argv = export path, images.npy, output.npy; writes masks uint8 [N, S, S].
LOADERS = {
    "keras": """
        import sys
        import numpy as np
        import keras
        import metaseg.models  # registers metaseg's layers, nothing else
        model = keras.models.load_model(sys.argv[1])
        probabilities = model(np.load(sys.argv[2]).astype("float32"), training=False)
        np.save(sys.argv[3], np.where(np.asarray(probabilities)[..., 1] > 0.5, 255, 0))
    """,
    "saved_model": """
        import sys
        import numpy as np
        import tensorflow as tf
        served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        masks = served(images=tf.constant(np.load(sys.argv[2])))["masks"].numpy()
        assert "metaseg" not in sys.modules  # a SavedModel needs TensorFlow only
        np.save(sys.argv[3], masks)
    """,
    "litert": """
        import sys
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
        runner = Interpreter(model_path=sys.argv[1]).get_signature_runner()
        masks = runner(images=np.load(sys.argv[2]))["masks"]
        assert "tensorflow" not in sys.modules and "metaseg" not in sys.modules
        np.save(sys.argv[3], masks)
    """,
    "onnx": """
        import sys
        import numpy as np
        import onnxruntime
        session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
        (masks,) = session.run(["masks"], {"images": np.load(sys.argv[2])})
        assert "tensorflow" not in sys.modules and "metaseg" not in sys.modules
        np.save(sys.argv[3], masks)
    """,
}


def load_masks(fmt, path, images_path, tmp_path):
    out = tmp_path / f"{fmt}_masks.npy"
    result = python(LOADERS[fmt], path, images_path, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out)


@pytest.mark.parametrize("fmt", list(FILES))
def test_each_export_loads_in_its_own_runtime_and_agrees_with_keras(fmt, exported, init, images,
                                                                     tmp_path):
    batch, images_path = images
    probabilities = keras_model(init)(batch.astype(np.float32), training=False).numpy()[..., 1]
    expected = np.where(probabilities > 0.5, 255, 0)
    assert 0.01 < np.mean(expected > 0) < 0.99, "Keras's masks are all one class"
    masks = load_masks(fmt, exported[fmt], images_path, tmp_path)
    assert masks.shape == (len(SCENES), SIZE, SIZE) and set(np.unique(masks)) <= {0, 255}
    assert np.mean(masks == expected) >= AGREEMENT


@pytest.mark.parametrize("quantize", ["int8", "float16"])
def test_quantised_litert_is_smaller_and_runs(quantize, init, exported, images, tmp_path):
    path = tmp_path / f"model_{quantize}.tflite"
    result = metaseg("export", "--model", str(init), "--format", "litert", "--quantize",
                     quantize, "--output", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    ratio = os.path.getsize(path) / os.path.getsize(exported["litert"])
    assert ratio < {"int8": 0.4, "float16": 0.6}[quantize], ratio
    masks = load_masks("litert", path, images[1], tmp_path)
    float_masks = load_masks("litert", exported["litert"], images[1], tmp_path)
    assert masks.shape == float_masks.shape and np.mean(masks == float_masks) >= 0.9


@pytest.mark.parametrize("model_name", ["deeplabv3plus", "segformer_b0", "deeplabv3_hub"])
def test_keras_export_of_keras_cv_and_keras_hub_models(model_name, images, tmp_path):
    batch, images_path = images
    init = save_model_initialisation(tmp_path / "init", model_name)
    path = tmp_path / "model.keras"
    result = metaseg("export", "--model", str(init), "--format", "keras", "--output", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    probabilities = keras_model(init)(batch.astype(np.float32), training=False).numpy()[..., 1]
    masks = load_masks("keras", path, images_path, tmp_path)
    assert np.mean(masks == np.where(probabilities > 0.5, 255, 0)) >= AGREEMENT


# --- bad input ---------------------------------------------------------------------------

HIDDEN_MODULE_EXPORT = """
    import sys
    sys.modules[sys.argv[1]] = None  # as if the package were not installed
    from metaseg.__main__ import main
    sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("fmt, module", [("onnx", "tf2onnx"), ("onnx", "onnxruntime"),
                                         ("litert", "ai_edge_litert")])
def test_missing_export_package_names_the_extra(fmt, module, init, tmp_path):
    output = tmp_path / FILES[fmt]
    result = python(HIDDEN_MODULE_EXPORT, module, "export", "--model", init, "--format", fmt,
                    "--output", output)
    line = one_error_line(result)
    assert line.startswith(f"error: --format {fmt} needs the Python package {module} ")
    assert line.endswith('install it with: pip install "metaseg[export]"')
    assert not os.listdir(tmp_path)


class Antialiased(keras.layers.Layer):
    """Halves the image size with antialiasing: tf.ScaleAndTranslate, no LiteRT op for it."""

    def call(self, x):
        return tf.image.resize(x, tf.shape(x)[1:3] // 2, antialias=True)


def antialiased(config):
    """A user model (register_model) with one op the LiteRT converter cannot map."""
    del config
    images = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Rescaling(1 / 255)(images))
    x = keras.layers.UpSampling2D(2)(Antialiased(name="halve")(x))
    return keras.Model(images, keras.layers.Conv2D(2, 1, name="final_layer_weights")(x))


def test_litert_export_of_an_op_the_converter_cannot_handle_names_it(tmp_path):
    register_model("antialiased", antialiased)
    try:
        init = save_model_initialisation(tmp_path / "init", "antialiased")
    finally:
        MODELS.pop("antialiased")
    out = tmp_path / "out"
    out.mkdir()
    code = """
        import sys
        from metaseg.__main__ import main
        from metaseg.models import register_model
        from tests.cli.test_export_formats import antialiased
        register_model("antialiased", antialiased)
        sys.exit(main(sys.argv[1:]))
    """
    result = python(code, "export", "--model", init, "--format", "litert",
                    "--output", out / "model.tflite")
    line = one_error_line(result)
    assert line.startswith("error: --format litert: the LiteRT converter has no built-in op for "
                           "TensorFlow op ScaleAndTranslate (in "), line
    assert "halve" in line and "export --format onnx or saved_model instead" in line
    assert not os.listdir(out)  # nothing half-written


@pytest.mark.parametrize("words, message", [
    (["--format", "onnx", "--quantize", "int8", "--output", "m.onnx"],
     "error: --quantize int8 applies to --format litert only, not --format onnx"),
    (["--format", "litert", "--output", "m.onnx"],
     "error: --output m.onnx: a --format litert export must be a file name ending in .tflite"),
    (["--format", "onnx", "--output", "m.tflite"],
     "error: --output m.tflite: a --format onnx export must be a file name ending in .onnx"),
])
def test_deployment_flags_misused_are_one_line(words, message, init, tmp_path):
    result = subprocess.run([sys.executable, "-m", "metaseg", "export", "--model", str(init),
                             *words], capture_output=True, text=True, cwd=tmp_path,
                            env=subprocess_env(), timeout=time_limit(300))
    assert one_error_line(result) == message
    assert not os.listdir(tmp_path)


def test_existing_litert_output_needs_overwrite(init, tmp_path):
    output = tmp_path / "model.tflite"
    output.write_bytes(b"not ours to replace")
    result = metaseg("export", "--model", str(init), "--format", "litert", "--output",
                     str(output))
    assert "already exists" in one_error_line(result) and "--overwrite" in result.stderr
    assert output.read_bytes() == b"not ours to replace"
