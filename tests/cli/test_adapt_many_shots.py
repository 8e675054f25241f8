"""``metaseg adapt`` with many support images: the K mini-batches are built a chunk of steps
at a time from the support set held as uint8 at the model's size (``cli.adapt.adapt``,
``batch_bytes``), and that gives bit for bit the weights of building all K at once from
float32 arrays in one compiled call (the few-shot path, as it was). Memory is measured in
``bench/bench_many_shot.py``, not here."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from metaseg import checkpoints
from metaseg.cli import adapt as cli_adapt
from metaseg.data import make_inner_batches, mask_to_two_channel
from metaseg.meta.adapt import Adapter
from metaseg.specs import BatchSpec
from tests.cli.conftest import subprocess_env
from tests.cli.test_metaseg_cli import scene
from tests.conftest import time_limit

INIT, SIZE, SHOTS, STEPS = "quickstart_b0_64", 32, 60, 5
SMALL_SET = 12  # for the comparison: more than two batches of 5


def support_set(n=SHOTS, size=SIZE):
    """images uint8 [n, S, S, 3], masks uint8 [n, S, S] 0/255: generated discs on noise."""
    pairs = [scene(seed, size, size) for seed in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def all_at_once(source, images, masks, steps, seed):
    """The adaptation as it was before streaming: float32 arrays, all K batches stacked,
    one compiled call, statistics re-estimated on the float32 support images."""
    config = source.config
    model = checkpoints.build_and_restore(source, image_size=SIZE)
    adapter = Adapter(model, config.inner)
    batches = BatchSpec.evaluation(config.eval, config.inner)
    float_images = tf.constant(images.astype(np.float32))
    x, y = make_inner_batches(float_images, mask_to_two_channel(masks), batches,
                              num_batches=steps, seed=seed)
    state, losses = adapter.adapt(adapter.initial_state(), x, y,
                                  tf.constant(0.1, tf.float32), tf.constant(0),
                                  tf.constant(steps))
    state = adapter.support_statistics(state, float_images, batches.size)
    return state, losses.numpy()


def flat(state):
    return [np.asarray(v) for v in state.trainable + state.non_trainable]


@pytest.mark.parametrize("augment,steps_at_once", [(False, STEPS), (True, 2)])
def test_streamed_batches_give_the_weights_of_all_at_once(augment, steps_at_once):
    """Under the default budget the 5 steps are one call (the few-shot path); with a budget
    of 2 steps' batches they run as 2 + 2 + 1 (with augmentation and --replacement, whose
    per-slot seeds and draws must survive the slicing)."""
    source = checkpoints.open_checkpoint(INIT, "--init")
    inner = dataclasses.replace(source.config.inner, augment=augment, replacement=augment)
    source = dataclasses.replace(source, config=dataclasses.replace(source.config, inner=inner))
    images, masks = support_set(SMALL_SET)
    reference, reference_losses = all_at_once(source, images, masks, STEPS, seed=3)
    budget = (cli_adapt.BATCH_BYTES if steps_at_once == STEPS else
              steps_at_once * cli_adapt.step_bytes(source.config.eval.eval_batch, SIZE))
    assert budget // cli_adapt.step_bytes(source.config.eval.eval_batch, SIZE) >= steps_at_once
    _, state, losses = cli_adapt.adapt(source, images, masks, steps=STEPS, learning_rate=0.1,
                                       seed=3, batch_bytes=budget)
    np.testing.assert_array_equal(losses, reference_losses)
    for got, want in zip(flat(state), flat(reference), strict=True):
        np.testing.assert_array_equal(got, want)


def test_adapt_command_with_sixty_support_images(tmp_path):
    images, masks = support_set()
    support, query = tmp_path / "support", tmp_path / "query"
    support.mkdir()
    query.mkdir()
    for i, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(support / f"s{i:02d}.jpg", quality=95)
        Image.fromarray(mask).save(support / f"s{i:02d}.png")
    Image.fromarray(images[0]).save(query / "q.png")
    result = subprocess.run(
        [sys.executable, "-m", "metaseg", "adapt", "--init", INIT, "--support", str(support),
         "--query", str(query), "--output", str(tmp_path / "out"), "--image_size", str(SIZE),
         "--steps", "2"],
        capture_output=True, text=True, env=subprocess_env(), timeout=time_limit(300))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "model" / "adaptation.json").read_text())
    assert record["support"] == [f"s{i:02d}.jpg" for i in range(SHOTS)]
    assert len(record["support_losses"]) == 2 and np.all(np.isfinite(record["support_losses"]))
