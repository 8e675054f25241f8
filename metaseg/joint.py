"""The joint-training baseline: EfficientLab trained on every training class pooled.

The paper's transfer-learning comparison (REFERENCE.md section 9): ordinary supervised
training, with the usual Keras machinery, of one binary foreground/background problem made
of all training classes' examples (the test classes, and any validation classes, are never
read). ``model.fit`` runs on a tf.data pipeline (shuffle, batch, optional mask-aware
augmentation, prefetch) with TensorBoard and a checkpoint callback that writes metaseg's own
layout after every epoch, so ``run_metasegnet.py --pretrained --checkpoint DIR`` evaluates
the result exactly as it evaluates a meta-learned initialisation.

What is trained is ``model.logits_model`` (same variables as the model, no softmax), with
``losses.segmentation_loss`` as the Keras loss: the same cross-entropy (+ dice) the inner
loop minimises, computed from logits so the softmax cross-entropy is the numerically stable
fused one. The optimiser is Adam with beta1 = 0, as the original's joint trainer and our
inner loop, or plain SGD with ``--sgd``; the step size is ``--learning-rate``, constant.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, List

import keras
import tensorflow as tf
from absl import logging

from metaseg import checkpoints, pipeline
from metaseg.config import InnerConfig, JointTrainConfig
from metaseg.data import TaskStore
from metaseg.data.augment import as_seed, fold_seed, maybe_augment_batch
from metaseg.data.shards import mask_to_two_channel
from metaseg.errors import CheckpointError, DataError
from metaseg.evaluation import metrics
from metaseg.models import losses

KEEP_CHECKPOINTS = 2
_JOINT_STREAM = 4  # random numbers of their own (training 1, evaluation 2, k-shot 3)


@dataclasses.dataclass
class JointResult:
    """Per-epoch Keras history (``loss``, ``iou``) and where the weights were written."""

    history: Dict[str, List[float]]
    checkpoint: str
    iteration: int  # optimiser steps taken: the checkpoint's ``iteration``
    model: keras.Model  # the trained EfficientLab (probabilities out)


def pooled_dataset(store: TaskStore, *, batch_size: int, seed: int = 0, augment: bool = False,
                   aug_rate: float = 0.5) -> tf.data.Dataset:
    """Endless batches of every example of ``store``, all tasks pooled.

    Each pass visits every example once in a fresh order fixed by ``seed`` (passes run on
    into each other, so no example is dropped). Element: (x float32 [B, S, S, 3] in [0, 255],
    y float32 [B, S, S, 2] one-hot, channel 1 = foreground), each example augmented with
    probability ``aug_rate`` with ``augment`` (seeded by the batch's index).
    """
    total = sum(store.num_examples(i) for i in range(len(store)))
    with tf.init_scope(), tf.device("/CPU:0"):  # captured by the map without a graph copy
        images = tf.Variable(store.images, trainable=False)
        masks = tf.Variable(store.masks, trainable=False)
    base = fold_seed(as_seed(seed), _JOINT_STREAM)

    def batch(index, rows):
        x = tf.cast(tf.gather(images.value(), rows), tf.float32)
        y = mask_to_two_channel(tf.gather(masks.value(), rows))
        if augment:
            x, y = maybe_augment_batch(x, y, fold_seed(base, index), aug_rate)
        return x, y

    return (tf.data.Dataset.range(total)
            .shuffle(total, seed=seed, reshuffle_each_iteration=True).repeat()
            .batch(batch_size, drop_remainder=True).enumerate()
            .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


class MetasegCheckpoint(keras.callbacks.Callback):
    """After every epoch, write the model in metaseg's checkpoint layout (``checkpoints``):
    trainable and non-trainable weights by position, and ``iteration`` = optimiser steps;
    the newest ``keep`` are kept, and the one of the lowest epoch loss."""

    def __init__(self, model: keras.Model, directory: str, keep: int = KEEP_CHECKPOINTS):
        super().__init__()
        self._state = checkpoints.MetaState(model)  # the weights alone: no optimiser bucket
        self._saver = checkpoints.Saver(self._state.checkpoint, directory, keep)

    @property
    def iteration(self) -> int:
        return int(self._state.iteration.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self._state.iteration.assign(int(self.model.optimizer.iterations.numpy()))
        saved = self._saver.save(self.iteration, (logs or {}).get("loss"))
        logging.info("Epoch %d: wrote %s", epoch + 1, saved.prefix)


def segmentation_loss_fn(inner: InnerConfig):
    """Keras loss ``(y_true [B,S,S,2] one-hot, y_pred logits [B,S,S,2]) -> scalar``."""

    def segmentation_loss(y_true, y_pred):
        return losses.segmentation_loss(y_pred, y_true, loss_name=inner.loss_name,
                                        label_smoothing=inner.label_smoothing)

    return segmentation_loss


def iou(y_true, y_pred):
    """Per-image binary IoU [B] of the evaluation (``metrics.binary_iou``) from logits."""
    return metrics.binary_iou(tf.nn.softmax(y_pred, axis=-1), y_true)


def make_optimizer(inner: InnerConfig) -> keras.optimizers.Optimizer:
    if inner.sgd:
        return keras.optimizers.SGD(inner.learning_rate)
    return keras.optimizers.Adam(inner.learning_rate, beta_1=0.0, epsilon=1e-8)


def train(config: JointTrainConfig, verbose: int = 0) -> JointResult:
    """Train on the pooled training classes; write checkpoints, ``config.json`` and
    TensorBoard scalars (``<checkpoint>/train``) into ``--checkpoint``."""
    run = config.run
    data_dir = pipeline.resolve_data_dir(run)
    if checkpoints.latest(run.checkpoint):
        raise CheckpointError(f"--checkpoint {run.checkpoint} already holds a checkpoint; "
                              "joint training starts from scratch, so choose a new directory")
    try:
        os.makedirs(run.checkpoint, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create --checkpoint {run.checkpoint}: {e.strerror}; choose "
                        "another directory") from None
    splits = pipeline.load_splits(run, data_dir)
    store = TaskStore.load(splits.train, run.data.image_size)
    examples = sum(store.num_examples(i) for i in range(len(store)))
    logging.info("Joint training on %d examples of %d training classes (%d validation and %d "
                 "test classes held out)", examples, len(store), len(splits.val), len(splits.test))
    model = pipeline.build(run)
    net = model.logits_model
    net.compile(optimizer=make_optimizer(run.inner), loss=segmentation_loss_fn(run.inner),
                metrics=[keras.metrics.MeanMetricWrapper(iou, name="iou")])
    checkpoints.write_config(run.checkpoint, dataclasses.asdict(run))
    saver = MetasegCheckpoint(model, run.checkpoint)
    callbacks = [keras.callbacks.TensorBoard(run.checkpoint, write_graph=False, profile_batch=0),
                 saver]
    history = net.fit(
        pooled_dataset(store, batch_size=config.batch_size, seed=run.seed,
                       augment=run.inner.augment, aug_rate=run.inner.aug_rate),
        epochs=config.epochs, steps_per_epoch=math.ceil(examples / config.batch_size),
        shuffle=False, callbacks=callbacks, verbose=verbose)  # the dataset shuffles itself
    logging.info("Joint training done: loss %.4f, IoU %.4f; weights in %s",
                 history.history["loss"][-1], history.history["iou"][-1], run.checkpoint)
    return JointResult(history.history, os.path.abspath(run.checkpoint), saver.iteration,
                       model)
