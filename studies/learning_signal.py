"""Does meta-learning help? Random vs joint-trained vs Reptile vs FOMAML initialisations.

    python studies/learning_signal.py [--meta_iters 150] [--steps 1,2,5,10,20]
        [--out_dir studies/learning_signal] [--inits random,joint,reptile,fomaml]
        [--inner_learning_rates 0.001,0.01,0.1] [--num_val_tasks 8] [--run_flags "..."]
        [--work_dir DIR] [--seeds 0,1,2] [--joint_learning_rates 0.0003,0.001,0.003]

Every run uses the README quickstart's data, model and protocol (``flags/quickstart.flags``:
the embedded benchmark, 100 classes at 64 px, EfficientLab-B0 ``--rsd 2 4``, 5-shot,
inner SGD lr 0.1, batch 5), plus ``--run_flags``. From the same seeded random weights:

- random: no training;
- joint: ``metaseg.joint`` (Adam, beta1 = 0, lr from ``--joint_learning_rates``) on all training
  classes pooled, batch ``--inner-batch``, for the epochs that give the meta-learners' budget;
- reptile / fomaml: ``run_metasegnet.py``'s meta-training for ``--meta_iters`` iterations
  (FOMAML with ``--foml-tail 5``, the published FOMAML*, and the same outer step as
  Reptile times ``--fomaml_meta_step_scale``).

Equal budget: the same number of training images through a forward and backward pass
(meta_iters x meta_batch x inner_iters x inner_batch = joint epochs x training images,
rounded to whole epochs), which with joint batch = inner batch is also the same number of
gradient steps. ``--num_val_tasks`` classes are held out of all training; on them each
initialisation gets its fine-tuning step size from ``--inner_learning_rates`` (the best mean
IoU over the reported step counts: the quickstart's 0.1 suits meta-learned weights and
wrecks joint-trained ones in one step). Then each is fine-tuned on every test class (one
5-shot episode each, the same episodes for all) for max(--steps) steps, with the query IoU
read after every step (``curves.py``). Writes ``results.json``, ``results.md`` and
``learning_signal.png`` into ``--out_dir`` (each through a temporary file, all at the end).

Seeds: each of ``--seeds`` is one full replicate (``--seed`` seeds the initial weights,
meta-training's task sampling, joint training's order and the evaluation episodes, test and
validation), on the same benchmark data (the base flagfile's, passed as ``--data-dir``).
Joint training runs at every ``--joint_learning_rates`` step size; per seed the one with the
best validation mean IoU (best over the fine-tuning step sizes, validation classes only) is
the joint-trained initialisation, the only one tested. results.json: ``per_seed`` (one
seed's run), ``summary`` and ``paired_vs_joint`` across seeds (mean of the per-seed means,
min, max, sd, each seed's mean and CI).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys
import tempfile
import time
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [p for p in (HERE, REPO, os.path.join(REPO, "bench")) if p not in sys.path]

from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from metaseg import flags as metaseg_flags  # noqa: E402
import provenance  # noqa: E402
from metaseg.config import JointTrainConfig, RunConfig  # noqa: E402
from metaseg.errors import ConfigError, exit_on_error  # noqa: E402

FLAGS = absl_flags.FLAGS
INITS = ("random", "joint", "reptile", "fomaml")
FOMAML_TAIL = 5


def define_flags() -> None:
    absl_flags.DEFINE_integer("meta_iters", 150, "Meta-iterations of Reptile and FOMAML.")
    absl_flags.DEFINE_list("steps", ["1", "2", "5", "10", "20"],
                           "Fine-tuning step counts to report.")
    absl_flags.DEFINE_list("inits", list(INITS), "Initialisations to compare.")
    absl_flags.DEFINE_string("out_dir", os.path.join(HERE, "learning_signal"),
                             "Where results.json, results.md and the PNG go.")
    absl_flags.DEFINE_string("base_flagfile", os.path.join(REPO, "flags", "quickstart.flags"),
                             "run_metasegnet.py flagfile giving data, model and protocol.")
    absl_flags.DEFINE_string("run_flags", "", "Extra run_metasegnet.py flags for every run.")
    absl_flags.DEFINE_float("joint_learning_rate", 0.001, "Joint training's Adam step size "
                            "(one candidate; --joint_learning_rates overrides it).")
    absl_flags.DEFINE_list("joint_learning_rates", None,
                           "Joint training's Adam step sizes; each seed keeps the one whose "
                           "best validation mean IoU is highest (default: "
                           "--joint_learning_rate alone).")
    absl_flags.DEFINE_list("seeds", ["0"], "Seeds; each is one replicate (initial weights, "
                                           "meta-training and joint-training order, episodes).")
    absl_flags.DEFINE_list("inner_learning_rates", ["0.001", "0.01", "0.1"],
                           "Fine-tuning step sizes; each initialisation gets the one that is "
                           "best on the validation classes.")
    absl_flags.DEFINE_integer("num_val_tasks", 8, "Classes held out of training (and of the "
                                                  "test) to choose the fine-tuning step size.")
    absl_flags.DEFINE_float("fomaml_meta_step_scale", 1.0,
                            "FOMAML's outer step = the base flagfile's times this (5, to match "
                            "Reptile's 5-step moves, diverged in the pilot).")
    absl_flags.DEFINE_string("work_dir", None, "Keep checkpoints here (default: a temporary "
                                               "directory, deleted at the end).")


def parse_steps(values: List[str]) -> List[int]:
    try:
        steps = sorted({int(v) for v in values})
    except ValueError:
        raise ConfigError(f"--steps must be integers, got {values}") from None
    if not steps or steps[0] < 1:
        raise ConfigError(f"--steps must be a non-empty list of positive step counts, "
                          f"got {values}")
    return steps


def parse_seeds(values: List[str]) -> List[int]:
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise ConfigError(f"--seeds must be integers, got {values}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be a non-empty list of distinct integers, got {values}")
    return seeds


def joint_rates() -> List[float]:
    values = FLAGS.joint_learning_rates or [str(FLAGS.joint_learning_rate)]
    try:
        rates = [float(v) for v in values]
    except ValueError:
        rates = []
    if not rates or min(rates) <= 0 or len(set(rates)) != len(rates):
        raise ConfigError("--joint_learning_rates (or --joint_learning_rate) must be distinct "
                          f"positive numbers, got {values}")
    return rates


def check_flags() -> List[int]:
    """Validate before anything is trained or written; the sorted step counts."""
    steps = parse_steps(FLAGS.steps)
    parse_seeds(FLAGS.seeds)
    joint_rates()
    if FLAGS.meta_iters < 1:
        raise ConfigError(f"--meta_iters must be positive, got {FLAGS.meta_iters}")
    unknown = sorted(set(FLAGS.inits) - set(INITS))
    if unknown or not FLAGS.inits:
        raise ConfigError(f"--inits must name some of {', '.join(INITS)}, got {FLAGS.inits}")
    try:
        rates = [float(v) for v in FLAGS.inner_learning_rates]
    except ValueError:
        rates = []
    if not rates or min(rates) <= 0:
        raise ConfigError("--inner_learning_rates must be a non-empty list of positive "
                          f"numbers, got {FLAGS.inner_learning_rates}")
    if FLAGS.num_val_tasks < 1:
        raise ConfigError(f"--num_val_tasks must be positive, got {FLAGS.num_val_tasks}")
    if FLAGS.fomaml_meta_step_scale <= 0:
        raise ConfigError(f"--fomaml_meta_step_scale must be positive, got "
                          f"{FLAGS.fomaml_meta_step_scale}")
    if FLAGS.work_dir and os.path.exists(FLAGS.work_dir) and os.listdir(FLAGS.work_dir):
        raise ConfigError(f"--work_dir {FLAGS.work_dir} is not empty; choose a new directory")
    return steps


def run_config(checkpoint: str, *extra: str) -> RunConfig:
    """The base flagfile + --run_flags + ``extra`` as run_metasegnet.py would read them
    (``extra`` starts with a seed's ``--seed`` and ``--data-dir`` in the replicates)."""
    flag_values = absl_flags.FlagValues()
    metaseg_flags.define_flags(flag_values)
    argv = ["run_metasegnet.py", "--flagfile", FLAGS.base_flagfile,
            f"--num_val_tasks={FLAGS.num_val_tasks}", *shlex.split(FLAGS.run_flags), *extra,
            f"--checkpoint={checkpoint}"]
    try:
        metaseg_flags.parse_flags(argv, flag_values)
    except absl_flags.Error as e:
        raise ConfigError(f"--run_flags: {metaseg_flags.argv.flag_error_message(e)}") from None
    return metaseg_flags.to_run_config(flag_values)


def meta_config(algorithm: str, checkpoint: str, seed_args=()) -> RunConfig:
    """Meta-training for --meta_iters, evaluated only once at the end (cheaply)."""
    base = run_config(checkpoint, *seed_args)
    # run_metasegnet.py evaluates at the end; 1 step keeps that short (the curves are ours).
    # --eval-iters is also the total of a cosine schedule, but the curves need a fixed one.
    extra = [f"--meta-iters={FLAGS.meta_iters}", f"--eval-interval={FLAGS.meta_iters}",
             f"--checkpoint_every={FLAGS.meta_iters}", "--nocompare_random_init",
             "--eval-iters=1"]
    if algorithm == "fomaml":
        scale = FLAGS.fomaml_meta_step_scale
        extra += ["--foml", f"--foml-tail={FOMAML_TAIL}",
                  f"--meta-step={base.meta.meta_step * scale}",
                  f"--meta-step-final={base.meta.meta_step_final * scale}"]
    return run_config(checkpoint, *seed_args, *extra)


def budget(config: RunConfig, train_images: int) -> Dict:
    meta = config.meta
    images = FLAGS.meta_iters * meta.meta_batch * meta.inner_iters * meta.inner_batch
    epochs = max(1, round(images / train_images))
    return {"meta_images": images, "meta_gradient_steps": FLAGS.meta_iters * meta.meta_batch
            * meta.inner_iters, "joint_epochs": epochs, "joint_batch": meta.inner_batch,
            "joint_images": epochs * train_images,
            "joint_gradient_steps": epochs * math.ceil(train_images / meta.inner_batch),
            "definition": (
                "equal numbers of training images through a forward and backward pass: "
                f"{FLAGS.meta_iters} meta-iterations x {meta.meta_batch} tasks x "
                f"{meta.inner_iters} inner steps x batch {meta.inner_batch} = {images} for "
                f"Reptile and FOMAML; {epochs} epochs x {train_images} training images = "
                f"{epochs * train_images} for joint training (batch {meta.inner_batch}, "
                f"{epochs * math.ceil(train_images / meta.inner_batch)} steps).")}


def train_init(init: str, work: str, base: RunConfig, plan: Dict, seed_args=(),
               joint_lr: float = 0.001):
    """The model with the initialisation ``init`` (all start from ``base``'s seeded weights)."""
    from metaseg import joint, pipeline  # pylint: disable=import-outside-toplevel
    model = pipeline.build(base)
    if init == "random":
        return model
    checkpoint = os.path.join(work, init if init != "joint" else f"joint_lr{joint_lr:g}")
    if init == "joint":
        config = run_config(checkpoint, *seed_args, "--nosgd", f"--learning-rate={joint_lr}")
        joint.train(JointTrainConfig(run=config, epochs=plan["joint_epochs"],
                                     batch_size=plan["joint_batch"]))
    else:
        pipeline.run(meta_config(init, checkpoint, seed_args))
    pipeline.restore(model, checkpoint, skip_final_layer=False)
    return model


def replicate(steps: List[int], work: str, seed: int, data_dir: str, test, val,
              plan: Dict) -> Dict:
    """One seed: every init trained, its step size chosen on validation, tested."""
    import curves  # pylint: disable=import-outside-toplevel  # imports TensorFlow
    from metaseg.meta.adapt import Adapter  # pylint: disable=import-outside-toplevel
    seed_args = (f"--seed={seed}", f"--data-dir={data_dir}")
    work = os.path.join(work, f"seed{seed}")
    base = run_config(os.path.join(work, "base"), *seed_args)
    rates = [float(v) for v in FLAGS.inner_learning_rates]
    phase_seconds, per_task, chosen, sweep = {}, {}, {}, {}
    for init in FLAGS.inits:
        tic = time.perf_counter()
        candidates = joint_rates() if init == "joint" else [None]
        best = None
        for joint_lr in candidates:
            adapter = Adapter(train_init(init, work, base, plan, seed_args, joint_lr or 0.0),
                              base.inner)
            lr, val_scores = curves.pick_learning_rate(adapter, base, val, max(steps), rates,
                                                       steps)
            if joint_lr is not None:
                sweep[str(joint_lr)] = {"validation_mean_iou": val_scores[lr],
                                        "inner_learning_rate": lr,
                                        "checkpoint": os.path.join(work, f"joint_lr{joint_lr:g}")}
            if best is None or val_scores[lr] > best[2][best[1]]:
                best = (adapter, lr, val_scores, joint_lr)
        adapter, lr, val_scores, joint_lr = best
        chosen[init] = {"learning_rate": lr, "validation_mean_iou": val_scores}
        if joint_lr is not None:
            chosen[init]["joint_learning_rate"] = joint_lr
        picked = time.perf_counter()
        per_task[init] = curves.task_curves(adapter, base, test, max(steps), lr)
        phase_seconds[f"{init} training + step-size choice"] = picked - tic
        phase_seconds[f"{init} test"] = time.perf_counter() - picked
        logging.info("seed %d %s: lr %s (validation %s); test %s", seed, init, lr, val_scores,
                     {k: round(v["mean"], 4) for k, v in
                      curves.summarise(per_task[init], [0, *steps]).items()})
    steps = [0, *steps]  # 0: the initialisation without fine-tuning
    block = {"seed": seed, "phase_seconds": phase_seconds, "learning_rates": chosen,
             "summary": {i: {str(k): v for k, v in curves.summarise(c, steps).items()}
                         for i, c in per_task.items()},
             "paired_vs_joint": {i: {str(k): v for k, v in curves.paired_difference(
                 c, per_task["joint"], steps).items()}
                 for i, c in per_task.items() if "joint" in per_task and i != "joint"},
             "per_task_curves": {i: curves.as_lists(c) for i, c in per_task.items()}}
    if sweep:
        block["joint_learning_rate_sweep"] = sweep
    return block


def spread(per_seed: Dict[str, Dict]) -> Dict:
    """Across seeds: mean of the per-seed means, min, max, SD (n - 1; 0 for one seed), and
    each seed's mean and 95 % CI; ``ci_excludes_zero_every_seed`` for differences."""
    means = [v["mean"] for v in per_seed.values()]
    n = len(means)
    mean = sum(means) / n
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "min": min(means), "max": max(means), "sd": sd, "n_seeds": n,
            "per_seed": {s: {"mean": v["mean"], "ci95": v["ci95"]} for s, v in per_seed.items()},
            "ci_excludes_zero_every_seed": all(abs(v["mean"]) > v["ci95"]
                                               for v in per_seed.values())}


