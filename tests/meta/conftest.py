"""Tiny models and task stores for the engine tests (16-32 px, a few hundred weights)."""
import keras
import numpy as np
import pytest

from metaseg.data.tasks import TaskStore


def tiny_logits_model(seed: int = 0, dropout: float = 0.0, conv_bias: bool = True) -> keras.Model:
    """conv3x3(4) -> batch norm -> relu [-> dropout] -> conv1x1(2): logits [N,S,S,2].

    ``conv_bias=False`` drops the bias batch norm cancels: its gradient is rounding noise,
    which Adam scales up to full-size steps, so runs that only reassociate sums diverge there.
    """
    keras.utils.set_random_seed(seed)
    images = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255.0)(images)
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=conv_bias, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="drop")(x)
    logits = keras.layers.Conv2D(2, 1, name="final_layer_weights")(x)
    return keras.Model(images, logits, name="tiny")


def tiny_store(num_tasks: int = 4, examples: int = 8, size: int = 16, seed: int = 0):
    """Tasks whose foreground is a bright square at a task-specific place."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for t in range(num_tasks):
        img = rng.integers(0, 120, size=(examples, size, size, 3), dtype=np.uint8)
        mask = np.zeros((examples, size, size), np.uint8)
        for i in range(examples):
            r, c = rng.integers(0, size // 2, size=2)
            h = size // 4 + t % 3
            mask[i, r:r + h, c:c + h] = 255
            img[i, r:r + h, c:c + h] = 200 + 15 * (t % 4)
        images.append(img)
        masks.append(mask)
    return TaskStore.from_arrays([f"task{t}" for t in range(num_tasks)], images, masks)


@pytest.fixture
def store():
    return tiny_store()
