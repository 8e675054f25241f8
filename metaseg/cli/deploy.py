"""Deployment exports of an adapted model: a LiteRT (TFLite) file and an ONNX file.

Both are written by Keras's own exporter (``model.export(path, format="litert" | "onnx")``)
from a model that serves masks the way the SavedModel export does, at the model's own size
S (the checkpoint's ``--image_size``), because neither format has the antialiased resize
the SavedModel uses to take images of any size:

* input ``images``: uint8 ``[N, S, S, 3]``, RGB 0-255 (resize to S x S first, e.g. with
  ``metaseg.cli.segment.to_model_size``);
* output ``masks``: uint8 ``[N, S, S]``, 255 where the foreground probability is above 0.5,
  else 0; output ``probabilities``: float32 ``[N, S, S]``, the foreground probability.

N is dynamic: ONNX declares a symbolic batch dimension; LiteRT stores ``[1, S, S, 3]``
(shape signature ``[-1, S, S, 3]``), so its signature runner or ``resize_tensor_input``
takes other batch sizes. LiteRT uses built-in ops only (no Flex/TF ops, so the stock
interpreter runs it). Every file is checked in its own runtime (ai-edge-litert's
interpreter, onnxruntime) against Keras on a fixed probe batch before it is given its name.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from metaseg.cli import output, segment
from metaseg.errors import ConfigError, DataError
from metaseg.quiet import native_stderr_silenced

EXTRA = 'pip install "metaseg[export]"'
# --format -> the modules exporting and checking it needs (all in the ``export`` extra).
PACKAGES = {"litert": ("ai_edge_litert.interpreter",),
            "onnx": ("tf2onnx", "onnx", "onnxruntime")}
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
QUANTIZE = ("int8", "float16")
# A float export may differ from Keras by rounding only (foreground probability in [0, 1]).
FLOAT_TOLERANCE = 1e-3
_UNSUPPORTED_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_OP_LOCATION = r'fused\["{op}:", "([^"@]+)/{op}@'


def require(fmt: str) -> None:
    """ConfigError naming the extra to install if a module ``--format fmt`` needs is missing."""
    for module in PACKAGES.get(fmt, ()):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"--format {fmt} needs the Python package "
                              f"{module.split('.')[0]} ({e}); install it with: {EXTRA}") from None


@keras.saving.register_keras_serializable(package="metaseg")
class MaskHead(keras.layers.Layer):
    """Foreground probabilities float32 [N, S, S] -> masks uint8 [N, S, S] (0/255), at
    ``segment.THRESHOLD`` like ``segment.to_mask``; selecting between int32 values and
    casting after, because LiteRT has no built-in select on uint8."""

    def call(self, probabilities):
        return tf.cast(tf.where(probabilities > segment.THRESHOLD, 255, 0), tf.uint8)

    def compute_output_spec(self, probabilities):
        return keras.KerasTensor(probabilities.shape, dtype="uint8")


def serving_model(model: keras.Model, size: int) -> keras.Model:
    """uint8 images [N, S, S, 3] -> {"masks": uint8 [N, S, S], "probabilities": float32
    [N, S, S]}, around ``model`` (float32 [N, S, S, 3] in [0, 255] -> probabilities
    [N, S, S, 2], channel 1 foreground); shares ``model``'s variables."""
    images = keras.Input((size, size, 3), dtype="uint8", name="images")
    foreground = model(keras.ops.cast(images, "float32"))[..., 1]
    return keras.Model(images, {"masks": MaskHead(name="masks")(foreground),
                                "probabilities": foreground}, name="metaseg_deployed")


def _converter_options(quantize: Optional[str]) -> dict:
    """Keras LiteRT exporter options: built-in ops only, and the quantisation asked for."""
    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if quantize == "float16":  # weights stored as float16, computed in float32
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
        options["target_spec"]["supported_types"] = [tf.float16]
    elif quantize == "int8":  # dynamic range: int8 weights, activations quantised per call
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    return options


def unsupported_op_message(error: Exception) -> Optional[str]:
    """One line naming the ops the LiteRT converter could not map (and where), or None."""
    text = str(error)
    ops = list(dict.fromkeys(_UNSUPPORTED_OP.findall(text)))
    if not ops:
        return None
    where = []
    for op in ops:
        found = re.search(_OP_LOCATION.format(op=re.escape(op)), text)
        where.append(f"{op} (in {found.group(1)})" if found else op)
    return (f"--format litert: the LiteRT converter has no built-in op for TensorFlow op "
            f"{', '.join(where)}; export --format onnx or saved_model instead, or replace that "
            "op in the model")