def across(blocks: Dict[str, Dict], key: str) -> Dict:
    first = next(iter(blocks.values()))[key]
    return {i: {k: spread({s: b[key][i][k] for s, b in blocks.items()}) for k in by_step}
            for i, by_step in first.items()}


def study(steps: List[int], work: str) -> Dict:
    from metaseg import pipeline  # pylint: disable=import-outside-toplevel
    from metaseg.data import TaskStore  # pylint: disable=import-outside-toplevel
    base = run_config(os.path.join(work, "base"))
    # The benchmark of the base flagfile's seed for every replicate: --seed would also
    # regenerate the embedded data, and the replicates are of training and episodes.
    data_dir = pipeline.resolve_data_dir(base)
    splits = pipeline.load_splits(base, data_dir)
    test, val = (TaskStore.load(t, base.data.image_size) for t in (splits.test, splits.val))
    train_images = sum(TaskStore.load(splits.train, base.data.image_size).num_examples(i)
                       for i in range(len(splits.train)))
    plan = budget(base, train_images)
    blocks = {str(seed): replicate(steps, work, seed, data_dir, test, val, plan)
              for seed in parse_seeds(FLAGS.seeds)}
    steps = [0, *steps]
    phase_seconds = {f"seed {s} {k}": v for s, b in blocks.items()
                     for k, v in b["phase_seconds"].items()}
    return {"settings": settings(base, steps, len(test), len(val)), "budget": plan,
            "data_dir": data_dir, "phase_seconds": phase_seconds,
            "summary": across(blocks, "summary"),
            "paired_vs_joint": across(blocks, "paired_vs_joint") if "joint" in FLAGS.inits
            else {}, "per_seed": blocks,
            "test_classes": list(test.names), "validation_classes": list(val.names)}


