"""The ``metaseg`` command end to end at 64 px: adapt on 3 generated support pairs, predict,
export both formats and reload each in a fresh process, info, and bad input ending in one
line with exit code 2 (or 1 when some images could not be decoded)."""
import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from metaseg.__main__ import main
from metaseg.cli.segment import Segmenter
from metaseg.config import DataConfig, EvalConfig, InnerConfig, ModelConfig, RunConfig
from metaseg import checkpoints
from metaseg.meta.adapt import Adapter
from metaseg.pipeline import build
from tests.cli.conftest import own_stderr_lines, subprocess_env
from tests.conftest import time_limit

SIZE = 64
UHO_LR, UHO_STEPS = 0.02, 3
# (name, width, height): query images of other sizes and aspect ratios than the model's.
QUERIES = (("q1.jpg", 70, 50), ("q2.png", 64, 64), ("q3.jpg", 100, 40))


def scene(seed, width, height):
    """image uint8 [H, W, 3] (dark noise, a bright disc) and its mask uint8 [H, W] 0/255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.4, 0.6) * height, rng.uniform(0.4, 0.6) * width
    inside = ((yy - cy) / (0.3 * height)) ** 2 + ((xx - cx) / (0.3 * width)) ** 2 < 1
    image = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    image[inside] = (230, 200, 40)
    return image, np.where(inside, 255, 0).astype(np.uint8)


def write_support(directory, *, half_size_mask="b"):
    """Flat layout: a.jpg/a.png (80x60), b (its mask at half size: same aspect), c (64x64)."""
    directory.mkdir(parents=True)
    for seed, (stem, (w, h)) in enumerate({"a": (80, 60), "b": (80, 60), "c": (64, 64)}.items()):
        image, mask = scene(seed, w, h)
        Image.fromarray(image).save(directory / f"{stem}.jpg", quality=95)
        if stem == half_size_mask:
            mask = np.asarray(Image.fromarray(mask).resize((w // 2, h // 2), Image.NEAREST))
        Image.fromarray(mask).save(directory / f"{stem}.png")
    return directory


def write_queries(directory, broken=False):
    directory.mkdir(parents=True)
    for seed, (name, w, h) in enumerate(QUERIES, start=10):
        Image.fromarray(scene(seed, w, h)[0]).save(directory / name)
    if broken:
        (directory / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return directory


def save_initialisation(directory, eval_batch=2):
    """A metaseg checkpoint of a freshly built EfficientLab-B0 --rsd 2 4 at 64 px, with UHO
    values stored in its config.json (adaptation batches of ``eval_batch``)."""
    config = RunConfig(data=DataConfig(image_size=SIZE), model=ModelConfig(rsd=(2, 4)),
                       inner=InnerConfig(sgd=True, learning_rate=0.5, loss_name="bce_dice"),
                       eval=EvalConfig(eval_iters=1, eval_batch=eval_batch),
                       checkpoint=str(directory))
    model = build(config)
    state = checkpoints.MetaState(model, Adapter(model, config.inner).initial_state().opt)
    state.iteration.assign(7)
    checkpoints.Saver(state.checkpoint, str(directory), keep=1).save(7)
    checkpoints.write_config(str(directory), {**dataclasses.asdict(config),
                                              "uho_learning_rate": UHO_LR, "uho_steps": UHO_STEPS})
    return directory


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    """A saved initialisation (cheap: built, not trained), shared by the module's tests."""
    return save_initialisation(tmp_path_factory.mktemp("metaseg_init") / "init")


def main_logging_warnings(argv):
    """``main(argv)`` -> (exit code, warning messages logged)."""
    records = _Records()
    logging.getLogger("absl").addHandler(records)
    try:
        return main(argv), records.messages
    finally:
        logging.getLogger("absl").removeHandler(records)


def read_png(path):
    with Image.open(path) as img:
        return np.asarray(img)


