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
             "| eval task, 5-shot, 59 steps (s) | eval task / its steps alone "
             "| data pipeline share of a step |",
             "|---|---|---|---|---|---|---|---|---|"]
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
            f"| {_fmt(ev.get('eval_task_overhead'), 2)} "
            f"| {'-' if share is None else f'{100 * share:.1f} %'} |")
    if results["groups"] and _find(results["groups"], "eval").get("eval_steps", 59) != 59:
        lines.append(f"\n(evaluation measured with {_find(results['groups'], 'eval')['eval_steps']}"
                     " steps)")
    return "\n".join(lines)


def _load(pair) -> str:
    """``[[1, 5, 15 min] before, [...] after]`` -> ``"2.1 -> 3.0"`` (1-minute load average)."""
    return f"{pair[0][0]:.1f} -> {pair[1][0]:.1f}" if pair else "-"


def fused_and_concurrent_table(results: Dict) -> str:
    """Inner step with the fused vs today's unfused batch norm, and evaluation tasks/hour
    one at a time vs ``--concurrent_tasks``, with the 1-minute load average around each."""
    lines = ["| px | inner step fp32 (s) | same, unfused batch norm (s) | fused / unfused "
             "| eval tasks/h sequential | eval tasks/h concurrent | speed-up | identical scores "
             "| tasks x steps, concurrent, threads (intra, inter) | load seq. | load conc. |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in results["sizes"]:
        inner = _find(results["groups"], "inner", size)
        ev = _find(results["groups"], "eval", size)
        fused, unfused = inner.get("inner_step_fp32_s"), inner.get("inner_step_unfused_bn_s")
        ratio = fused / unfused if fused and unfused else None
        settings = ev.get("eval_throughput_settings")
        how = (f"{settings['tasks']} x {settings['steps']}, {settings['concurrent_tasks']}, "
               f"{tuple(settings['threads_intra_inter'])}" if settings else "-")
        identical = ev.get("eval_concurrent_identical")
        lines.append(
            f"| {size} | {_fmt(fused)} | {_fmt(unfused)} | {_fmt(ratio, 2)} "
            f"| {_fmt(ev.get('eval_tasks_per_hour_sequential'), 0)} "
            f"| {_fmt(ev.get('eval_tasks_per_hour_concurrent'), 0)} "
            f"| {_fmt(ev.get('eval_concurrent_speedup'), 2)} "
            f"| {'-' if identical is None else ('yes' if identical else 'NO')} | {how} "
            f"| {_load(ev.get('eval_throughput_load_sequential'))} "
            f"| {_load(ev.get('eval_throughput_load_concurrent'))} |")
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
    if acc.get("measured_at"):  # carried over from an earlier run with the accuracy runs
        at = acc["measured_at"]
        lines.append(f"\n(Measured by an earlier `{at['command']}` at commit "
                     f"`{at['commit'][:7]}`, {at['timestamp']}; this run had --noaccuracy.)")
    return "\n".join(lines)


def markdown(results: Dict) -> str:
    prov = results["provenance"]
    return "\n".join([
        "# metaseg benchmark", "", markdown_header(prov),
        f"EfficientLab-B0 `--rsd 2 4`, batch 8, SGD, `bce_dice`, random weights and inputs; "
        f"times are the best (steps) or median (passes) of {results['options']['repeats']} "
        "repetitions after warm-up.", "",
        "## Step and iteration times", "", time_table(results), "",
        "## Fused batch norm; concurrent evaluation", "",
        "Targets (issue 16): fused / unfused <= 0.85 at 224 px; concurrent >= 1.3x the "
        "sequential tasks/hour. The fused and unfused steps are timed alternately in one "
        "process, each the best of its calls. Load: 1-minute load average before -> after "
        "the pass.", "",
        fused_and_concurrent_table(results), "",
        "## Throughput", "", throughput_table(results), "",
        "## Peak memory", "",
        "Peak resident set size (`ru_maxrss`) of the process that ran each measurement "
        "(TensorFlow's CPU allocator has no `get_memory_info`); it includes the ~0.6 GB of "
        "the TensorFlow runtime itself.", "", memory_table(results), "",
        "## Mixed precision (bf16 via `bench/precision_run.py`)", "", accuracy_table(results), ""])
