"""``bench/results.json`` -> the Markdown tables of ``bench/results.md`` (and the README)."""

from __future__ import annotations

from typing import Dict, List, Optional

from provenance import markdown_header


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _find(groups: List[Dict], name: str, size: Optional[int] = None) -> Dict:
    for g in groups:
        if g["group"] == name and (size is None or g.get("image_size") == size):
            return g
    return {}


def time_table(results: Dict) -> str:
    lines = ["| px | inner step fp32 (s) | inner step bf16 (s) | bare Keras step (s) "
             "| Reptile iteration (s) | FOMAML iteration (s) "
             "| eval task, 5-shot, 59 steps (s) | data pipeline share of a step |",
             "|---|---|---|---|---|---|---|---|"]
    for size in results["sizes"]:
        inner = _find(results["groups"], "inner", size)
        meta = _find(results["groups"], "meta", size)
        ev = _find(results["groups"], "eval", size)
        data = _find(results["groups"], "data", size)
        share = data.get("pipeline_share")
        lines.append(
            f"| {size} | {_fmt(inner.get('inner_step_fp32_s'))} "
            f"| {_fmt(inner.get('inner_step_bf16_s'))} | {_fmt(inner.get('bare_keras_step_s'))} "
            f"| {_fmt(meta.get('reptile_iteration_s'), 2)} "
            f"| {_fmt(meta.get('fomaml_iteration_s'), 2)} | {_fmt(ev.get('eval_task_s'), 2)} "
            f"| {'-' if share is None else f'{100 * share:.1f} %'} |")
    if results["groups"] and _find(results["groups"], "eval").get("eval_steps", 59) != 59:
        lines.append(f"\n(evaluation measured with {_find(results['groups'], 'eval')['eval_steps']}"
                     " steps)")
    return "\n".join(lines)


def throughput_table(results: Dict) -> str:
    lines = ["| px | precision | pass | s / batch of 8 | GFLOP / step | GFLOP/s "
             "| fp32 matmul GFLOP/s | bf16 matmul GFLOP/s |", "|---|---|---|---|---|---|---|---|"]
    for size in results["sizes"]:
        group = _find(results["groups"], "model", size)
        matmul = group.get("matmul", {})
        mm = [_fmt(matmul.get(p, {}).get("gflop_per_s"), 0) for p in ("fp32", "bf16")]
        for row in group.get("passes", []):
            lines.append(f"| {size} | {row['precision']} | {row['pass']} | {row['seconds']:.3f} "
                         f"| {row['gflop_per_step']:.2f} | {row['gflop_per_s']:.1f} "
                         f"| {mm[0]} | {mm[1]} |")
    return "\n".join(lines)


def memory_table(results: Dict) -> str:
    lines = ["| measurement | px | peak RSS (MB) | wall time (s) | note |", "|---|---|---|---|---|"]
    for g in results["groups"]:
        note = g.get("error", "")
        lines.append(f"| {g['group']} | {g.get('image_size', '-')} | {g['peak_rss_mb']:.0f} "
                     f"| {g['wall_s']:.0f} | {note} |")
    return "\n".join(lines)


def accuracy_table(results: Dict) -> str:
    acc = results.get("mixed_precision")
    if not acc:
        return "(not measured: run without --noaccuracy)"
    lines = ["| precision | mean IoU (24 test tasks) | 95 % CI | wall time (s) | peak RSS (MB) |",
             "|---|---|---|---|---|"]
    for run in acc["runs"]:
        lines.append(f"| {run['precision']} | {_fmt(run.get('mean_iou'), 4)} "
                     f"| {_fmt(run.get('ci95'), 4)} | {_fmt(run.get('wall_s'), 0)} "
                     f"| {_fmt(run.get('peak_rss_mb'), 0)} |")
    lines.append(f"\n{acc['decision']}")
    return "\n".join(lines)


def markdown(results: Dict) -> str:
    prov = results["provenance"]
    return "\n".join([
        "# metaseg benchmark", "", markdown_header(prov),
        f"EfficientLab-B0 `--rsd 2 4`, batch 8, SGD, `bce_dice`, random weights and inputs; "
        f"times are the best (steps) or median (passes) of {results['options']['repeats']} "
        "repetitions after warm-up.", "",
        "## Step and iteration times", "", time_table(results), "",
        "## Throughput", "", throughput_table(results), "",
        "## Peak memory", "",
        "Peak resident set size (`ru_maxrss`) of the process that ran each measurement "
        "(TensorFlow's CPU allocator has no `get_memory_info`); it includes the ~0.6 GB of "
        "the TensorFlow runtime itself.", "", memory_table(results), "",
        "## Mixed precision (bf16 via `bench/precision_run.py`)", "", accuracy_table(results), ""])
