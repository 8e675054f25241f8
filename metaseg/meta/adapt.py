"""The compiled adaptation: K inner-loop steps on weight tensors as one ``tf.function``.

An adaptation is a pure function

    (AdaptState, x [K,B,S,S,3], y [K,B,S,S,2], learning rate, step offset, total steps)
        -> (AdaptState, per-step losses [K])

where ``AdaptState`` holds the three buckets of state (STYLE.md point 4): trainable weights,
non-trainable weights (batch-norm moving statistics and the dropout seed state) and the
inner optimiser's state. The network runs through ``model.stateless_call`` so the Keras
variables are never touched; callers decide which buckets to write back (meta-training
writes the trainable weights, evaluation writes nothing). The loop is a ``tf.while_loop``
inside one ``tf.function`` with a fixed input signature, so nothing retraces across tasks,
meta-iterations, learning rates or step counts, and nothing crosses to Python per step.
``scoring_adaptation`` runs the same steps and also scores a query set after each one, in
the graph (update-hyperparameter search, REFERENCE.md section 8).
``support_statistics`` re-estimates the batch-norm moving statistics of an adapted state on
its support images (what ``metaseg adapt`` predicts and saves with).
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import keras
import tensorflow as tf

from metaseg.config import InnerConfig
from metaseg.meta import optim
from metaseg.models import logits_model, losses


class AdaptState(NamedTuple):
    """The full state one adaptation reads and returns (lists aligned with the model's)."""

    trainable: list
    non_trainable: list
    opt: tuple  # optim.SGDState or optim.AdamState


def _spec(t) -> tf.TensorSpec:
    return tf.TensorSpec(t.shape, t.dtype)


def _layers(net: keras.Model, kind) -> list:
    layers = net._flatten_layers(include_self=False)  # pylint: disable=protected-access
    return [layer for layer in layers if isinstance(layer, kind)]


def moving_statistics_indices(net: keras.Model) -> list:
    """Positions in ``net.non_trainable_variables`` of every batch-norm moving mean and
    moving variance (the other entries are e.g. dropout seed states)."""
    positions = {id(v): i for i, v in enumerate(net.non_trainable_variables)}
    moving = [v for layer in _layers(net, keras.layers.BatchNormalization)
              for v in (layer.moving_mean, layer.moving_variance)]
    return sorted({positions[id(v)] for v in moving if id(v) in positions})


@contextlib.contextmanager
def statistics_mode(net: keras.Model):
    """While tracing inside: batch norm momentum 0 (a training-mode call writes the batch
    statistics themselves as the moving ones) and dropout off (statistics of the network
    as it predicts)."""
    saved = ([(layer, layer.momentum) for layer in _layers(net, keras.layers.BatchNormalization)],
             [(layer, layer.rate) for layer in _layers(net, keras.layers.Dropout)])
    try:
        for layer, _ in saved[0]:
            layer.momentum = 0.0
        for layer, _ in saved[1]:
            layer.rate = 0.0
        yield
    finally:
        for layer, momentum in saved[0]:
            layer.momentum = momentum
        for layer, rate in saved[1]:
            layer.rate = rate


def predict_queries(predict, state: AdaptState, support_x, query_x, *,
                    transductive: bool) -> tf.Tensor:
    """Probabilities float32 [Q,S,S,2] of the query images query_x [Q,S,S,3] under an
    adapted ``state``; ``predict(state, images [N,S,S,3]) -> [N,S,S,2]`` runs the network in
    inference mode (``Adapter.predict``, or its uncompiled body inside a compiled function).

    Transductive: the Q queries as one batch. Otherwise, as the original did (REFERENCE.md
    section 7), each query image is fed after the support images support_x [n,S,S,3] and only
    its own output is kept. Eager or inside a ``tf.function``, for any Q (also unknown).
    """
    if transductive:
        return predict(state, query_x)
    return tf.map_fn(lambda q: predict(state, tf.concat([support_x, q[None]], 0))[-1], query_x,
                     fn_output_signature=tf.float32)


class Adapter:
    """Compiled inner loop and prediction for one Keras model.

    Args:
      model: a Keras model mapping float32 images [N,S,S,3] in [0,255] to probabilities
        [N,S,S,2]. If it has a ``logits_model`` attribute (EfficientLab does), that model,
        which shares every variable, is trained so the loss sees logits.
      inner: optimiser, schedule, loss, regularisers and ``jit_compile``.
      loss_fn: optional ``(trainable, logits, labels) -> scalar`` replacing the loss of
        REFERENCE.md section 4 (for models with other objectives, and for tests).
    """

    def __init__(self, model: keras.Model, inner: InnerConfig, loss_fn=None):
        self.model = model
        self._loss_fn = loss_fn
        self.net = logits_model(model)
        self.inner = inner
        self.optimizer = optim.make_optimizer(inner.sgd)
        self._learning_rate = optim.schedule(inner.learning_rate_scheduler,
                                             inner.decay_after_n_steps, inner.step_decay_rate)
        self._regularized = losses.regularized_mask(self.net)
        state_spec = tf.nest.map_structure(_spec, self.initial_state())
        image = tf.TensorSpec([None, None, None, None, 3], tf.float32)
        label = tf.TensorSpec([None, None, None, None, 2], tf.float32)
        scalar_f, scalar_i = tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)
        self.adapt = tf.function(
            self._adapt, jit_compile=inner.jit_compile,
            input_signature=[state_spec, image, label, scalar_f, scalar_i, scalar_i])
        self.predict = tf.function(
            self._predict, input_signature=[state_spec, tf.TensorSpec([None, None, None, 3])])
        image4 = tf.TensorSpec([None, None, None, 3], tf.float32)
        self._moving = moving_statistics_indices(self.net)
        self._batch_statistics = tf.function(self._batch_statistics_of,
                                             input_signature=[state_spec, image4])
        self._scoring_signature = [state_spec, image, label, image4, image4,
                                   tf.TensorSpec([None, None, None, 2], tf.float32), scalar_f,
                                   scalar_i]
        self._scorers = {}

    # -- state ---------------------------------------------------------------------------
    def initial_state(self, opt=None) -> AdaptState:
        """The model's current variable values, with fresh (or the given) optimiser state."""
        trainable = [v.value for v in self.net.trainable_variables]
        non_trainable = [v.value for v in self.net.non_trainable_variables]
        if opt is None:
            opt = self.optimizer.init(trainable)
        return AdaptState(trainable, non_trainable, opt)

    def assign(self, state: AdaptState, *, trainable: bool = True,
               non_trainable: bool = True) -> None:
        """Write the chosen buckets of ``state`` into the model's variables."""
        if trainable:
            for var, value in zip(self.net.trainable_variables, state.trainable, strict=True):
                var.assign(value)
        if non_trainable:
            for var, value in zip(self.net.non_trainable_variables, state.non_trainable,
                                  strict=True):
                var.assign(value)

    def support_statistics(self, state: AdaptState, images, batch_size: int) -> AdaptState:
        """``state`` with every batch-norm moving mean and variance replaced by the mean over
        ``images`` (float32 or uint8 [n,S,S,3] in [0, 255], the support set, unaugmented; each
        mini-batch is made float32 as it runs) of its batch statistics.

        The images are split in order into ceil(n / ``batch_size``) mini-batches of near-equal
        size (one batch when n <= ``batch_size``: then predicting those images together in
        inference mode gives exactly their batch-statistics output); each layer's statistics
        are averaged over the mini-batches, weighted by size, computed without dropout and
        with every earlier layer normalised by the same mini-batch. Everything else in
        ``state`` is returned as it is.
        """
        n = int(images.shape[0])
        chunks = math.ceil(n / max(1, int(batch_size)))
        bounds = [round(i * n / chunks) for i in range(chunks + 1)]
        total = None
        for start, stop in zip(bounds[:-1], bounds[1:]):
            weighted = [s * ((stop - start) / n)
                        for s in self._batch_statistics(
                            state, tf.cast(images[start:stop], tf.float32))]
            total = weighted if total is None else [a + b for a, b in zip(total, weighted)]
        non_trainable = list(state.non_trainable)
        for i, value in zip(self._moving, total or []):
            non_trainable[i] = value
        return AdaptState(state.trainable, non_trainable, state.opt)

    # -- compiled functions ----------------------------------------------------------------
    def _batch_statistics_of(self, state, images):
        """The moving statistics a momentum-0 training-mode pass over ``images`` writes."""
        with statistics_mode(self.net):
            _, non_trainable = self.net.stateless_call(
                state.trainable, state.non_trainable, images, training=True)
        return [non_trainable[i] for i in self._moving]

    def _adapt(self, state, x, y, learning_rate, step_offset, total_steps):
        """K steps; x: float32 [K,B,S,S,3] in [0,255], y: float32 [K,B,S,S,2] one-hot."""
        num_steps = tf.shape(x)[0]
        step_losses = tf.TensorArray(tf.float32, size=num_steps)

        def body(k, state, step_losses):
            lr = self._learning_rate(learning_rate, step_offset + k, total_steps)
            state, loss = self._step(state, x[k], y[k], lr)
            return k + 1, state, step_losses.write(k, loss)

        _, state, step_losses = tf.while_loop(
            lambda k, *_: k < num_steps, body, (tf.constant(0), state, step_losses))
        return state, step_losses.stack()

    def _step(self, state, images, labels, learning_rate):
        """One inner step in training mode (batch statistics, dropout on)."""
        trainable = state.trainable
        if self.inner.weight_decay != 1.0:  # REFERENCE.md section 5: multiply before the step.
            trainable = [w * self.inner.weight_decay for w in trainable]
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            logits, non_trainable = self.net.stateless_call(
                trainable, state.non_trainable, images, training=True)
            loss = self.loss(trainable, logits, labels)
        grads = tape.gradient(loss, trainable)
        updates, opt = self.optimizer.update(grads, state.opt, trainable, learning_rate)
        trainable = optim.apply_updates(trainable, updates)
        return AdaptState(trainable, non_trainable, opt), loss

    def loss(self, trainable, logits, labels):
        """Segmentation loss plus the regularisers the flags switch on (section 4)."""
        if self._loss_fn is not None:
            return self._loss_fn(trainable, logits, labels)
        inner = self.inner
        loss = losses.segmentation_loss(
            logits, labels, loss_name=inner.loss_name, label_smoothing=inner.label_smoothing)
        if inner.l2 or inner.l1 or inner.darc1:
            loss += losses.regularization_loss(
                trainable, self._regularized, logits, l2=inner.l2, l1=inner.l1,
                darc1=inner.darc1)
        return loss

    def scoring_adaptation(self, score_fn, *, transductive: bool = True):
        """The compiled adaptation that scores the query set after every step.

        Returns ``f(state, x [K,B,S,S,3], y [K,B,S,S,2], support_x [n,S,S,3],
        query_x [Q,S,S,3], query_y [Q,S,S,2], learning_rate, total_steps) -> scores
        float32 [K]``: ``scores[k]`` is the mean over the Q queries of ``score_fn(probs
        [Q,S,S,2], query_y) -> [Q]`` after inner step k + 1 (the same steps as :meth:`adapt`),
        predicted in inference mode inside the loop, so nothing leaves the graph per step.
        ``transductive``: the queries as one batch; otherwise each query is fed after the
        support set and only its own output is kept (REFERENCE.md section 7). The
        function is traced once per (``score_fn``, ``transductive``) and cached.
        """
        key = (score_fn, bool(transductive))
        if key not in self._scorers:
            def scores(state, x, y, support_x, query_x, query_y, learning_rate, total_steps):
                return self._adapt_and_score(state, x, y, support_x, query_x, query_y,
                                             learning_rate, tf.constant(0), total_steps,
                                             score_fn, transductive)[1]
            self._scorers[key] = tf.function(scores, jit_compile=self.inner.jit_compile,
                                             input_signature=self._scoring_signature)
        return self._scorers[key]

    def scoring_steps(self, score_fn, *, transductive: bool = True):
        """:meth:`scoring_adaptation` that can be continued: ``f(state, x, y, support_x,
        query_x, query_y, learning_rate, step_offset, total_steps) -> (state, scores [K])``,
        the steps numbered from ``step_offset`` (as :meth:`adapt`), so consecutive calls on
        consecutive chunks of the K mini-batches give the scores and state of one call
        (a long adaptation never holds all K mini-batches at once)."""
        key = ("steps", score_fn, bool(transductive))
        if key not in self._scorers:
            def steps(state, x, y, support_x, query_x, query_y, learning_rate, step_offset,
                      total_steps):
                return self._adapt_and_score(state, x, y, support_x, query_x, query_y,
                                             learning_rate, step_offset, total_steps, score_fn,
                                             transductive)
            signature = self._scoring_signature[:-1] + [tf.TensorSpec([], tf.int32)] * 2
            self._scorers[key] = tf.function(steps, jit_compile=self.inner.jit_compile,
                                             input_signature=signature)
        return self._scorers[key]

    def _adapt_and_score(self, state, x, y, support_x, query_x, query_y, learning_rate,
                         step_offset, total_steps, score_fn, transductive):
        num_steps = tf.shape(x)[0]
        scores = tf.TensorArray(tf.float32, size=num_steps)

        def body(k, state, scores):
            lr = self._learning_rate(learning_rate, step_offset + k, total_steps)
            state, _ = self._step(state, x[k], y[k], lr)
            probs = predict_queries(self._predict, state, support_x, query_x,
                                    transductive=transductive)
            per_query = tf.cast(score_fn(probs, query_y), tf.float32)
            finite = tf.math.is_finite(per_query)  # a NaN query is ignored, as np.nanmean
            mean = tf.reduce_sum(tf.where(finite, per_query, 0.0)) / tf.reduce_sum(
                tf.cast(finite, tf.float32))
            return k + 1, state, scores.write(k, mean)

        _, state, scores = tf.while_loop(
            lambda k, *_: k < num_steps, body, (tf.constant(0), state, scores))
        return state, scores.stack()

    def _predict(self, state, images):
        """Foreground/background probabilities [N,S,S,2] in inference mode."""
        logits, _ = self.net.stateless_call(
            state.trainable, state.non_trainable, images, training=False)
        return tf.nn.softmax(logits, axis=-1)