@contextlib.contextmanager
def _quiet_stdout():
    """Keras's exporters print "Saved artifact at ..." and the converters write their
    diagnostics from C++ to stderr (the errors are raised again as Python exceptions);
    metaseg logs one line of its own instead."""
    with contextlib.redirect_stdout(io.StringIO()), native_stderr_silenced():
        yield


def _write(served: keras.Model, fmt: str, path: str, size: int,
           quantize: Optional[str]) -> None:
    signature = [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")]
    if fmt == "litert":
        try:
            with _quiet_stdout():
                served.export(path, format="litert", verbose=False, input_signature=signature,
                              **_converter_options(quantize))
        except Exception as e:  # the converter's errors have no narrower public type
            message = unsupported_op_message(e)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(message or f"--format litert: the LiteRT converter failed: "
                                       f"{first}") from None
    else:
        try:
            with _quiet_stdout():
                served.export(path, format="onnx", verbose=False, input_signature=signature)
        except Exception as e:  # tf2onnx raises plain exceptions for ops it cannot map
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"--format onnx: tf2onnx could not convert the model: {first}; "
                            "export --format saved_model or litert instead") from None


def probe_images(size: int, count: int = 2) -> np.ndarray:
    """uint8 [count, S, S, 3]: fixed smooth images with a bright disc (not all background)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for k in range(count):
        disc = (yy - 0.5) ** 2 + (xx - 0.4 - 0.2 * k) ** 2 < 0.08
        image = np.stack([80 * yy, 80 * xx, 40 + 0 * xx], -1) + rng.uniform(0, 30, (size, size, 3))
        image[disc] = (230, 200, 40)
        images.append(image)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def run_litert(path: str, images: np.ndarray) -> Dict[str, np.ndarray]:
    """The exported LiteRT file on uint8 images [N, S, S, 3], in ai-edge-litert's interpreter."""
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    runner = Interpreter(model_path=path).get_signature_runner()
    return {k: np.asarray(v) for k, v in runner(images=images).items()}


def run_onnx(path: str, images: np.ndarray) -> Dict[str, np.ndarray]:
    """The exported ONNX file on uint8 images [N, S, S, 3], in onnxruntime."""
    import onnxruntime  # pylint: disable=import-outside-toplevel
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: images})))


def _check(served: keras.Model, fmt: str, path: str, size: int,
           quantize: Optional[str]) -> str:
    """What checking the file at ``path`` in its runtime found (DataError if it is wrong)."""
    images = probe_images(size)
    expected = served(images, training=False)
    with native_stderr_silenced():  # the LiteRT interpreter announces its CPU delegate
        got = (run_litert if fmt == "litert" else run_onnx)(path, images)
    for name, dtype in (("masks", np.uint8), ("probabilities", np.float32)):
        if name not in got or got[name].shape != (len(images), size, size) or \
                got[name].dtype != dtype:
            raise DataError(f"--format {fmt}: the exported file's output {name!r} is "
                            f"{got.get(name, np.zeros(0)).shape} "
                            f"{getattr(got.get(name), 'dtype', 'missing')}, expected "
                            f"[{len(images)}, {size}, {size}] {np.dtype(dtype).name}")
    gap = float(np.max(np.abs(got["probabilities"] - expected["probabilities"].numpy())))
    agree = float(np.mean(got["masks"] == expected["masks"].numpy()))
    if quantize is None and gap > FLOAT_TOLERANCE:
        raise DataError(f"--format {fmt}: the exported file's probabilities differ from "
                        f"Keras's by up to {gap:.2g} on the probe images (allowed "
                        f"{FLOAT_TOLERANCE}); the conversion changed the model")
    return (f"probabilities within {gap:.2g} of Keras's, {100 * agree:.2f} % of mask pixels "
            "equal on the probe images")


def export(model: keras.Model, size: int, fmt: str, path: str,
           quantize: Optional[str] = None) -> None:
    """Write ``model`` (probabilities model of S x S images) as ``fmt`` to ``path``.

    Converted to a hidden temporary name beside ``path`` (``output.replaced``), checked in
    its runtime, then renamed: a failed export leaves nothing behind.
    """
    require(fmt)
    served = serving_model(model, size)
    with output.replaced(path, suffix=SUFFIXES[fmt]) as temporary:
        _write(served, fmt, temporary, size, quantize)
        checked = _check(served, fmt, temporary, size, quantize)
    logging.info("Checked %s in %s: %s", path, "ai-edge-litert's interpreter"
                 if fmt == "litert" else "onnxruntime", checked)
