"""Peak memory and time of ``metaseg adapt``'s adaptation with many support images.

    python bench/bench_many_shot.py [--shots 50,200,500] [--steps 100] [--image_size 128]
        [--init quickstart_b0_64] [--output bench/results_many_shot.json]

For each shot count, two adaptations of ``--init`` (its ``eval_batch`` per step), each in a
fresh Python process so that its peak resident memory (``ru_maxrss``) is its own:

- **streamed** (what ``metaseg adapt`` does): the support set as uint8 at the model's size,
  the K mini-batches built ``cli.adapt.BATCH_BYTES`` at a time as the steps run;
- **all at once** (what it did before): float32 support images and one-hot masks, all K
  mini-batches stacked before one compiled call (``batch_bytes`` unbounded).

Support pairs are generated in memory (a disc on noise per image: decoding files is the
same for both and is not measured). Per run: peak RSS, the RSS before the adaptation (model
built, support set in memory), the seconds of the K steps plus the batch-norm statistics
pass over the support set (one inference-size pass: the only part that grows with the
shots), and the 1-minute load average. Both modes give the same weights (tests/cli/
test_adapt_many_shots.py). Not part of the test suite.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (HERE, os.path.dirname(HERE)) if p not in sys.path]

from absl import app, flags  # noqa: E402

import provenance  # noqa: E402

FLAGS = flags.FLAGS
MODES = ("streamed", "all_at_once")


def define_flags() -> None:
    flags.DEFINE_list("shots", ["50", "200", "500"], "Support set sizes.")
    flags.DEFINE_integer("steps", 100, "Inner steps per adaptation.", lower_bound=1)
    flags.DEFINE_integer("image_size", 128, "Side the model sees (a multiple of 16).")
    flags.DEFINE_string("init", "quickstart_b0_64", "Initialisation (checkpoint or preset).")
    flags.DEFINE_string("output", os.path.join(HERE, "results_many_shot.json"), "Results JSON.")
    flags.DEFINE_string("child", None, "Internal: run one MODE:SHOTS measurement, print JSON.")


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="utf-8") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def support_set(n: int, size: int):
    """images uint8 [n, S, S, 3] (noise, a bright disc), masks uint8 [n, S, S] 0/255."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    images = rng.integers(0, 90, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        (cy, cx), r = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.15, 0.3) * size
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        images[i][inside] = (230, 200, 40)
        masks[i][inside] = 255
    return images, masks


def child(mode: str, shots: int) -> dict:
    """One adaptation in this process; its measurements."""
    # pylint: disable=import-outside-toplevel
    import numpy as np
    from metaseg import checkpoints
    from metaseg.cli import adapt
    from metaseg.data import mask_to_two_channel
    from metaseg.quiet import import_tensorflow
    import_tensorflow()
    source = checkpoints.open_checkpoint(FLAGS.init, "--init")
    images, masks = support_set(shots, FLAGS.image_size)
    budget = adapt.BATCH_BYTES
    if mode == "all_at_once":
        images = images.astype(np.float32)
        masks = np.asarray(mask_to_two_channel(masks), np.float32)
        budget = 2 ** 62
    model = checkpoints.build_and_restore(source, image_size=FLAGS.image_size)
    before, load, tic = _rss_mib(), os.getloadavg()[0], time.perf_counter()
    _, _, losses = adapt.adapt(source, images, masks, steps=FLAGS.steps, learning_rate=0.1,
                               seed=0, batch_bytes=budget, model=model)
    seconds = time.perf_counter() - tic
    batch = source.config.eval.eval_batch
    return {"mode": mode, "shots": shots, "steps": FLAGS.steps, "image_size": FLAGS.image_size,
            "batch": batch, "steps_per_call": min(FLAGS.steps, max(1, budget // adapt.step_bytes(
                batch, FLAGS.image_size))),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_adaptation_mib": before, "adapt_seconds": seconds,
            "last_loss": float(losses[-1]), "load_avg_1m": [load, os.getloadavg()[0]]}


def markdown(rows) -> str:
    lines = ["| shots | mode | steps per call | RSS before (MiB) | peak RSS (MiB) "
             "| K steps + statistics (s) | load avg (1 min) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shots']} | {r['mode']} | {r['steps_per_call']} "
                     f"| {r['rss_before_adaptation_mib']:.0f} | {r['peak_rss_mib']:.0f} "
                     f"| {r['adapt_seconds']:.1f} "
                     f"| {r['load_avg_1m'][0]:.1f}-{r['load_avg_1m'][1]:.1f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.child:
        mode, shots = FLAGS.child.split(":")
        print(json.dumps(child(mode, int(shots))), flush=True)
        return
    prov = provenance.record()
    rows = []
    for shots in (int(s) for s in FLAGS.shots):
        for mode in MODES:
            result = subprocess.run(
                [sys.executable, os.path.abspath(__file__), f"--child={mode}:{shots}",
                 f"--steps={FLAGS.steps}", f"--image_size={FLAGS.image_size}",
                 f"--init={FLAGS.init}"], capture_output=True, text=True, check=False)
            if result.returncode:
                sys.exit(f"error: the {mode} run with {shots} shots failed: "
                         + " ".join(result.stderr.strip().splitlines()[-1:]))
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(markdown(rows[-1:]), flush=True)
    provenance.write_results(FLAGS.output, prov, markdown(rows), rows=rows)


if __name__ == "__main__":
    define_flags()
    app.run(main)
