#!/usr/bin/env python
"""Meta-train and evaluate few-shot segmentation initialisations (the original's entry point).

    python run_metasegnet.py --flagfile flags/quickstart.flags       # the embedded benchmark
    python run_metasegnet.py --data-dir fewshot_shards --pretrained --checkpoint DIR ...

Every flag of the original ``args.py`` works, in either spelling (``--meta-iters`` or
``--meta_iters``); see ``python run_metasegnet.py --helpfull`` and the README.
"""

import dataclasses
import os
import shlex
import sys

from absl import app, logging
from absl import flags as absl_flags

from metaseg import flags
from metaseg.flags import definitions
from metaseg.errors import Interrupted, exit_on_error, named_as
from metaseg.quiet import import_tensorflow

flags.define_flags()
absl_flags.adopt_module_key_flags(definitions)  # so --help lists them, not only --helpfull


def print_summary(result) -> None:
    """The result table: mean IoU and 95 % CI per initialisation evaluated, and the fold
    mIoU / FB-IoU of the PASCAL-5i / COCO-20i literature (accumulated over all query images)."""
    rows = [(result.label, result.test)]
    if result.random_init is not None:
        rows.append((result.random_label, result.random_init))
    print("\n| initialisation | test tasks | mean IoU | 95 % CI | fold mIoU | FB-IoU |\n"
          "|---|---|---|---|---|---|")
    for name, res in rows:
        print(f"| {name} | {len(res.task_scores)} | {res.mean_iou:.4f} | +/- {res.ci95:.4f} "
              f"| {res.fold_miou:.4f} | {res.fb_iou:.4f} |")


def with_environment(config):
    """``SAVE_PREDICTIONS=1`` (the original's switch) saves predictions to ``predictions/``."""
    wanted = os.environ.get("SAVE_PREDICTIONS", "").strip().lower() not in ("", "0", "false")
    if wanted and not config.eval.save_predictions_dir:
        return dataclasses.replace(config, eval=dataclasses.replace(
            config.eval, save_predictions_dir="predictions"))
    return config


@exit_on_error
def main(argv):
    del argv  # parse_flags_or_exit already rejected stray words
    # TensorFlow's C++ logs stay quiet unless --verbosity asks for more (or the user set it).
    import_tensorflow(verbose=logging.get_verbosity() > 0)
    from metaseg import pipeline  # pylint: disable=import-outside-toplevel
    with named_as(flags.flag_for_field):  # an error about a config field names its flag
        config = with_environment(flags.to_run_config())
        try:
            result = pipeline.run(config)
        except Interrupted as e:  # Ctrl-C: the same command line goes on from the last checkpoint
            raise Interrupted(f"{e}; to go on, run the same command again: "
                              f"python {shlex.join(sys.argv)}") from None
    print_summary(result)
    # Scripts grep this exact line, as they did the original's.
    print(f"Mean IoU over all meta-test tasks: {result.test.mean_iou}", flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=flags.parse_flags_or_exit)
