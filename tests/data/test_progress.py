"""Progress lines of long jobs: durations readable for runs of hours."""
import logging

from metaseg.data.progress import Progress, duration


def test_duration():
    assert [duration(s) for s in (0, 42.4, 60, 725, 3600, 13450)] == [
        "0 s", "42 s", "1 min 00 s", "12 min 05 s", "1 h 00 min", "3 h 44 min"]


def test_progress_logs_the_last_unit_with_rate_and_eta(caplog):
    progress = Progress(3, "test evaluation", unit="tasks", every=3600)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            progress.update()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("test evaluation: 3/3 tasks, ")
    assert lines[0].endswith(", ETA 0 s") and "elapsed 0 s" in lines[0]
