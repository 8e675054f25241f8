"""The learning-signal study's Markdown table and PNG plot, from its results dict."""

from __future__ import annotations

import os
from typing import Dict

LABELS = {"random": "random", "joint": "joint-trained (transfer)", "reptile": "Reptile",
          "fomaml": "FOMAML"}


def _seeds(results: Dict):
    return [str(s) for s in results["settings"]["seeds"]]


def _step_header(steps) -> str:
    return " | ".join(f"{k} step{'' if k == 1 else 's'}" for k in steps)


def table(results: Dict) -> str:
    """Mean over seeds [min, max across seeds], then each seed's mean ± 95 % CI."""
    steps = results["settings"]["steps"]
    lines = ["| initialisation | seed | " + _step_header(steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for init, by_step in results["summary"].items():
        cells = [f"**{by_step[str(k)]['mean']:.3f}** [{by_step[str(k)]['min']:.3f}, "
                 f"{by_step[str(k)]['max']:.3f}] sd {by_step[str(k)]['sd']:.3f}" for k in steps]
        lines.append(f"| {LABELS.get(init, init)} | all ({len(_seeds(results))}) | "
                     + " | ".join(cells) + " |")
        for seed in _seeds(results):
            cells = [f"{by_step[str(k)]['per_seed'][seed]['mean']:.3f} ± "
                     f"{by_step[str(k)]['per_seed'][seed]['ci95']:.3f}" for k in steps]
            lines.append(f"| | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_table(results: Dict) -> str:
    steps = results["settings"]["steps"]
    diffs = results.get("paired_vs_joint", {})
    if not diffs:
        return ""
    lines = ["| paired difference (same episodes) | seed | " + " | ".join(str(k) for k in steps)
             + " |", "|---|---|" + "---|" * len(steps)]
    for init, by_step in diffs.items():
        for seed in _seeds(results):
            cells = [f"{by_step[str(k)]['per_seed'][seed]['mean']:+.3f} ± "
                     f"{by_step[str(k)]['per_seed'][seed]['ci95']:.3f}" for k in steps]
            lines.append(f"| {LABELS.get(init, init)} - joint | {seed} | " + " | ".join(cells)
                         + " |")
        cells = [f"**{by_step[str(k)]['mean']:+.3f}** [{by_step[str(k)]['min']:+.3f}, "
                 f"{by_step[str(k)]['max']:+.3f}]"
                 f"{'' if by_step[str(k)]['ci_excludes_zero_every_seed'] else ' (CI spans 0)'}"
                 for k in steps]
        lines.append(f"| {LABELS.get(init, init)} - joint | all | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _val(scores: Dict, rate: float) -> float:
    return scores[str(float(rate))] if str(float(rate)) in scores else scores[float(rate)]


def lr_table(results: Dict) -> str:
    rates = results["settings"]["inner_learning_rates"]
    lines = ["| initialisation | seed | chosen step size | " + " | ".join(
        f"validation IoU, lr {r:g}" for r in rates) + " |", "|---|---|---|" + "---|" * len(rates)]
    for seed, block in results["per_seed"].items():
        for init, chosen in block["learning_rates"].items():
            cells = [f"{_val(chosen['validation_mean_iou'], r):.3f}" for r in rates]
            lines.append(f"| {LABELS.get(init, init)} | {seed} | {chosen['learning_rate']:g} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def joint_sweep_table(results: Dict) -> str:
    rates = results["settings"]["joint_learning_rates"]
    blocks = {s: b for s, b in results["per_seed"].items() if "joint_learning_rate_sweep" in b}
    if not blocks:
        return ""
    lines = ["| seed | chosen joint Adam lr | " + " | ".join(
        f"best validation IoU, Adam lr {r:g}" for r in rates) + " |",
        "|---|---|" + "---|" * len(rates)]
    for seed, block in blocks.items():
        sweep = block["joint_learning_rate_sweep"]
        cells = [f"{sweep[str(float(r))]['validation_mean_iou']:.3f} (inner lr "
                 f"{sweep[str(float(r))]['inner_learning_rate']:g})" for r in rates]
        lines.append(f"| {seed} | {block['learning_rates']['joint']['joint_learning_rate']:g} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: Dict, header: str) -> str:
    s = results["settings"]
    b = results["budget"]
    return "\n".join([
        "# Does meta-learning help? (learning-signal study)", "", header,
        f"Run time: {results['runtime_s'] / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in results['phase_seconds'].items())}).", "",
        f"Mean query IoU over all {s['num_test_tasks']} test classes of the embedded "
        f"benchmark ({s['image_size']} px, {s['shots']}-shot, {s['query']} query images, inner "
        f"{s['inner_optimizer'].upper()} with batch {s['eval_batch']}), after each number of "
        "fine-tuning steps from each initialisation; one episode per class, the same "
        "episodes for every initialisation within a seed. Seeds "
        f"{', '.join(str(x) for x in s['seeds'])}: each a full replicate (initial weights, "
        "meta-training tasks, joint-training order, test and validation episodes; the same "
        "benchmark data). Rows 'all': the mean over seeds of the per-seed means, "
        "[min, max] and sd across seeds; rows per seed: mean ± 95 % CI over test classes. "
        "Each initialisation's fine-tuning step size is "
        f"the best of {s['inner_learning_rates']} on {s['num_val_tasks']} validation classes "
        "held out of all training; joint training's Adam step size, per seed, the best of "
        f"{s['joint_learning_rates']} on the same validation classes (best validation IoU "
        "over the fine-tuning step sizes); only the chosen one is tested.", "",
        table(results), "", difference_table(results), "", joint_sweep_table(results), "",
        lr_table(results), "", f"Budget: {b['definition']}", ""])


def plot(results: Dict, path: str) -> None:
    """Mean IoU over seeds against fine-tuning steps (log x), band: min-max across seeds, thin
    lines: each seed; written via a temp file."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    steps = results["settings"]["steps"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for init, by_step in results["summary"].items():
        mean = [by_step[str(k)]["mean"] for k in steps]
        line, = ax.plot(steps, mean, marker="o", label=f"{LABELS.get(init, init)} "
                        f"(mean of {by_step[str(steps[0])]['n_seeds']} seeds)")
        ax.fill_between(steps, [by_step[str(k)]["min"] for k in steps],
                        [by_step[str(k)]["max"] for k in steps], color=line.get_color(),
                        alpha=0.2)
        for seed in by_step[str(steps[0])]["per_seed"]:
            ax.plot(steps, [by_step[str(k)]["per_seed"][seed]["mean"] for k in steps],
                    color=line.get_color(), alpha=0.4, linewidth=0.8)
    ax.set_xscale("symlog", linthresh=1)  # 0 steps (no fine-tuning) on a log-like axis
    ax.set_xticks(steps)
    ax.set_xticklabels([str(k) for k in steps])
    ax.set_xlabel("fine-tuning steps (5-shot)")
    ax.set_ylabel(f"mean query IoU, {results['settings']['num_test_tasks']} test classes")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title(f"Embedded benchmark, {results['settings']['image_size']} px, commit "
                 f"{results['provenance']['commit'][:8]}", fontsize=9)
    fig.tight_layout()
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
