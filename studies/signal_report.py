"""The learning-signal study's Markdown table and PNG plot, from its results dict."""

from __future__ import annotations

import os
from typing import Dict

LABELS = {"random": "random", "joint": "joint-trained (transfer)", "reptile": "Reptile",
          "fomaml": "FOMAML"}


def table(results: Dict) -> str:
    steps = results["settings"]["steps"]
    lines = ["| initialisation | " + " | ".join(f"{k} step{'' if k == 1 else 's'}" for k in steps)
             + " |", "|---|" + "---|" * len(steps)]
    for init, by_step in results["summary"].items():
        cells = [f"{by_step[str(k)]['mean']:.3f} ± {by_step[str(k)]['ci95']:.3f}" for k in steps]
        lines.append(f"| {LABELS.get(init, init)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_table(results: Dict) -> str:
    steps = results["settings"]["steps"]
    diffs = results.get("paired_vs_joint", {})
    if not diffs:
        return ""
    lines = ["| paired difference (same episodes) | " + " | ".join(str(k) for k in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for init, by_step in diffs.items():
        cells = [f"{by_step[str(k)]['mean']:+.3f} ± {by_step[str(k)]['ci95']:.3f}" for k in steps]
        lines.append(f"| {LABELS.get(init, init)} - joint | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lr_table(results: Dict) -> str:
    rates = results["settings"]["inner_learning_rates"]
    lines = ["| initialisation | chosen step size | " + " | ".join(
        f"validation IoU, lr {r:g}" for r in rates) + " |", "|---|---|" + "---|" * len(rates)]
    for init, chosen in results["learning_rates"].items():
        val = chosen["validation_mean_iou"]
        cells = [f"{val[str(float(r))] if str(float(r)) in val else val[float(r)]:.3f}"
                 for r in rates]
        lines.append(f"| {LABELS.get(init, init)} | {chosen['learning_rate']:g} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: Dict, header: str) -> str:
    s = results["settings"]
    b = results["budget"]
    return "\n".join([
        "# Does meta-learning help? (learning-signal study)", "", header,
        f"Run time: {results['runtime_s'] / 60:.1f} min "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in results['phase_seconds'].items())}).", "",
        f"Mean query IoU ± 95 % CI over all {s['num_test_tasks']} test classes of the embedded "
        f"benchmark ({s['image_size']} px, {s['shots']}-shot, {s['query']} query images, inner "
        f"{s['inner_optimizer'].upper()} with batch {s['eval_batch']}), after each number of "
        "fine-tuning steps from each initialisation; one episode per class, the same "
        "episodes for every initialisation. Each initialisation's fine-tuning step size is "
        f"the best of {s['inner_learning_rates']} on {s['num_val_tasks']} validation classes "
        "held out of all training.", "",
        table(results), "", difference_table(results), "", lr_table(results), "",
        f"Budget: {b['definition']}", ""])


def plot(results: Dict, path: str) -> None:
    """Mean IoU against fine-tuning steps (log x), 95 % CI bands; written via a temp file."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    steps = results["settings"]["steps"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for init, by_step in results["summary"].items():
        mean = [by_step[str(k)]["mean"] for k in steps]
        ci = [by_step[str(k)]["ci95"] for k in steps]
        line, = ax.plot(steps, mean, marker="o", label=LABELS.get(init, init))
        ax.fill_between(steps, [m - c for m, c in zip(mean, ci)],
                        [m + c for m, c in zip(mean, ci)], color=line.get_color(), alpha=0.15)
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
