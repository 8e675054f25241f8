"""A joint-trained checkpoint of ``studies/learning_signal.py``, set up to be fine-tuned the
way that study fine-tunes it, for ``studies/fit_quality.py`` and
``studies/adaptation_evidence.py``.

    python studies/joint_init.py --checkpoint WORK/seed0/joint_lr0.001 \\
        --learning_rate 0.01 --output DIR

Joint training writes its own optimiser into the checkpoint's config.json (Adam at the joint
step size), so ``metaseg adapt`` would fine-tune it with that. ``learning_signal.py``
fine-tunes every initialisation with the quickstart's inner loop (SGD) at the step size it
chose on the validation classes. This copies the newest checkpoint of ``--checkpoint`` (its
weights, unchanged) into a new ``--output`` with config.json's inner loop set to SGD at
``--learning_rate``; everything else in config.json stays as written. ``--output`` must
not exist; it is written under a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from metaseg.errors import ConfigError, exit_on_error  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="a joint-training checkpoint folder (learning_signal's work dir)")
    p.add_argument("--learning_rate", type=float, required=True,
                   help="the fine-tuning SGD step size (learning_signal's choice)")
    p.add_argument("--output", required=True, help="the new initialisation folder")
    return p.parse_args(argv)


def export(checkpoint: str, learning_rate: float, output: str) -> str:
    """Write the initialisation folder; returns the checkpoint prefix copied."""
    # pylint: disable=import-outside-toplevel
    from metaseg.quiet import import_tensorflow
    import_tensorflow()
    from metaseg.checkpoints import config_file, layout
    if not learning_rate > 0:
        raise ConfigError(f"--learning_rate must be positive, got {learning_rate}")
    if os.path.exists(output):
        raise ConfigError(f"--output {output} exists; choose a new folder")
    raw = config_file.read_config(checkpoint)
    prefix = layout.latest(checkpoint)
    if raw is None or prefix is None:
        raise ConfigError(f"--checkpoint {checkpoint} holds no metaseg checkpoint with a "
                          "config.json; give a joint-training folder of learning_signal.py")
    config_file.run_config_from_dict(raw, checkpoint)  # a config this metaseg reads
    raw["inner"] = {**raw["inner"], "sgd": True, "learning_rate": float(learning_rate)}
    parent = os.path.dirname(os.path.abspath(output))
    staging = tempfile.mkdtemp(prefix=".joint_init-", dir=parent)
    try:
        for path in glob.glob(prefix + ".*"):
            shutil.copy2(path, staging)
        with open(os.path.join(staging, "checkpoint"), "w", encoding="utf-8") as f:
            name = os.path.basename(prefix)
            f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
        config_file.write_config(staging, raw)
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return prefix


@exit_on_error
def main(argv=None) -> int:
    args = parse(argv)
    prefix = export(args.checkpoint, args.learning_rate, args.output)
    print(f"{args.output}: weights of {prefix}, fine-tuned with SGD at {args.learning_rate:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
