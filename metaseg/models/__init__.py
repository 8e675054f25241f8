"""Models: EfficientLab (truncated EfficientNet + residual skip decoder), its losses and
regularisers, the registry keyed by ``--model_name``, and the TF1 checkpoint importer."""

# The registry imports kerascv and kerashub (which import keras-cv / keras-hub only when a
# model is built): their layers are registered with Keras, so a .keras export loads after
# ``import metaseg.models``.
from metaseg.models.efficientlab import EfficientLab
from metaseg.models.logits import logits_model, with_logits
from metaseg.models.registry import MODELS, build_model, register_model
from metaseg.models.tf1_checkpoint import is_tf1_checkpoint, load_tf1_checkpoint

__all__ = ["EfficientLab", "MODELS", "build_model", "is_tf1_checkpoint",
           "load_tf1_checkpoint", "logits_model", "register_model", "with_logits"]
