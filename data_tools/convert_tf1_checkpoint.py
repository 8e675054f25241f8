"""Convert a checkpoint of the original TF1 code into a Keras weights file.

    python data_tools/convert_tf1_checkpoint.py --tf1_checkpoint DIR --output model.weights.h5 \
        [--feature_extractor_name efficientnet-b0] [--rsd 2 4] [--spatial_pyramid_pooling] \
        [--skip_decoding] [--disable_rsd_residual_connections]

The model flags mean what they meant in the original and must describe the network that
wrote the checkpoint (the published one is ``--rsd 2 4``). The result loads with
``EfficientLab(...).load_weights(path)`` for the same flags. Any mistake (no checkpoint,
another architecture, wrong output name) ends with one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from absl import app, flags, logging

from metaseg.flags.argv import parse_flags_or_exit
from metaseg.config import ModelConfig
from metaseg.errors import ConfigError, exit_on_error
from metaseg.models import build_model, load_tf1_checkpoint

WEIGHTS_SUFFIX = ".weights.h5"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define this script's flags; called only when run as a script, so importing the
    module (tests, other tools) never clashes with flags defined elsewhere."""
    define = dict(flag_values=flag_values)
    flags.DEFINE_string("tf1_checkpoint", None, "TF1 checkpoint directory or prefix.", **define)
    flags.DEFINE_string("output", None, f"Keras weights file to write (*{WEIGHTS_SUFFIX}).",
                        **define)
    flags.DEFINE_string("feature_extractor_name", ModelConfig.feature_extractor_name,
                        "efficientnet-b0 or efficientnet-b3.", **define)
    flags.DEFINE_list("rsd", None, "Reductions feeding residual skip decoders, e.g. 2 4.",
                      **define)
    flags.DEFINE_bool("spatial_pyramid_pooling", ModelConfig.spatial_pyramid_pooling,
                      "The checkpoint's network has the ASPP block.", **define)
    flags.DEFINE_bool("skip_decoding", ModelConfig.skip_decoding,
                      "The checkpoint's network has the DeepLab v3+ skip decoder.", **define)
    flags.DEFINE_bool("disable_rsd_residual_connections", not ModelConfig.rsd_residual,
                      "Drop the RSD residual add (the original ignored this flag, so its "
                      "checkpoints all have it).", **define)
    flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.", **define)


FLAGS = flags.FLAGS


def _parse_rsd(values: Optional[Sequence[str]]):
    if not values:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ConfigError(f"--rsd takes integers 1-4, got {list(values)}") from None


def convert(tf1_checkpoint: str, output: str, config: ModelConfig,
            overwrite: bool = False) -> int:
    """Build the model ``config`` describes, load the TF1 checkpoint, save its weights.

    Returns the number of variables restored. Raises ConfigError / CheckpointError.
    """
    if not output.endswith(WEIGHTS_SUFFIX):
        raise ConfigError(f"--output must end in {WEIGHTS_SUFFIX} (Keras weights file), "
                          f"got {output!r}")
    if os.path.exists(output) and not overwrite:
        raise ConfigError(f"--output {output} exists; pass --overwrite to replace it")
    model = build_model(config)
    count = load_tf1_checkpoint(model, tf1_checkpoint)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model.save_weights(output, overwrite=True)
    logging.info("Wrote %d variables of %s to %s", count, tf1_checkpoint, output)
    return count


@exit_on_error
def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected argument(s) {argv[1:]}: every setting is a --flag")
    for name in ("tf1_checkpoint", "output"):
        if not FLAGS[name].value:
            raise ConfigError(f"--{name} is required")
    config = ModelConfig(
        feature_extractor_name=FLAGS.feature_extractor_name, rsd=_parse_rsd(FLAGS.rsd),
        spatial_pyramid_pooling=FLAGS.spatial_pyramid_pooling,
        skip_decoding=FLAGS.skip_decoding,
        rsd_residual=not FLAGS.disable_rsd_residual_connections)
    convert(FLAGS.tf1_checkpoint, FLAGS.output, config, overwrite=FLAGS.overwrite)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)
