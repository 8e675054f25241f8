"""Background jobs, one at a time: state, step progress, loss, ETA and cancellation.

A job is ``queued`` when accepted, ``running`` once its work starts, and ends ``done``,
``failed`` (with a one-line ``error``) or ``cancelled``. While one job is queued or running
another is refused (:class:`Busy`), so two adaptations never write the same work directory
at once. The work runs in a daemon thread and reports through its :class:`Job`; it calls
:meth:`Job.check_cancelled` between chunks of work, which raises :class:`Cancelled` once
the job was cancelled.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from typing import Callable, Dict, Optional

from absl import logging

from metaseg.errors import MetasegError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)


class Busy(MetasegError):
    """A job was submitted while another is queued or running (HTTP 409)."""

    def __init__(self, job: "Job"):
        super().__init__(f"adaptation job {job.id} is still {job.state}; wait for it to end "
                         f"or cancel it (DELETE /api/jobs/{job.id})")
        self.job = job


class Finished(MetasegError):
    """Cancelling a job that already ended (HTTP 409)."""


class Cancelled(Exception):
    """Raised inside a job's work when the job was cancelled."""


class Job:
    """One job's public state; the work updates it through :meth:`progress`."""

    def __init__(self, kind: str, params: dict):
        self.id = uuid.uuid4().hex[:12]
        self.kind, self.params = kind, dict(params)
        self.state = QUEUED
        self.phase = "queued"
        self.step, self.steps, self.loss = 0, 0, None
        self.done_items, self.items = 0, 0  # e.g. images predicted after the steps
        self.error: Optional[str] = None
        self.result: dict = {}
        self.created, self.started, self.finished = time.time(), None, None
        self._cancel = threading.Event()
        self._step_started: Optional[float] = None
        self._seconds_per_step: Optional[float] = None
        self._lock = threading.Lock()

    def progress(self, *, phase=None, step=None, steps=None, loss=None, done_items=None,
                 items=None) -> None:
        with self._lock:
            now = time.time()
            if phase is not None:
                self.phase = phase
            if steps is not None:
                self.steps = int(steps)
            if step is not None:
                if self._step_started is None:
                    self._step_started = now
                elif step > 0:
                    self._seconds_per_step = (now - self._step_started) / step
                self.step = int(step)
            if loss is not None:
                self.loss = float(loss)
            if items is not None:
                self.items = int(items)
            if done_items is not None:
                self.done_items = int(done_items)

    def start_steps(self, steps: int) -> None:
        """Called just before step 0 runs, so the ETA excludes loading and tracing."""
        with self._lock:
            self.phase, self.steps, self.step = "adapting", int(steps), 0
            self._step_started = time.time()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def eta_seconds(self) -> Optional[float]:
        if self._seconds_per_step is None or self.state != RUNNING or self.phase != "adapting":
            return None
        return max(0.0, (self.steps - self.step) * self._seconds_per_step)

    def to_json(self) -> dict:
        with self._lock:
            return {"job": self.id, "kind": self.kind, "state": self.state, "phase": self.phase,
                    "step": self.step, "steps": self.steps, "loss": self.loss,
                    "eta_seconds": self.eta_seconds(), "predicted": self.done_items,
                    "to_predict": self.items, "error": self.error, "params": self.params,
                    "result": self.result, "created": self.created, "started": self.started,
                    "finished": self.finished}


class JobRunner:
    """Runs ``work(job)`` for each accepted job in its own thread, one job at a time."""

    def __init__(self, work: Callable[[Job], dict]):
        self._work = work
        self._jobs: Dict[str, Job] = {}
        self._active: Optional[Job] = None
        self._lock = threading.Lock()

    def submit(self, kind: str, params: dict) -> Job:
        with self._lock:
            if self._active is not None and self._active.state in ACTIVE:
                raise Busy(self._active)
            job = Job(kind, params)
            self._jobs[job.id] = job
            self._active = job
        threading.Thread(target=self._run, args=(job,), name=f"metaseg-job-{job.id}",
                         daemon=True).start()
        return job

    def get(self, job_id: str) -> Optional[Job]:
        return self._jobs.get(job_id)

    def active(self) -> Optional[Job]:
        job = self._active
        return job if job is not None and job.state in ACTIVE else None

    def cancel(self, job: Job) -> None:
        with self._lock:
            if job.state not in ACTIVE:
                raise Finished(f"job {job.id} already ended ({job.state}); nothing to cancel")
            job._cancel.set()  # pylint: disable=protected-access
            if job.state == QUEUED:
                self._end(job, CANCELLED)

    def wait(self, job: Job, timeout: float) -> bool:
        """Block until ``job`` ended (for tests and shutdown); True if it did."""
        deadline = time.time() + timeout
        while job.state in ACTIVE and time.time() < deadline:
            time.sleep(0.05)
        return job.state not in ACTIVE

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.state != QUEUED:
                return  # cancelled before it started
            job.state, job.phase, job.started = RUNNING, "loading", time.time()
        try:
            job.result = self._work(job) or {}
        except Cancelled:
            self._end(job, CANCELLED)
        except MetasegError as e:
            job.error = " ".join(str(e).split())
            self._end(job, FAILED)
        except Exception as e:  # pylint: disable=broad-except
            # A bug, not a user mistake: the traceback goes to the server's log, the page
            # gets one line.
            logging.error("job %s failed:\n%s", job.id, traceback.format_exc())
            job.error = f"internal error: {type(e).__name__}: {' '.join(str(e).split())}"
            self._end(job, FAILED)
        else:
            self._end(job, DONE)
        logging.info("job %s %s", job.id, job.state)

    def _end(self, job: Job, state: str) -> None:
        with job._lock:  # pylint: disable=protected-access
            job.state, job.finished = state, time.time()
            job.phase = state
