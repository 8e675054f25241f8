"""The interface every model gives the meta-learner: probabilities out, ``logits_model`` inside.

A model maps float32 images ``[N, S, S, 3]`` in [0, 255] to softmax probabilities
``[N, S, S, 2]`` (channel 1 foreground); its ``logits_model`` attribute is a model sharing its
variables that returns the logits. ``with_logits`` wraps a logits model that way (the registry,
``--model_name``, and the keras-cv / keras-hub builders use it); ``logits_model`` is the one
way to get the logits network of any model.
"""

from __future__ import annotations

from typing import Optional

import keras


def with_logits(logits_model: keras.Model, *, name: Optional[str] = None) -> keras.Model:
    """A model returning ``softmax(logits_model(images))`` whose ``logits_model`` attribute
    is ``logits_model`` itself (same variables, same order). A functional logits model is
    extended in place, so its layers (e.g. the final layer) stay top-level layers."""
    name = name or f"{logits_model.name}_probabilities"
    if is_functional(logits_model):
        inputs = logits_model.inputs
        probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(
            logits_model.outputs[0])
    else:
        inputs = keras.Input((None, None, 3), name="images")
        probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(
            logits_model(inputs))
    model = keras.Model(inputs, probabilities, name=name)
    # Plain attributes, outside Keras's layer tracking: views, not sublayers.
    model.__dict__["logits_model"] = logits_model
    final = getattr(logits_model, "final_layer_name", None)
    if final is not None:
        model.__dict__["final_layer_name"] = final
    return model


def logits_model(model: keras.Model) -> keras.Model:
    """The network that returns ``model``'s logits ``[N, S, S, 2]``, sharing its variables:
    ``model.logits_model`` for a model with probabilities output (every ``build_model``
    model), else ``model`` itself (a bare logits network, e.g. in tests). What the inner loop
    trains, checkpoints store and the losses see."""
    return getattr(model, "logits_model", model)


def is_functional(model) -> bool:
    """Whether ``model`` is a functional Keras model (it has symbolic inputs and outputs)."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False
