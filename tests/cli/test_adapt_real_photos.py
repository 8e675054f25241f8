"""``metaseg adapt`` on real photos predicts with batch-norm statistics that fit them.

scikit-image's bundled sample photos (coins, the cameraman, a coffee cup, a retina), each
with a mask by one deterministic rule: Otsu's threshold of the grey image, the foreground
being the class that covers less of the image border. An initialisation's moving
statistics describe other images (here: a freshly built network's); after adaptation the
adapted model must segment its own support images in inference mode about as well as the
same weights do with batch statistics, which the carried-over moving statistics did not
(IoU 0.0 on every image before the fix, now ``--keep_moving_statistics``).
"""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from skimage import data as skimage_data
from skimage.color import rgb2gray
from skimage.filters import threshold_otsu

from metaseg import checkpoints
from metaseg.cli import segment
from tests.cli.conftest import REPO, subprocess_env
from tests.cli.test_metaseg_cli import SIZE, read_png, save_initialisation
from tests.conftest import time_limit

pytestmark = pytest.mark.slow  # adapting on real photos through the command line

PHOTOS = ("coins", "camera", "coffee", "retina")
# 40 steps move momentum-0.99 moving averages a third of the way (1 - 0.99 ** 40) to the
# support images' statistics: enough to fit the support set, not to fix the statistics.
STEPS, LEARNING_RATE = 40, 0.2


def photo(name):
    """(image uint8 [64, 64, 3], mask uint8 [64, 64] 0/255) of one sample photo."""
    image = getattr(skimage_data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = np.asarray(Image.fromarray(image[..., :3]).resize((SIZE, SIZE), Image.BILINEAR))
    grey = rgb2gray(image)
    foreground = grey > threshold_otsu(grey)
    border = np.concatenate([foreground[0], foreground[-1], foreground[:, 0],
                             foreground[:, -1]])
    if border.mean() > 0.5:
        foreground = ~foreground
    return image, np.where(foreground, 255, 0).astype(np.uint8)


def iou(a, b):
    a, b = a > 0, b > 0
    return float(((a & b).sum() + 1e-7) / ((a | b).sum() + 1e-7))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(support folder: images/ and masks/, query folder with the same images,
    {name: mask})."""
    root = tmp_path_factory.mktemp("photos")
    support, query = root / "support", root / "query"
    for folder in (support / "images", support / "masks", query):
        folder.mkdir(parents=True)
    masks = {}
    for name in PHOTOS:
        image, masks[name] = photo(name)
        assert 0.1 < np.mean(masks[name] > 0) < 0.9  # a real object, not all or nothing
        Image.fromarray(image).save(support / "images" / f"{name}.png")
        Image.fromarray(masks[name]).save(support / "masks" / f"{name}.png")
        Image.fromarray(image).save(query / f"{name}.png")
    return support, query, masks


def adapt(init, support, query, masks, output, *extra):
    """``metaseg adapt`` in a subprocess; {name: IoU of the mask it wrote}."""
    result = subprocess.run(
        [sys.executable, "-m", "metaseg", "adapt", "--init", str(init), "--support",
         str(support), "--query", str(query), "--output", str(output), "--steps", str(STEPS),
         "--learning_rate", str(LEARNING_RATE), *extra],
        capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
        timeout=time_limit(300))
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: iou(read_png(output / "masks" / f"{name}.png"), mask)
            for name, mask in masks.items()}


def batch_statistics_ious(model_dir, query, masks):
    """IoU of the adapted weights on the support images predicted as one batch with batch
    statistics (training mode, dropout off), resized and thresholded as metaseg predicts."""
    model = checkpoints.build_and_restore(checkpoints.open_checkpoint(str(model_dir),
                                                                            "--model"))
    for layer in model._flatten_layers():  # pylint: disable=protected-access
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    images = {name: read_png(query / f"{name}.png") for name in PHOTOS}
    batch = tf.stack([segment.to_model_size(images[name], SIZE) for name in PHOTOS])
    foreground = model(batch, training=True)[..., 1]
    return {name: iou(segment.to_mask(segment.to_original_size(
        foreground[i], images[name].shape[:2])).numpy(), masks[name])
        for i, name in enumerate(PHOTOS)}


def test_adapted_model_predicts_with_support_statistics(photos, tmp_path):
    support, query, masks = photos
    # batches of 4 = the whole support set: the statistics are its batch statistics
    init = save_initialisation(tmp_path / "init", eval_batch=len(PHOTOS))
    adapted = adapt(init, support, query, masks, tmp_path / "out")
    reference = batch_statistics_ious(tmp_path / "out" / "model", query, masks)
    assert np.mean(list(reference.values())) > 0.5, reference  # the adaptation learned
    for name in PHOTOS:
        assert adapted[name] == pytest.approx(reference[name], abs=0.05), (adapted, reference)
    record = json.loads((tmp_path / "out" / "model" / "adaptation.json").read_text())
    assert record["batch_norm_statistics"] == "re-estimated on the support images"

    # the carried-over statistics (run_metasegnet.py's protocol): the same weights, far worse
    kept = adapt(init, support, query, masks, tmp_path / "kept", "--keep_moving_statistics")
    assert np.mean(list(kept.values())) < np.mean(list(reference.values())) - 0.3, kept
    record = json.loads((tmp_path / "kept" / "model" / "adaptation.json").read_text())
    assert record["batch_norm_statistics"] == "carried over from the initialisation"