def settings(base: RunConfig, steps: List[int], num_tasks: int, num_val: int) -> Dict:
    return {"steps": steps, "meta_iters": FLAGS.meta_iters, "inits": list(FLAGS.inits),
            "image_size": base.data.image_size, "shots": base.eval.shots, "query": 5,
            "eval_batch": base.eval.eval_batch,
            "inner_optimizer": base.inner.optimizer, "num_test_tasks": num_tasks,
            "num_val_tasks": num_val, "inner_learning_rates": [float(v) for v in
                                                               FLAGS.inner_learning_rates],
            "joint_learning_rates": joint_rates(), "seeds": parse_seeds(FLAGS.seeds),
            "fomaml_tail": FOMAML_TAIL,
            "fomaml_meta_step_scale": FLAGS.fomaml_meta_step_scale,
            "base_flagfile": os.path.relpath(FLAGS.base_flagfile, REPO),
            "run_flags": FLAGS.run_flags, "run_config": dataclasses.asdict(base)}


@exit_on_error
def main(argv):
    del argv
    steps = check_flags()
    run_config(os.path.join(tempfile.gettempdir(), "unused"))  # bad --run_flags fail here
    prov = provenance.record()
    tic = time.perf_counter()
    if FLAGS.work_dir:
        results = study(steps, FLAGS.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="learning_signal_") as work:
            results = study(steps, work)
    results = {"provenance": prov, "runtime_s": time.perf_counter() - tic, **results}
    import signal_report  # pylint: disable=import-outside-toplevel
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    signal_report.plot(results, os.path.join(FLAGS.out_dir, "learning_signal.png"))
    text = signal_report.markdown(results, provenance.markdown_header(prov))
    provenance.write_json(os.path.join(FLAGS.out_dir, "results.json"), results)
    provenance.write_atomic(os.path.join(FLAGS.out_dir, "results.md"), text)
    print(text)
    print(f"Run time: {results['runtime_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