def trainable(directory):
    """Every trainable weight of the newest checkpoint in ``directory``, in order."""
    reader = tf.train.load_checkpoint(checkpoints.latest(str(directory)))
    count = sum(1 for name in reader.get_variable_to_shape_map()
                if name.startswith("trainable/"))
    return [reader.get_tensor(f"trainable/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(count)]


def check_adapt(init, support, query, out):
    code, warnings = main_logging_warnings([
        "adapt", "--init", str(init), "--support", str(support), "--query", str(query),
        "--output", str(out), "--image_size", str(SIZE)])
    assert code == 0
    for name, w, h in QUERIES:
        stem = os.path.splitext(name)[0] + ".png"
        mask, shown = read_png(out / "masks" / stem), read_png(out / "overlays" / stem)
        assert mask.shape == (h, w) and mask.dtype == np.uint8  # the image's own size
        assert set(np.unique(mask)) <= {0, 255}
        assert shown.shape == (h, w, 3)
    # the mask of b was half size with the same aspect ratio: resized with a warning
    assert any("b.png" in m and "same aspect ratio" in m for m in warnings)
    # the adapted model: our layout, UHO's steps and rate, weights moved away from the init
    model_dir = out / "model"
    assert checkpoints.detect(str(model_dir)).kind is checkpoints.Kind.ADAPTED
    saved, initial = (json.loads((d / "config.json").read_text()) for d in (model_dir, init))
    assert saved == {**initial, "checkpoint": str(model_dir)}  # the same model, same UHO values
    record = json.loads((model_dir / "adaptation.json").read_text())
    assert record["steps"] == UHO_STEPS and record["learning_rate"] == pytest.approx(UHO_LR)
    assert record["support"] == ["a.jpg", "b.jpg", "c.jpg"] and record["image_size"] == SIZE
    assert record["hyperparameters_from"] == "steps from UHO, learning rate from UHO"
    assert len(record["support_losses"]) == UHO_STEPS
    assert np.all(np.isfinite(record["support_losses"]))
    before, after = trainable(init), trainable(model_dir)
    assert [a.shape for a in after] == [b.shape for b in before]
    assert not all(np.array_equal(a, b) for a, b in zip(after, before))


def check_predict(adapted, root, capsys):
    query = write_queries(root / "query_with_broken", broken=True)
    output = root / "predicted"
    output.mkdir()
    (output / "keep.txt").write_text("not ours")
    code = main(["predict", "--model", str(adapted), "--input", str(query),
                 "--output", str(output), "--overwrite"])
    assert code == 1  # finished, but one image had no mask
    error_lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1 and "1 of 4" in error_lines[0]
    assert "broken.jpg" in error_lines[0]
    assert (output / "keep.txt").exists()  # --overwrite replaces our files only
    assert not (output / "masks" / "broken.png").exists()
    for name, _, _ in QUERIES:  # the same model on the same images: the same masks
        stem = os.path.splitext(name)[0] + ".png"
        np.testing.assert_array_equal(read_png(output / "masks" / stem),
                                      read_png(adapted / "masks" / stem))


EXPORT_CHECK = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    saved_model_dir, keras_file, inputs, out = sys.argv[1:5]
    served = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    assert "metaseg" not in sys.modules  # a SavedModel needs TensorFlow only
    masks = {}
    for i, path in enumerate(sys.argv[5:]):
        image = np.asarray(Image.open(path).convert("RGB"))[None]
        masks[f"mask_{i}"] = served(images=tf.constant(image))["masks"].numpy()
    import keras
    import metaseg.models  # registers the custom layers, nothing else
    model = keras.models.load_model(keras_file)
    np.savez(out, probabilities=model(np.load(inputs), training=False).numpy(), **masks)
""")


def check_export(adapted, query, tmp_path):
    keras_file, saved_model = tmp_path / "adapted.keras", tmp_path / "saved_model"
    for fmt, path in (("keras", keras_file), ("saved_model", saved_model)):
        assert main(["export", "--model", str(adapted), "--format", fmt,
                     "--output", str(path)]) == 0
    inputs = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.save(tmp_path / "inputs.npy", inputs)
    queries = [str(query / name) for name, _, _ in QUERIES]
    result = subprocess.run(
        [sys.executable, "-c", EXPORT_CHECK, str(saved_model), str(keras_file),
         str(tmp_path / "inputs.npy"), str(tmp_path / "out.npz"), *queries],
        capture_output=True, text=True, env=subprocess_env(), timeout=time_limit(300), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = np.load(tmp_path / "out.npz")
    source = checkpoints.open_checkpoint(str(adapted), "--model")
    model = checkpoints.build_and_restore(source)
    np.testing.assert_allclose(reloaded["probabilities"], model(inputs, training=False),
                               atol=1e-5)
    segmenter = Segmenter(model, SIZE)
    for i, path in enumerate(queries):
        image = read_png(path) if path.endswith(".png") else np.asarray(Image.open(path))
        in_process = segmenter.serve(tf.constant(image[None]))["masks"].numpy()
        np.testing.assert_array_equal(reloaded[f"mask_{i}"], in_process)
        # metaseg adapt predicted the three images as one batch, the SavedModel one at a
        # time: the same ops, so at most a pixel whose probability is within float rounding
        # of 0.5 may differ.
        stem = os.path.splitext(os.path.basename(path))[0] + ".png"
        written = read_png(adapted / "masks" / stem)
        assert np.mean(reloaded[f"mask_{i}"][0] != written) <= 1e-3


def info(path, capsys):
    """``metaseg info PATH`` as {key: value}."""
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip())


def test_adapt_predict_export_end_to_end(init, tmp_path, capsys):
    """One chain, so the adaptation is traced once whichever worker runs it."""
    support, query = write_support(tmp_path / "support"), write_queries(tmp_path / "query")
    adapted = tmp_path / "adapted"
    check_adapt(init, support, query, adapted)
    check_predict(adapted, tmp_path, capsys)
    check_export(adapted, query, tmp_path)
    described = info(adapted, capsys)
    assert "adapted model" in described["what"]
    assert f"on 3 support images: {UHO_STEPS} steps" in described["what"]
    assert described["UHO"].strip().startswith(f"learning rate {UHO_LR:g}")


def test_info_describes_initialisation_and_tf1_checkpoint(init, tf1_checkpoint, capsys):
    described = {k: v.strip() for k, v in info(init, capsys).items()}
    assert "efficientnet-b0 backbone, --rsd 2 4" in described["architecture"]
    assert described["image size"] == f"{SIZE} px"
    assert described["what"].startswith("meta-trained initialisation, meta-iteration 7 ")
    assert described["meta-training"].startswith("reptile")
    assert described["UHO"].startswith(f"learning rate {UHO_LR:g}, steps {UHO_STEPS}")
    described = info(tf1_checkpoint, capsys)
    assert "authors' TF1" in described["checkpoint"]
    assert "efficientnet-b0 backbone, --rsd 2 4" in described["architecture"]
    assert described["image size"].strip().startswith("224 px")
    assert "59 steps of batch 8, SGD at 0.0005" in described["evaluation"]


def test_predict_with_tf1_checkpoint(tf1_checkpoint, tmp_path):
    """The authors' checkpoint folder works as --model: published architecture, 224 px."""
    query = tmp_path / "query"
    query.mkdir()
    Image.fromarray(scene(0, 90, 60)[0]).save(query / "photo.jpg")
    code, _ = main_logging_warnings(["predict", "--model", str(tf1_checkpoint), "--input",
                                      str(query), "--output", str(tmp_path / "out")])
    assert code == 0
    mask = read_png(tmp_path / "out" / "masks" / "photo.png")
    assert mask.shape == (60, 90) and set(np.unique(mask)) <= {0, 255}


# --- bad input: one line on stderr, exit code 2, nothing written -------------------------

def _mask_other_aspect(support):
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(support / "a.png")


def _mask_label_map(support):
    """A label map of two classes (0/1/2): thresholding would empty it, so it is refused."""
    mask = (read_png(support / "c.png") > 0).astype(np.uint8) * 2
    mask[:2, :3] = 1
    Image.fromarray(mask).save(support / "c.png")


def _image_without_mask(support):
    (support / "c.png").unlink()


def _support_image_undecodable(support):
    (support / "a.jpg").write_bytes(b"garbage")


BAD_SUPPORT = {
    "mask of another aspect ratio": (_mask_other_aspect, ["a.png", "30x30", "80x60",
                                                          "different aspect ratio"]),
    "mask label map of two classes": (_mask_label_map, ["c.png", "not a 0/255 mask",
                                                         "non-zero values: 1, 2"]),
    "image without mask": (_image_without_mask, ["images without a mask: c"]),
    "support image undecodable": (_support_image_undecodable, ["cannot decode", "a.jpg"]),
}


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def adapt_args(init, support, query, output, *extra):
    return ["adapt", "--init", str(init), "--support", str(support), "--query", str(query),
            "--output", str(output), *extra]


@pytest.mark.parametrize("case", sorted(BAD_SUPPORT))
def test_bad_support_folder(case, init, tmp_path, capsys):
    spoil, expected = BAD_SUPPORT[case]
    support, query = write_support(tmp_path / "support"), write_queries(tmp_path / "query")
    spoil(support)
    with pytest.raises(SystemExit) as exit_info:
        main(adapt_args(init, support, query, tmp_path / "out"))
    assert exit_info.value.code == 2
    line = one_error_line(capsys)
    for piece in expected:
        assert piece in line, line
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_bad_query_output_checkpoint_and_flags(init, tmp_path, capsys):
    support, query = write_support(tmp_path / "support"), write_queries(tmp_path / "query")
    (tmp_path / "empty").mkdir()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.png").write_bytes(b"")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"0")
    cases = [
        (adapt_args(init, support, tmp_path / "empty", tmp_path / "o1"), "holds no images"),
        (adapt_args(init, support, query, tmp_path / "used"), "is not empty"),
        (adapt_args(tmp_path / "junk", support, query, tmp_path / "o2"),
         "is not a checkpoint metaseg knows"),
        (adapt_args(init, support, query, tmp_path / "o3", "--image_size", "50"),
         "multiple of 16"),
        (["predict", "--model", str(init), "--input", str(tmp_path / "nowhere"),
          "--output", str(tmp_path / "o4")], "does not exist"),
        (["export", "--model", str(init), "--format", "keras", "--output",
          str(tmp_path / "model.h5")], "ending in .keras"),
        (["adapt", "--init", str(init)], "required"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert expected in one_error_line(capsys), argv
    assert sorted(os.listdir(tmp_path)) == ["empty", "junk", "query", "support", "used"]
    assert os.listdir(tmp_path / "used") == ["old.png"]


def test_console_entry_point_one_line_error(tmp_path):
    """``python -m metaseg`` (what the console script runs) on an unknown checkpoint."""
    result = subprocess.run(
        [sys.executable, "-m", "metaseg", "info", str(tmp_path)], capture_output=True,
        text=True, env=subprocess_env(), timeout=time_limit(120), cwd=tmp_path)
    assert result.returncode == 2
    assert own_stderr_lines(result.stderr) == [
        f"error: CHECKPOINT {tmp_path} is not a checkpoint metaseg knows: expected a folder "
        "meta-training wrote (model.ckpt-* and config.json), the --output folder of metaseg "
        "adapt, a preset (config.json, model.weights.h5, metadata.json), or an authors' TF1 "
        "checkpoint folder"]
