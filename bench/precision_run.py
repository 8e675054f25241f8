#!/usr/bin/env python
"""``run_metasegnet.py`` with the model built in a chosen precision (benchmark only).

    python bench/precision_run.py --precision bf16 --flagfile flags/quickstart.flags ...

Mixed precision is not a ``run_metasegnet.py`` flag: on the project's CPU bf16 lost 8.9
mean-IoU points on the quickstart and was slower (README, Mixed precision). This script keeps
the measurement reproducible, and lets a machine with bf16 matrix units (AMX, TPU, recent
GPUs) re-run it: every ``run_metasegnet.py`` flag, plus ``--precision fp32|bf16``, which sets
``ModelConfig.mixed_precision``.
"""

import dataclasses
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO] if REPO not in sys.path else []

from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from metaseg import flags  # noqa: E402
import run_metasegnet  # noqa: E402  (defines every run_metasegnet.py flag)
from metaseg.config import PRECISIONS  # noqa: E402
from metaseg.errors import exit_on_error  # noqa: E402
from metaseg.quiet import import_tensorflow  # noqa: E402

absl_flags.DEFINE_enum("precision", "fp32", list(PRECISIONS),
                       "Compute precision of the model: fp32, or bf16 (Keras mixed_bfloat16).")


@exit_on_error
def main(argv):
    del argv
    import_tensorflow(verbose=logging.get_verbosity() > 0)
    from metaseg import pipeline  # pylint: disable=import-outside-toplevel
    config = flags.to_run_config()
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, mixed_precision=absl_flags.FLAGS.precision))
    result = pipeline.run(config)
    run_metasegnet.print_summary(result)
    print(f"Mean IoU over all meta-test tasks: {result.test.mean_iou}", flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=flags.parse_flags_or_exit)
