"""Killing the synthetic-benchmark generator (the tool, or the cache generation that
``--dataset synthetic`` runs) kills its worker processes too, and what it leaves behind is
never trusted: a rerun generates the complete benchmark."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from metaseg.datasets import synthetic
from metaseg.data.shards import SHARD_SUFFIX, read_shard
from tests.cli.conftest import own_stderr_lines
from tests.conftest import time_limit

pytestmark = pytest.mark.slow  # benchmark generations killed mid-way (minutes)

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "data_tools" / "make_synthetic_fss.py"
CLASSES, EXAMPLES, SIZE = 60, 6, 48
CACHE_SCRIPT = (f"import sys; from metaseg.datasets.synthetic import ensure_benchmark; "
                f"print(ensure_benchmark(sys.argv[1], num_classes={CLASSES}, "
                f"examples_per_class={EXAMPLES}, image_size={SIZE}, num_workers=2))")


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                         os.environ.get("PYTHONPATH")])))


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (read from /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _descendants(pid: int) -> set:
    """Every living process below ``pid`` (by parent links in /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if _alive(p)}


def _shards(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(SHARD_SUFFIX))


def _new_shards(directory, since):
    if not os.path.isdir(directory):
        return []
    return [s for s in _shards(directory)
            if os.stat(os.path.join(directory, s)).st_mtime >= since]


def _start_and_kill_mid_generation(command, output, sig):
    """Start ``command``; once two workers run and one has written a shard, send ``sig`` to
    the parent only. Returns (the parent's result, the worker pids)."""
    start = time.time() - 1  # file times may be coarser than the clock
    # Output to files, not pipes: surviving workers would hold pipes open forever.
    logs = pathlib.Path(output).parent / f"logs-{time.monotonic_ns()}"
    logs.mkdir(parents=True)
    with open(logs / "out", "w") as out, open(logs / "err", "w") as err:
        process = subprocess.Popen(command, env=_env(), stdout=out, stderr=err, text=True)
    deadline = time.monotonic() + time_limit(120)
    workers = set()
    while time.monotonic() < deadline and process.poll() is None:
        workers |= _descendants(process.pid)
        if len(workers) >= 2 and _new_shards(output, start):
            break
        time.sleep(0.2)
    assert process.poll() is None, "finished before it could be killed: make it bigger"
    assert len(workers) >= 2, workers
    assert len(_new_shards(output, start)) < CLASSES
    workers |= _descendants(process.pid)
    process.send_signal(sig)
    process.wait(timeout=time_limit(60))
    return (process.returncode, (logs / "out").read_text(), (logs / "err").read_text()), workers


def _assert_all_dead(workers, output):
    deadline = time.monotonic() + time_limit(30)
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    survivors = [p for p in workers if _alive(p)]
    for pid in survivors:  # so that a failing test leaves nothing running
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "workers outlived their parent"
    before = sorted(os.listdir(output))
    time.sleep(2)
    assert sorted(os.listdir(output)) == before  # nobody is writing any more


def _assert_complete(directory):
    assert os.path.exists(os.path.join(directory, synthetic.MARKER_FILE))
    shards = _shards(directory)
    assert len(shards) == CLASSES
    assert all(len(read_shard(os.path.join(directory, s))[0]) == EXAMPLES for s in shards)
    assert not [f for f in os.listdir(directory) if f.endswith(".tmp")]


def _tool(output, *extra):
    return [sys.executable, str(SCRIPT), "--output_dir", str(output), "--num_classes",
            str(CLASSES), "--examples_per_class", str(EXAMPLES), "--image_size", str(SIZE),
            *extra]


def test_killing_the_tool_kills_its_workers_and_a_rerun_completes(tmp_path):
    output = tmp_path / "synthetic"
    # SIGTERM (what `kill` and service managers send): one line, workers stopped, no .tmp
    (code, _, stderr), workers = _start_and_kill_mid_generation(
        _tool(output, "--num_workers", "2"), output, signal.SIGTERM)
    _assert_all_dead(workers, output)
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    errors = [line for line in own_stderr_lines(stderr) if line.startswith("error:")]
    assert errors == [f"error: interrupted: {output} holds no complete benchmark (no "
                      f"{synthetic.MARKER_FILE}); rerun with --overwrite to generate it"]
    assert not [f for f in os.listdir(output) if f.endswith(".tmp")]
    # SIGKILL (no cleanup possible in the parent): the workers die with it all the same
    (code, _, _), workers = _start_and_kill_mid_generation(
        _tool(output, "--num_workers", "2", "--overwrite"), output, signal.SIGKILL)
    assert code == -signal.SIGKILL
    _assert_all_dead(workers, output)
    assert not os.path.exists(output / synthetic.MARKER_FILE)
    rerun = subprocess.run(_tool(output, "--num_workers", "2", "--overwrite"), env=_env(),
                           capture_output=True, text=True, timeout=time_limit(300))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_complete(output)


def test_sigkill_during_cache_generation_and_the_next_run_regenerates(tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-c", CACHE_SCRIPT, str(cache)]
    directory = cache / f"synthetic-fss-n{CLASSES}-e{EXAMPLES}-s{SIZE}-seed0"
    _, workers = _start_and_kill_mid_generation(command, directory, signal.SIGKILL)
    _assert_all_dead(workers, directory)
    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True,
                           timeout=time_limit(300))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.strip() == str(directory)
    _assert_complete(directory)
