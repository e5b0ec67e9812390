"""A pytest plugin that moves this process's wall clock, to show the suite passes at any hour.

    pip install time-machine
    IVR_TEST_WALL_CLOCK=2026-12-02T00:30:00+00:00 python -m pytest -p wall_clock ...

Why not faketime: libfaketime breaks Python 3.11's timed waits on this machine (with the
monotonic clock faked, `threading.Lock().acquire(timeout=0.3)` never returns; with
FAKETIME_DONT_FAKE_MONOTONIC=1, `time.sleep(0.05)` raises EINVAL), so any test that waits
with a time-out hangs or fails for reasons that are not ours. time-machine moves the wall
clock (time.time, datetime.now, ...) and leaves the monotonic clock and sleeps alone; the
clock keeps ticking from the instant given. Server subprocesses keep the real clock.
"""

from __future__ import annotations

import os

_travel = None


def pytest_configure(config):
    global _travel
    instant = os.environ.get("IVR_TEST_WALL_CLOCK")
    if not instant:
        raise RuntimeError("set IVR_TEST_WALL_CLOCK to an ISO-8601 instant")
    import time_machine

    _travel = time_machine.travel(instant, tick=True)
    _travel.start()


def pytest_report_header(config):
    import datetime

    return f"wall clock moved to {datetime.datetime.now(datetime.UTC).isoformat()}"


def pytest_unconfigure(config):
    if _travel is not None:
        _travel.stop()
