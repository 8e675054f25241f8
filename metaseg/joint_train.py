"""``python -m metaseg.joint_train``: the joint-training baseline (``metaseg.joint``).

    python -m metaseg.joint_train --flagfile flags/quickstart.flags --epochs 20 \\
        --batch_size 16 --learning_rate 0.001 --checkpoint runs/joint
    python run_metasegnet.py --flagfile flags/quickstart.flags --pretrained \\
        --checkpoint runs/joint

Every ``run_metasegnet.py`` flag is accepted, in either spelling (``metaseg.flags``), so one
flagfile describes the data, split and model of both the baseline and its evaluation. Read
here: the data and split flags (``--data-dir``, ``--dataset`` and ``--synthetic_*``,
``--cache_dir``, ``--image_size``, ``--test_tasks_file``, ``--val_tasks_file``,
``--num_val_tasks``, ``--fp_k_test_set``), the model flags (``--rsd``,
``--feature_extractor_name``, ``--final_layer_dropout_rate``, ...), ``--seed``,
``--checkpoint``, and for the training itself ``--learning-rate`` (the optimiser's step
size), ``--sgd``, ``--loss_name``, ``--label_smoothing``, ``--augment`` and ``--aug_rate``;
plus this script's ``--epochs`` and ``--batch_size``. Any other flag given is named in one
warning and ignored. Defaults live in ``metaseg.config`` (``JointTrainConfig``, ``RunConfig``).
"""

import dataclasses
import sys
from typing import List

from absl import app, logging
from absl import flags as absl_flags

from metaseg import flags
from metaseg.config import JointTrainConfig
from metaseg.errors import ConfigError, exit_on_error, named_as
from metaseg.quiet import import_tensorflow

# What joint training reads of RunConfig: whole sections, and single fields.
READ_SECTIONS = ("data", "synthetic", "model")
READ_FIELDS = ("seed", "checkpoint", "classes", "inner.learning_rate", "inner.sgd",
               "inner.loss_name", "inner.label_smoothing", "inner.augment", "inner.aug_rate")
OWN_FLAGS = {"epochs": "Joint training: passes over the pooled training examples.",
             "batch_size": "Joint training: examples per batch."}


def define_flags(flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> None:
    """Every run_metasegnet.py flag plus ``--epochs`` and ``--batch_size`` (idempotent)."""
    flags.define_flags(flag_values)
    defaults = {f.name: f.default for f in dataclasses.fields(JointTrainConfig)}
    for name, help_text in OWN_FLAGS.items():
        if name not in flag_values:
            absl_flags.DEFINE_integer(name, defaults[name], help_text, flag_values=flag_values)


def _is_read(spec: flags.FlagSpec) -> bool:
    return any(t.partition(".")[0] in READ_SECTIONS or t in READ_FIELDS for t in spec.targets)


def ignored_flags(flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> List[str]:
    """The flags given on the command line (or a flagfile) that joint training does not read."""
    return [f"--{spec.name}" for spec in flags.FLAG_SPECS
            if flag_values[spec.name].present and not _is_read(spec)]


def config_from_flags(flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> JointTrainConfig:
    """Parsed flags -> ``JointTrainConfig``; ConfigError (one line) on a bad value."""
    ignored = ignored_flags(flag_values)
    if ignored:
        logging.warning("Joint training ignores %s (meta-training and evaluation flags)",
                        ", ".join(ignored))
    with named_as(flags.flag_for_field):  # an error about a config field names its flag
        run = flags.to_run_config(flag_values)
    return JointTrainConfig(run, epochs=flag_values.epochs, batch_size=flag_values.batch_size)


@exit_on_error
def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected argument(s) {argv[1:]}: every setting is a --flag "
                          "(see --helpfull)")
    config = config_from_flags()  # a bad flag value fails before TensorFlow is imported
    import_tensorflow(verbose=logging.get_verbosity() > 0)
    from metaseg import joint  # pylint: disable=import-outside-toplevel
    result = joint.train(config, verbose=1 if sys.stdout.isatty() else 2)
    print(f"Joint training done: {len(result.history['loss'])} epochs, {result.iteration} "
          f"steps, final loss {result.history['loss'][-1]:.4f}. Evaluate with: python "
          f"run_metasegnet.py --pretrained --checkpoint {result.checkpoint} (and the same "
          "data and model flags)", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=flags.parse_flags_or_exit)
