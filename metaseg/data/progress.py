"""Progress of long data jobs as log lines with throughput and ETA (works in log files)."""

from __future__ import annotations

import time

from absl import logging


class Progress:
    """``done/total <unit>``, rate and ETA, logged at most every ``every`` seconds and at the end.

    Args:
        total: number of units of work.
        what: what is being done, e.g. "features (pass 1 of 2)".
        unit: the plural name of a unit, e.g. "images".
    """

    def __init__(self, total: int, what: str, unit: str = "images", every: float = 5.0):
        self.total, self.what, self.unit, self.every = total, what, unit, every
        self.done = 0
        self.start = self.last = time.monotonic()

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last < self.every and self.done < self.total:
            return
        self.last, elapsed = now, now - self.start
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        logging.info("%s: %d/%d %s, %s %s/s, elapsed %s, ETA %s", self.what, self.done,
                     self.total, self.unit, _rate(rate), self.unit, duration(elapsed),
                     duration(eta))


def _rate(per_second: float) -> str:
    return f"{per_second:.1f}" if per_second >= 0.1 else f"{per_second:.3f}"


def duration(seconds: float) -> str:
    """``42 s``, ``12 min 05 s`` or ``3 h 04 min``: readable for runs of hours."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
