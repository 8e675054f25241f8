"""Evidence for the adaptation that tunes itself: ``--steps auto``, the quality estimate and
``--suggest``, measured on tasks the initialisation never saw.

    python studies/adaptation_evidence.py [--init quickstart_b0_64] [--test_tasks 12]
        [--photo_tasks 4] [--seeds 0] [--uho_val_tasks 8] [--uho_configs 1]
        [--out_dir studies/adaptation_evidence]

Tasks. ``synthetic``: the embedded benchmark's held-out test classes (the initialisation's
config.json ``synthetic`` section; classes in a seeded order), each rendered with 20 images
by the benchmark's own generator (``render.render_class``: its per-class stream, so the
first 10 are the benchmark's 10 and the other 10 more draws of the same class). ``photo``:
scikit-image's sample photographs. scikit-image ships no photograph with a ground-truth
object mask, so these masks are made true by construction: a shape with an exact mask
(``skimage.data.horse()``'s silhouette, or the alpha channel of ``skimage.data.logo()``),
filled with pixels of one photograph, is pasted at a random place, scale and flip onto a
random crop of another photograph. The pixels are real photographs; the objects are not
natural ones.

Per task and seed (the seed draws the mini-batches, the folds and the random labelling):

- policies: support = images 0-4, queries = images 5-19. ``fixed``: ``metaseg adapt``'s
  default step count (UHO's if the checkpoint has one, else ``eval_iters``); ``auto``:
  ``autosteps.held_out_curves`` then ``metaseg adapt`` for the chosen count; ``uho``: the
  step count (and learning rate) ``UpdateHyperparameterSearch`` chose on ``--uho_val_tasks``
  training classes that the calibration was not fitted on (the quickstart was trained
  without held-out validation classes, so these classes were seen in meta-training).
  Every adaptation is ``metaseg.cli.adapt.adapt`` (batch-norm statistics re-estimated on
  the support images), from the same initial weights; IoU is ``metrics.binary_iou``.
- calibration: every query mask of ``fixed`` (``masks`` model) and of ``auto``
  (``masks+support`` model, with the task's held-out support IoU; and the same masks
  through the ``masks`` model, ``masks (auto steps)``, to tell which model suits them),
  through ``Calibration.estimate`` on ``quality.signals`` (flip agreement etc.), against
  true IoU.
- suggestion: support = images 0-1, pool = images 5-14, evaluation = images 15-19. After a
  fixed-step adaptation on the support, the pool is ranked by ``quality.ranked_for_labelling``
  (what ``--suggest`` writes); the first k = 1, 2, 5 are added (with their true masks) and
  the model is adapted again from the initialisation on the larger support; IoU on the
  evaluation images. ``random``: k pool images drawn at random (``--random_draws`` draws).

Results are cached per task in ``<out_dir>/cache/`` (one JSON per task, seed and
setting), so a second run with more tasks or seeds adds to the first; ``results.json``,
``results.md`` and ``reliability.png`` are written from every cached task that matches the
settings (each through a temporary file).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [p for p in (HERE, REPO, os.path.join(REPO, "bench")) if p not in sys.path]

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import numpy as np  # noqa: E402

import provenance  # noqa: E402
from metaseg.errors import ConfigError, exit_on_error  # noqa: E402

FLAGS = absl_flags.FLAGS
EXAMPLES = 20          # images rendered / composed per task
SHOTS = 5              # policies' support set
QUERIES = slice(5, 20)
SUGGEST_SHOTS = 2      # suggestion's starting support set
POOL = slice(5, 15)
HELD = slice(15, 20)
ADD = (1, 2, 5)
PHOTO_SOURCES = ("chelsea", "coffee", "rocket", "astronaut", "immunohistochemistry",
                 "hubble_deep_field")
PHOTO_BACKGROUNDS = ("camera", "coins", "brick", "grass", "gravel", "moon", "chelsea",
                     "coffee", "rocket", "astronaut")


def define_flags() -> None:
    absl_flags.DEFINE_string("init", "quickstart_b0_64", "Initialisation (checkpoint folder or "
                             "preset) trained on the embedded benchmark.")
    absl_flags.DEFINE_integer("test_tasks", 12, "Held-out test classes of the benchmark.")
    absl_flags.DEFINE_integer("photo_tasks", 4, "Composited real-photo tasks (0 to skip).")
    absl_flags.DEFINE_list("seeds", ["0"], "Seeds (batch draws, folds, random labelling).")
    absl_flags.DEFINE_integer("uho_val_tasks", 8, "Training classes UHO chooses on.")
    absl_flags.DEFINE_integer("uho_configs", 1, "UHO configurations (1: the step count only, "
                              "at the checkpoint's learning rate).")
    absl_flags.DEFINE_float("uho_lr_low", None, "UHO's learning-rate range (default: the "
                            "checkpoint's learning rate, i.e. steps only).")
    absl_flags.DEFINE_float("uho_lr_high", None, "See --uho_lr_low.")
    absl_flags.DEFINE_integer("auto_max_steps", None, "--steps auto's and UHO's largest step "
                              "count (default as metaseg adapt: 2x the fixed one).")
    absl_flags.DEFINE_integer("steps", None, "The fixed step count (default: metaseg adapt's).")
    absl_flags.DEFINE_integer("random_draws", 2, "Random labelling draws per task and k.")
    absl_flags.DEFINE_string("out_dir", os.path.join(HERE, "adaptation_evidence"),
                             "Where results.json, results.md, reliability.png and cache/ go.")


def check_flags() -> List[int]:
    try:
        seeds = sorted({int(s) for s in FLAGS.seeds})
    except ValueError:
        raise ConfigError(f"--seeds must be integers, got {FLAGS.seeds}") from None
    if not seeds:
        raise ConfigError("--seeds must name at least one seed")
    if FLAGS.test_tasks < 1 or FLAGS.photo_tasks < 0:
        raise ConfigError(f"--test_tasks must be >= 1 and --photo_tasks >= 0, got "
                          f"{FLAGS.test_tasks} and {FLAGS.photo_tasks}")
    if FLAGS.photo_tasks > len(PHOTO_SOURCES):
        raise ConfigError(f"--photo_tasks: at most {len(PHOTO_SOURCES)}, got {FLAGS.photo_tasks}")
    if FLAGS.uho_val_tasks < 1 or FLAGS.uho_configs < 1 or FLAGS.random_draws < 1:
        raise ConfigError("--uho_val_tasks, --uho_configs and --random_draws must be positive")
    return seeds


# --- tasks ----------------------------------------------------------------------------------

def _square_crop(photo: np.ndarray, rng, size: int, scale: float) -> np.ndarray:
    from skimage.transform import resize  # pylint: disable=import-outside-toplevel
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    photo = photo[..., :3]
    side = int(min(photo.shape[:2]) * scale)
    top = int(rng.integers(0, photo.shape[0] - side + 1))
    left = int(rng.integers(0, photo.shape[1] - side + 1))
    crop = photo[top:top + side, left:left + side]
    return (resize(crop, (size, size), anti_aliasing=True, preserve_range=True)
            .astype(np.float64))


def photo_task(index: int, size: int):
    """(name, images uint8 [20,S,S,3], masks uint8 [20,S,S]): shape ``index % 2`` (horse
    silhouette, scikit-image logo) filled with PHOTO_SOURCES[index] on other photos."""
    # pylint: disable=import-outside-toplevel
    from skimage import data
    from skimage.transform import resize, rotate
    source = PHOTO_SOURCES[index]
    if index % 2 == 0:
        shape, shape_name = data.horse() == 0, "horse"  # the horse is black (False) on white
    else:
        shape, shape_name = data.logo()[..., 3] > 127, "logo"
    backgrounds = [b for b in PHOTO_BACKGROUNDS if b != source]
    rng = np.random.default_rng([17, index])
    texture_photo = getattr(data, source)()
    images, masks = [], []
    for _ in range(EXAMPLES):
        background = _square_crop(getattr(data, backgrounds[rng.integers(len(backgrounds))])(),
                                  rng, size, rng.uniform(0.4, 1.0))
        texture = _square_crop(texture_photo, rng, size, rng.uniform(0.3, 0.8))
        side = int(rng.integers(size // 3, int(size * 0.8)))
        m = resize(shape.astype(np.float64), (side, side), order=1) > 0.5
        m = rotate(m.astype(np.float64), rng.uniform(-25, 25), order=0) > 0.5
        if rng.random() < 0.5:
            m = m[:, ::-1]
        top, left = rng.integers(0, size - side + 1, size=2)
        mask = np.zeros((size, size), bool)
        mask[top:top + side, left:left + side] = m
        image = np.where(mask[..., None], texture, background)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask.astype(np.uint8) * 255)
    return f"photo:{shape_name}_of_{source}", np.stack(images), np.stack(masks)


# --- one task -------------------------------------------------------------------------------

class Study:
    """The initialisation, built once, and every adaptation of the study."""

    def __init__(self):
        # pylint: disable=import-outside-toplevel
        from metaseg import checkpoints
        from metaseg.cli import adapt as adapt_command
        from metaseg.cli import auto
        from metaseg.cli.segment import Segmenter
        from metaseg.evaluation import quality
        from metaseg.meta.adapt import Adapter
        from metaseg.quiet import import_tensorflow
        import_tensorflow()
        self.source = checkpoints.open_checkpoint(FLAGS.init, "--init")
        config = self.source.config
        if config.data.dataset != "synthetic":
            raise ConfigError(f"--init {FLAGS.init} was trained on {config.data.dataset!r}, "
                              "not the embedded benchmark (dataset 'synthetic')")
        self.config, self.size = config, config.data.image_size
        self.steps, self.learning_rate, self.origin = adapt_command.hyperparameters(
            self.source, FLAGS.steps, None)
        self.max_steps = auto.max_steps(self.steps, FLAGS.auto_max_steps)
        self.calibration = quality.read(self.source.directory)
        if self.calibration is None:
            raise ConfigError(f"--init {FLAGS.init} has no {quality.QUALITY_FILE}; fit one with "
                              "python studies/fit_quality.py")
        self.adapter = Adapter(checkpoints.build_and_restore(self.source, image_size=self.size),
                               config.inner)
        self.initial = self.adapter.initial_state()
        self.segmenter = Segmenter(self.adapter.model, self.size)

    def predict(self, images, masks, support_x, support_y, steps, learning_rate, seed):
        """Adapt from the initialisation; (foreground [Q,S,S], flipped back, true IoU [Q])."""
        # pylint: disable=import-outside-toplevel
        import tensorflow as tf
        from metaseg.cli import adapt as adapt_command
        from metaseg.data.shards import mask_to_two_channel
        from metaseg.evaluation import metrics
        self.adapter.assign(self.initial)
        adapt_command.adapt(self.source, support_x, support_y, steps=steps,
                            learning_rate=learning_rate, seed=seed, adapter=self.adapter)
        batch = tf.constant(images, tf.float32)
        foreground = self.segmenter.foreground(batch)
        flipped = tf.reverse(self.segmenter.foreground(tf.reverse(batch, [2])), [2])
        probs = tf.stack([1.0 - foreground, foreground], -1)
        iou = metrics.binary_iou(probs, mask_to_two_channel(tf.constant(masks))).numpy()
        return foreground.numpy(), flipped.numpy(), np.asarray(iou, np.float64)

    def estimated(self, images, masks, support_x, support_y, steps, learning_rate, seed,
                  support_iou=None) -> Dict:
        from metaseg.evaluation import quality  # pylint: disable=import-outside-toplevel
        fg, flipped, iou = self.predict(images, masks, support_x, support_y, steps,
                                        learning_rate, seed)
        features = quality.signals(fg, flipped)
        estimate, low, high = self.calibration.estimate(features, support_iou)
        out = {"iou": iou.tolist(), "estimate": estimate.tolist(), "low": low.tolist(),
               "high": high.tolist(),
               "agreement": features[:, quality.MASK_FEATURES.index("agreement")].tolist()}
        if support_iou is not None:  # the same masks through the masks-only model, to compare
            estimate, low, high = self.calibration.estimate(features, None)
            out.update(masks_estimate=estimate.tolist(), masks_low=low.tolist(),
                       masks_high=high.tolist())
        return out

    def uho_choice(self, val_names, seed) -> Dict:
        """UHO's (learning rate, steps) on ``val_names`` (training classes)."""
        # pylint: disable=import-outside-toplevel
        import dataclasses
        from metaseg.data.tasks import TaskStore
        from metaseg.datasets.synthetic import render
        from metaseg.evaluation import uho
        config, synthetic = self.config, self.config.synthetic
        names = render.class_names(synthetic.num_classes)
        arrays = [render.render_class(names.index(n), synthetic.num_classes,
                                      synthetic.examples_per_class, synthetic.image_size, 0)
                  for n in val_names]
        store = TaskStore.from_arrays(list(val_names), [a[0] for a in arrays],
                                      [a[1] for a in arrays], image_size=self.size)
        low = FLAGS.uho_lr_low if FLAGS.uho_lr_low is not None else self.learning_rate
        high = FLAGS.uho_lr_high if FLAGS.uho_lr_high is not None else low
        rate = config.model.final_layer_dropout_rate
        batch = config.eval.eval_batch
        settings = dataclasses.replace(
            config.uho, lr_search_range_low=low, lr_search_range_high=high,
            drop_rate_search_range_low=rate, drop_rate_search_range_high=rate,
            batch_size_search_range_low=batch, batch_size_search_range_high=batch,
            aug_rate_search_range_low=config.inner.aug_rate,
            aug_rate_search_range_high=config.inner.aug_rate,
            max_steps=self.max_steps, min_steps=1, num_configs_to_sample=FLAGS.uho_configs)
        eval_config = dataclasses.replace(config.eval, seed=seed)
        self.adapter.assign(self.initial)
        found = uho.UpdateHyperparameterSearch(
            self.adapter.model, config.inner, eval_config, settings, model_drop_rate=rate,
            adapter=self.adapter, seed=seed).run(store)
        self.adapter.assign(self.initial)
        return {"learning_rate": float(found.learning_rate), "steps": int(found.steps),
                "val_tasks": list(val_names), "score": float(found.best.score),
                "best_steps": [int(s) for s in found.best.best_steps],
                "lr_range": [low, high], "configs": FLAGS.uho_configs}

    def task(self, images, masks, seed, uho_choice) -> Dict:
        # pylint: disable=import-outside-toplevel
        from metaseg.evaluation import autosteps, quality
        from metaseg.specs import BatchSpec
        config = self.config
        support_x, support_y = images[:SHOTS], masks[:SHOTS]
        qx, qy = images[QUERIES], masks[QUERIES]
        fixed = self.estimated(qx, qy, support_x, support_y, self.steps, self.learning_rate,
                               seed)
        self.adapter.assign(self.initial)
        found = autosteps.held_out_curves(
            self.adapter, support_x, support_y, BatchSpec.evaluation(config.eval, config.inner),
            max_steps=self.max_steps, learning_rate=self.learning_rate, seed=seed,
            transductive=config.eval.transductive)
        auto = self.estimated(qx, qy, support_x, support_y, found.steps, self.learning_rate,
                              seed, support_iou=found.score)
        auto.update(steps=found.steps, support_iou=found.score)
        _, _, uho_iou = self.predict(qx, qy, support_x, support_y, uho_choice["steps"],
                                     uho_choice["learning_rate"], seed)
        # suggestion vs random labelling
        start_x, start_y = images[:SUGGEST_SHOTS], masks[:SUGGEST_SHOTS]
        pool_x, pool_y = images[POOL], masks[POOL]
        held_x, held_y = images[HELD], masks[HELD]
        pool = self.estimated(pool_x, pool_y, start_x, start_y, self.steps, self.learning_rate,
                              seed)
        files = [f"{i:02d}" for i in range(len(pool_x))]
        ranked = [int(f) for f in quality.ranked_for_labelling(files, pool["estimate"],
                                                               pool["agreement"])]
        rng = np.random.default_rng([seed, 99])
        draws = [rng.permutation(len(pool_x)).tolist() for _ in range(FLAGS.random_draws)]

        def with_added(chosen):
            x = np.concatenate([start_x, pool_x[chosen]])
            y = np.concatenate([start_y, pool_y[chosen]])
            return float(self.predict(held_x, held_y, x, y, self.steps, self.learning_rate,
                                      seed)[2].mean())
        base = float(self.predict(held_x, held_y, start_x, start_y, self.steps,
                                  self.learning_rate, seed)[2].mean())
        suggested = {str(k): with_added(ranked[:k]) for k in ADD}
        random = {str(k): float(np.mean([with_added(d[:k]) for d in draws])) for k in ADD}
        return {"fixed": fixed, "auto": auto, "uho": {"iou": uho_iou.tolist()},
                "suggestion": {"start": base, "suggested": suggested, "random": random,
                               "ranked": ranked, "pool_true_iou": pool["iou"]}}


