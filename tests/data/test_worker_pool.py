"""``worker_pool.run_in_processes`` when its parent is SIGKILLed in the middle of a task.

The executor's worker loop catches every exception of a task, the ``SystemExit`` that the
worker's SIGTERM handler raises included; a worker then took the next queued task, ran it
to the end and waited forever (what CI once saw as "workers outlived their parent"). Here
the tasks are slow and record when they start, so the race is not left to chance: the
parent is killed while both workers are inside a task, with more tasks queued.
"""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

from tests.conftest import time_limit
from tests.data.test_worker_lifetime import _alive, _descendants

REPO = pathlib.Path(__file__).resolve().parents[2]

JOBS = textwrap.dedent("""
    import os, time

    def job(directory, i):
        with open(os.path.join(directory, f"{i}.start"), "w") as f:
            f.write(str(os.getpid()))
        try:
            time.sleep(3.0)
        finally:  # the cleanup a task may do when it is stopped
            with open(os.path.join(directory, f"{i}.cleanup"), "w") as f:
                f.write(str(os.getpid()))
        return i
""")

PARENT = textwrap.dedent("""
    import sys
    from metaseg.datasets.worker_pool import run_in_processes
    import jobs
    run_in_processes(jobs.job, [(sys.argv[1], i) for i in range(20)], 2, lambda r: None)
""")


def _files(directory, suffix):
    return sorted(f for f in os.listdir(directory) if f.endswith(suffix))


def test_sigkilled_parent_workers_clean_up_and_take_no_further_task(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    with open(tmp_path / "err", "w") as err:  # files, not pipes: survivors would hold pipes
        parent = subprocess.Popen([sys.executable, "-c", PARENT, str(out)], env=env,
                                  stdout=err, stderr=err)
    deadline = time.monotonic() + time_limit(120)
    workers = set()
    while time.monotonic() < deadline and len(_files(out, ".start")) < 2:
        assert parent.poll() is None, (tmp_path / "err").read_text()[-2000:]
        workers |= _descendants(parent.pid)
        time.sleep(0.05)
    started = _files(out, ".start")
    assert len(started) == 2, "the two workers did not start a task in time"
    assert not _files(out, ".cleanup"), "a task ended before the kill: make it slower"
    workers |= _descendants(parent.pid)
    parent.kill()
    parent.wait(timeout=time_limit(60))

    deadline = time.monotonic() + time_limit(30)
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    survivors = [p for p in workers if _alive(p)]
    for pid in survivors:  # leave nothing running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "workers outlived their parent"
    assert _files(out, ".start") == started, "a worker took another task after the kill"
    assert _files(out, ".cleanup") == [s.replace(".start", ".cleanup") for s in started]
