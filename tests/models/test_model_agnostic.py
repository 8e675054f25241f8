"""Model-agnostic meta-learning: a keras-cv DeepLabV3Plus (``--model_name deeplabv3plus``)
and a user model plugged in with ``register_model`` are meta-trained and evaluated by the
same engine as EfficientLab."""
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from metaseg.config import EvalConfig, InnerConfig, MetaConfig, ModelConfig
from metaseg.errors import ConfigError
from metaseg.evaluation.evaluate import Evaluator
from metaseg import checkpoints
from metaseg.meta.trainer import MetaTrainer
from metaseg.models import MODELS, build_model, register_model
from tests.meta.conftest import tiny_store

INNER = InnerConfig(learning_rate=0.01, loss_name="bce_dice")
META = MetaConfig(algorithm="reptile", meta_iters=2, meta_batch=2, meta_step=0.5,
                  meta_step_final=0.1, train_shots=3, inner_batch=3, inner_iters=2,
                  eval_interval=2, checkpoint_every=2, seed=5)
EVAL = EvalConfig(shots=3, eval_batch=2, eval_iters=2, eval_samples=1,
                  serially_eval_all_test_tasks=True, seed=1)


def _meta_train(model, store, directory, name):
    evaluator = Evaluator(model, INNER, EVAL)
    scores = []

    def evaluate(m):
        results = evaluator.evaluate(store, task_indices=[0, 1])
        scores.append(results.mean_iou)
        return {"IoU": results.mean_iou}

    trainer = MetaTrainer(model, store, meta=META, inner=INNER, checkpoint_dir=str(directory),
                          total_inner_steps=2, config={"model": {"model_name": name}},
                          evaluators={"test": evaluate})
    before = [v.numpy().copy() for v in model.trainable_variables]
    assert trainer.train() == 2
    changed = [not np.array_equal(a, v.numpy())
               for a, v in zip(before, model.trainable_variables)]
    assert sum(changed) > len(changed) // 2, "meta-training left most weights unchanged"
    assert scores and all(0.0 <= s <= 1.0 for s in scores)
    return trainer


def test_deeplabv3plus_from_keras_cv_meta_trains_and_evaluates(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(model_name="deeplabv3plus"))
    x = tf.random.uniform([2, 32, 32, 3], maxval=255.0)
    probabilities = model(x)
    assert probabilities.shape == (2, 32, 32, 2)
    np.testing.assert_allclose(tf.nn.softmax(model.logits_model(x)), probabilities,
                               atol=1e-6)
    assert model.final_layer_name == "final_layer_weights"
    _meta_train(model, tiny_store(num_tasks=3, examples=8, size=32), tmp_path, "deeplabv3plus")
    # The checkpoint restores into a fresh model, keeping its own final layer on request.
    fresh = build_model(ModelConfig(model_name="deeplabv3plus"))
    assert checkpoints.restore_weights(fresh, str(tmp_path), skip_final_layer=True) == 2
    np.testing.assert_array_equal(fresh.logits_model.trainable_variables[0].numpy(),
                                  model.logits_model.trainable_variables[0].numpy())


def _three_layer_unet_ish(config: ModelConfig) -> keras.Model:
    """A user model: three convolutions, images [0, 255] -> logits [N, S, S, 2]."""
    images = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(images)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    logits = keras.layers.Conv2D(2, 1, name="final_layer_weights")(x)
    return keras.Model(images, logits, name="mine")


@pytest.fixture
def registered():
    register_model("mine", _three_layer_unet_ish)
    yield "mine"
    MODELS.pop("mine", None)


def test_register_model_plugs_in_a_user_model(tmp_path, registered):
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(model_name=registered))
    # build_model gave the user's logits model the EfficientLab interface.
    assert model.logits_model.name == "mine"
    assert model.get_layer("final_layer_weights") is not None
    x = tf.random.uniform([1, 16, 16, 3], maxval=255.0)
    np.testing.assert_allclose(tf.nn.softmax(model.logits_model(x)), model(x), atol=1e-6)
    _meta_train(model, tiny_store(num_tasks=3, examples=8, size=16), tmp_path, registered)


def test_register_model_refuses_duplicates_and_bad_models(registered):
    with pytest.raises(ConfigError, match="already registered"):
        register_model(registered, _three_layer_unet_ish)
    register_model(registered, lambda config: keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1)]), overwrite=True)
    with pytest.raises(ConfigError, match="3 channels; the meta-learner needs 2"):
        build_model(ModelConfig(model_name=registered))
    register_model(registered, lambda config: "not a model", overwrite=True)
    with pytest.raises(ConfigError, match="not a keras.Model"):
        build_model(ModelConfig(model_name=registered))


def test_deeplabv3plus_without_keras_cv_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_cv", None)  # import keras_cv -> ImportError
    with pytest.raises(ConfigError, match=r"pip install metaseg\[kerascv\]"):
        build_model(ModelConfig(model_name="deeplabv3plus"))
