"""Worker processes that never outlive the process that started them.

A ``ProcessPoolExecutor``'s workers keep running when their parent is killed (SIGKILL, an
OOM kill, a closed terminal): they finish their task, keep writing files, then wait
forever. Here every worker

- asks Linux to send it SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and
  exits at once if the parent is already gone by the time it starts;
- turns SIGTERM during a task into ``SystemExit``, so the ``finally``/``except`` clauses of
  the task run (``shards.write_shard`` removes its temporary file), and then exits: the
  executor's worker loop catches every exception of a task and would otherwise wait for
  the next one forever; SIGTERM between tasks exits at once;
- watches its parent, as a backstop for a signal that lands where neither of the above can
  act: once the parent is gone it allows the cleanup a few seconds, then exits;
- ignores SIGINT: Ctrl-C reaches the whole process group, and the parent alone decides.

The parent, on SIGTERM, SIGINT or any error while the pool runs, cancels the queued tasks
and terminates the workers, then re-raises (SIGTERM as KeyboardInterrupt).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterable, Iterator

_PR_SET_PDEATHSIG = 1
_CLEANUP_GRACE_S = 5.0  # how long an orphaned worker may spend in its cleanup
_in_task = False  # set by _run_task in the worker process


def _raise_exit(signum, frame):
    """Worker SIGTERM handler: unwind a running task (its cleanup runs), else exit now."""
    del frame
    if not _in_task:
        os._exit(128 + signum)  # pylint: disable=protected-access
    raise SystemExit(128 + signum)


def _run_task(fn: Callable, *args):
    """Run one task in the worker; a SIGTERM during it ends the process after its cleanup
    (the executor's loop would catch the SystemExit and wait for the next task)."""
    global _in_task  # pylint: disable=global-statement
    _in_task = True
    try:
        return fn(*args)
    except SystemExit as stop:
        os._exit(stop.code if isinstance(stop.code, int) else 1)  # pylint: disable=protected-access
    finally:
        _in_task = False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    time.sleep(_CLEANUP_GRACE_S)  # the SIGTERM handler is cleaning up meanwhile
    os._exit(1)  # pylint: disable=protected-access


def _init_worker(parent_pid: int) -> None:
    """Worker initializer: die with the parent, clean up on SIGTERM, leave SIGINT to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_exit)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)  # pylint: disable=protected-access
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="watch-parent").start()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """In the main thread, SIGTERM raises KeyboardInterrupt (so cleanup runs) meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        del signum, frame
        raise KeyboardInterrupt("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel what has not started and stop the workers (they clean up on SIGTERM)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


def run_in_processes(fn: Callable, jobs: Iterable[tuple], num_workers: int,
                     done: Callable[[object], None]) -> None:
    """Call ``fn(*job)`` for every job in ``num_workers`` spawned worker processes.

    ``done(result)`` is called in this process as each job finishes (in completion order).
    The first error, or an interrupt, stops everything: no worker is left running.
    """
    # spawn, not fork: the parent may have TensorFlow loaded, whose threads do not survive
    # fork.
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        with _sigterm_as_interrupt():
            futures = [pool.submit(_run_task, fn, *job) for job in jobs]
            for future in concurrent.futures.as_completed(futures):
                done(future.result())
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown(wait=True)
