"""Where a result came from: machine, software versions, git commit, command, time.

Shared by ``bench/run_all.py`` and ``studies/learning_signal.py`` so that every committed
table says which commit, on which CPU, with which exact command produced it. Also the
atomic write both use (temporary file, then rename) so a failed run never leaves half a file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from typing import Dict, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def _cpuinfo() -> Dict[str, str]:
    info = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _memory_gb() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def machine() -> Dict:
    """CPU model, usable cores, memory, the CPU features that matter here, versions."""
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    info = _cpuinfo()
    features = set(info.get("flags", "").split())
    return {
        "cpu": info.get("model name", platform.processor() or "unknown"),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": _memory_gb(),
        "cpu_features": [f for f in CPU_FEATURES if f in features],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
    }


def git_commit() -> str:
    """HEAD's hash, with ``+dirty`` when tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()
    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def command(argv: Sequence[str] = None) -> str:
    """The command line as typed (``python <script> <args>``), shell-quoted."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), REPO)
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, argv[1:])])


def record(argv: Sequence[str] = None) -> Dict:
    """Everything above plus a UTC timestamp."""
    return {"commit": git_commit(), "command": command(argv), "machine": machine(),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}


def markdown_header(prov: Dict) -> str:
    m = prov["machine"]
    return (f"Commit `{prov['commit']}`, {prov['timestamp']}; {m['cpu']}, {m['cores']} cores, "
            f"{m['memory_gb']} GB ({', '.join(m['cpu_features']) or 'no AVX'}); Python "
            f"{m['python']}, TF {m['tensorflow']}, Keras {m['keras']}; oneDNN "
            f"{m['onednn_opts']}.\n\n```bash\n{prov['command']}\n```\n")


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_results(output: str, prov: Dict, table: str, **data) -> None:
    """A benchmark's results: ``output`` (JSON: the provenance, then ``data``) and, beside
    it, the same name with ``.md`` (the provenance header and ``table``); ``table`` is also
    printed."""
    write_json(output, {"provenance": prov, **data})
    write_atomic(os.path.splitext(output)[0] + ".md", markdown_header(prov) + "\n" + table + "\n")
    print(table)