# --- summary --------------------------------------------------------------------------------

def _mean_ci(values) -> Dict:
    from metaseg.evaluation import metrics  # pylint: disable=import-outside-toplevel
    mean, ci = metrics.mean_and_ci95(values)
    return {"mean": mean, "ci95": ci, "n": len(values)}


def _spearman_with_ci(tasks: List[Dict], key: str, seed: int = 0) -> Dict:
    """Spearman of estimate vs true IoU over every mask, a 95 % CI by resampling tasks."""
    from scipy.stats import spearmanr  # pylint: disable=import-outside-toplevel
    est = [np.asarray(t[key]["estimate"]) for t in tasks]
    iou = [np.asarray(t[key]["iou"]) for t in tasks]
    value = float(spearmanr(np.concatenate(est), np.concatenate(iou)).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(1000 if len(tasks) > 1 else 0):
        pick = rng.integers(0, len(tasks), len(tasks))
        r = spearmanr(np.concatenate([est[i] for i in pick]),
                      np.concatenate([iou[i] for i in pick])).statistic
        if np.isfinite(r):
            boots.append(r)
    low, high = (np.percentile(boots, [2.5, 97.5]).tolist() if boots else [math.nan, math.nan])
    return {"spearman": value, "ci95_low": float(low), "ci95_high": float(high),
            "masks": int(sum(len(e) for e in est))}


def _coverage(tasks: List[Dict], key: str) -> Dict:
    iou = np.concatenate([t[key]["iou"] for t in tasks])
    low = np.concatenate([t[key]["low"] for t in tasks])
    high = np.concatenate([t[key]["high"] for t in tasks])
    est = np.concatenate([t[key]["estimate"] for t in tasks])
    inside = ((iou >= low) & (iou <= high)).astype(np.float64)
    # tasks as the unit of the CI (masks of one task are not independent)
    per_task = [float(np.mean((np.asarray(t[key]["iou"]) >= np.asarray(t[key]["low"]))
                              & (np.asarray(t[key]["iou"]) <= np.asarray(t[key]["high"]))))
                for t in tasks]
    return {"coverage": float(inside.mean()), "coverage_ci95": _mean_ci(per_task)["ci95"],
            "mean_width": float(np.mean(high - low)),
            "mean_absolute_error": float(np.mean(np.abs(est - iou)))}


def _merge_seeds(results: List[Dict]) -> Dict:
    """One task's results over its seeds: masks concatenated, numbers averaged (so a task,
    not a task x seed, is the unit of every CI)."""
    merged = {}
    for key in ("fixed", "auto", "uho"):
        merged[key] = {k: [v for r in results for v in r[key][k]]
                       for k in results[0][key] if isinstance(results[0][key][k], list)}
    merged["auto"]["steps"] = float(np.mean([r["auto"]["steps"] for r in results]))
    s = [r["suggestion"] for r in results]
    merged["suggestion"] = {
        "start": float(np.mean([x["start"] for x in s])),
        **{kind: {k: float(np.mean([x[kind][k] for x in s])) for k in s[0][kind]}
           for kind in ("suggested", "random")}}
    return merged


def summarise(records: List[Dict]) -> Dict:
    out = {}
    by_task: Dict[str, List[Dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    merged = [(rs[0]["group"], _merge_seeds([r["result"] for r in rs]))
              for rs in by_task.values()]
    for group in ("synthetic", "photo", "all"):
        tasks = [m for g, m in merged if group == "all" or g == group]
        if not tasks:
            continue
        policies = {p: _mean_ci([float(np.mean(t[p]["iou"])) for t in tasks])
                    for p in ("fixed", "auto", "uho")}
        diff = {f"auto-{p}": _mean_ci([float(np.mean(t["auto"]["iou"]) - np.mean(t[p]["iou"]))
                                       for t in tasks]) for p in ("fixed", "uho")}
        calibration = {}
        for key, model in (("fixed", "masks"), ("auto", "masks+support")):
            calibration[model] = {**_spearman_with_ci(tasks, key), **_coverage(tasks, key)}
        if all("masks_estimate" in t["auto"] for t in tasks):  # version 2 on: auto's masks
            auto_masks = [{"m": {k: t["auto"][f"masks_{k}"] for k in ("estimate", "low", "high")}
                           | {"iou": t["auto"]["iou"]}} for t in tasks]
            calibration["masks (auto steps)"] = {**_spearman_with_ci(auto_masks, "m"),
                                                 **_coverage(auto_masks, "m")}
        both = [{"m": {k: t["fixed"][k] + t["auto"][k] for k in
                       ("estimate", "iou", "low", "high")}} for t in tasks]
        calibration["all masks"] = {**_spearman_with_ci(both, "m"), **_coverage(both, "m")}
        s = [t["suggestion"] for t in tasks]
        suggestion = {"start": _mean_ci([x["start"] for x in s])}
        for k in ADD:
            k = str(k)
            suggestion[k] = {
                "suggested": _mean_ci([x["suggested"][k] for x in s]),
                "random": _mean_ci([x["random"][k] for x in s]),
                "suggested-random": _mean_ci([x["suggested"][k] - x["random"][k] for x in s])}
        out[group] = {"tasks": len(tasks), "policies": policies, "differences": diff,
                      "auto_steps": _mean_ci([float(t["auto"]["steps"]) for t in tasks]),
                      "calibration": calibration, "suggestion": suggestion}
    return out


def _cell(v: Dict, signed: bool = False) -> str:
    return f"{v['mean']:{'+' if signed else ''}.3f} ± {v['ci95']:.3f}"


def markdown(results: Dict, header: str) -> str:
    s = results["settings"]
    lines = [header, "# Adaptation that tunes itself: evidence", "",
             f"Initialisation `{s['init']}`; fixed default {s['steps']} steps "
             f"({s['hyperparameters_from']}), learning rate {s['learning_rate']}; "
             f"`--steps auto` up to {s['auto_max_steps']}; UHO on {len(s['uho'])} seed(s): "
             + "; ".join(f"seed {k}: {v['steps']} steps at lr {v['learning_rate']:g}"
                         for k, v in s["uho"].items())
             + f"; seeds {s['seeds']}. Means ± 95 % CI half-widths (1.96 sd / sqrt(n)) over "
             "tasks, each task's seeds averaged first.", ""]
    lines += ["## Step-count policies (mean query IoU)", "",
              "| tasks | n | fixed | auto | UHO's | auto - fixed | auto - UHO | auto's steps |",
              "|---|---|---|---|---|---|---|---|"]
    for group, g in results["summary"].items():
        p, d = g["policies"], g["differences"]
        lines.append(f"| {group} | {g['tasks']} | {_cell(p['fixed'])} | {_cell(p['auto'])} | "
                     f"{_cell(p['uho'])} | {_cell(d['auto-fixed'], True)} | "
                     f"{_cell(d['auto-uho'], True)} | {g['auto_steps']['mean']:.1f} |")
    lines += ["", "## Quality estimate (goal: Spearman >= 0.6, 90 % interval coverage 85-95 %)",
              "", "| tasks | model | masks | Spearman [95 % CI] | coverage ± CI | mean width | "
              "mean abs. error |", "|---|---|---|---|---|---|---|"]
    for group, g in results["summary"].items():
        for model, c in g["calibration"].items():
            lines.append(f"| {group} | {model} | {c['masks']} | {c['spearman']:.3f} "
                         f"[{c['ci95_low']:.3f}, {c['ci95_high']:.3f}] | {c['coverage']:.3f} ± "
                         f"{c['coverage_ci95']:.3f} | {c['mean_width']:.3f} | "
                         f"{c['mean_absolute_error']:.3f} |")
    lines += ["", f"## Suggested vs random labelling (IoU on 5 held-out images; start: "
              f"{SUGGEST_SHOTS} labelled)", "",
              "| tasks | start | k | suggested | random | suggested - random |",
              "|---|---|---|---|---|---|"]
    for group, g in results["summary"].items():
        for k in ADD:
            v = g["suggestion"][str(k)]
            lines.append(f"| {group} | {_cell(g['suggestion']['start'])} | +{k} | "
                         f"{_cell(v['suggested'])} | {_cell(v['random'])} | "
                         f"{_cell(v['suggested-random'], True)} |")
    lines += ["", "![reliability](reliability.png)", ""]
    return "\n".join(lines)


def plot(records: List[Dict], path: str) -> None:
    """Reliability: mean true IoU per bin of estimated IoU, with the 90 % intervals' mean."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, 11)
    for key, model, colour in (("fixed", "masks", "C0"), ("auto", "masks+support", "C1")):
        est = np.concatenate([r["result"][key]["estimate"] for r in records])
        iou = np.concatenate([r["result"][key]["iou"] for r in records])
        ax.scatter(est, iou, s=6, alpha=0.25, color=colour)
        centres, means = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (est >= lo) & (est < hi if hi < 1 else est <= hi)
            if inside.sum() >= 3:
                centres.append(est[inside].mean())
                means.append(iou[inside].mean())
        ax.plot(centres, means, "o-", color=colour, label=f"{model} ({len(est)} masks)")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.set_xlabel("estimated IoU")
    ax.set_ylabel("true IoU (dots: masks; line: bin means)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Quality estimate on unseen tasks")
    fig.tight_layout()
    temporary = path + ".tmp.png"
    fig.savefig(temporary, dpi=100)
    plt.close(fig)
    os.replace(temporary, path)


# --- driver ---------------------------------------------------------------------------------

def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _read_cache(path: str):
    from metaseg.jsonfile import read_json  # pylint: disable=import-outside-toplevel
    if not os.path.exists(path):
        return None
    return read_json(path, "delete it to compute that task again")


def run(seeds: List[int]) -> Dict:
    # pylint: disable=import-outside-toplevel
    from metaseg.datasets.synthetic import render
    study = Study()
    synthetic = study.config.synthetic
    if synthetic.image_size != study.size:
        raise ConfigError(f"the benchmark is stored at {synthetic.image_size} px, the "
                          f"initialisation adapts at {study.size} px")
    cache = os.path.join(FLAGS.out_dir, "cache")
    os.makedirs(cache, exist_ok=True)
    setting = {"init": FLAGS.init, "steps": study.steps, "lr": study.learning_rate,
               "auto_max_steps": study.max_steps, "random_draws": FLAGS.random_draws,
               "uho": [FLAGS.uho_val_tasks, FLAGS.uho_configs, FLAGS.uho_lr_low,
                       FLAGS.uho_lr_high], "version": 2}  # 2: masks-only on auto's masks
    names = render.class_names(synthetic.num_classes)
    test = render.test_class_names(synthetic.num_classes)
    order = [test[i] for i in np.random.default_rng(0).permutation(len(test))]
    fitted_on = set(study.calibration.value.get("about", {}).get("tasks", []))
    train = [n for n in render.train_class_names(synthetic.num_classes) if n not in fitted_on]
    val_names = [train[i] for i in np.random.default_rng(1).permutation(len(train))
                 [:FLAGS.uho_val_tasks]]
    uho_choices, records, started = {}, [], time.time()
    for seed in seeds:
        path = os.path.join(cache, f"uho_seed{seed}_{_key(setting, val_names, seed)}.json")
        uho_choices[seed] = _read_cache(path)
        if uho_choices[seed] is None:
            uho_choices[seed] = study.uho_choice(val_names, seed)
            provenance.write_json(path, uho_choices[seed])
        print(f"seed {seed}: UHO chose {uho_choices[seed]['steps']} steps at lr "
              f"{uho_choices[seed]['learning_rate']:g} [{time.time() - started:.0f} s]",
              flush=True)
    jobs = [("synthetic", n) for n in order[:FLAGS.test_tasks]]
    jobs += [("photo", i) for i in range(FLAGS.photo_tasks)]
    for group, what in jobs:
        if group == "synthetic":
            name = what
            images, masks = render.render_class(names.index(what), synthetic.num_classes,
                                                EXAMPLES, synthetic.image_size, 0)
        else:
            name, images, masks = photo_task(what, study.size)
        for seed in seeds:
            path = os.path.join(cache, f"{name.replace(':', '_')}_seed{seed}_"
                                       f"{_key(setting, uho_choices[seed], name, seed)}.json")
            record = _read_cache(path)
            if record is None:
                record = {"group": group, "task": name, "seed": seed,
                          "result": study.task(images, masks, seed, uho_choices[seed])}
                provenance.write_json(path, record)
            r = record["result"]
            print(f"{name} seed {seed}: fixed {np.mean(r['fixed']['iou']):.3f}, auto "
                  f"{np.mean(r['auto']['iou']):.3f} ({r['auto']['steps']} steps), UHO "
                  f"{np.mean(r['uho']['iou']):.3f} [{time.time() - started:.0f} s]", flush=True)
            records.append(record)
    return {"settings": {"init": FLAGS.init, "steps": study.steps,
                         "learning_rate": study.learning_rate,
                         "hyperparameters_from": study.origin,
                         "auto_max_steps": study.max_steps, "seeds": seeds,
                         "uho": {str(k): v for k, v in uho_choices.items()},
                         "synthetic_tasks": [n for g, n in jobs if g == "synthetic"],
                         "photo_tasks": [photo_task_name(i) for g, i in jobs if g == "photo"],
                         "examples_per_task": EXAMPLES, "random_draws": FLAGS.random_draws},
            "summary": summarise(records), "tasks": records}


def photo_task_name(index: int) -> str:
    return f"photo:{'horse' if index % 2 == 0 else 'logo'}_of_{PHOTO_SOURCES[index]}"


@exit_on_error
def main(argv) -> int:
    del argv
    seeds = check_flags()
    results = run(seeds)
    results["provenance"] = provenance.record()
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    plot(results["tasks"], os.path.join(FLAGS.out_dir, "reliability.png"))
    text = markdown(results, provenance.markdown_header(results["provenance"]))
    provenance.write_json(os.path.join(FLAGS.out_dir, "results.json"), results)
    provenance.write_atomic(os.path.join(FLAGS.out_dir, "results.md"), text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
