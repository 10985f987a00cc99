"""Every HIL test is bounded in time: setup and call each get ``--hil-timeout`` seconds
(``@pytest.mark.hil_timeout(s)`` for one test). Teardown is never cut short, so kits are
always powered off and benches stopped.

A time-out fails the test with where it was; the plugin then adds the paths of the
test's console logs and broker transcript to the report.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def limit_for(item: pytest.Item, default: float) -> float:
    m = item.get_closest_marker("hil_timeout")
    return float(m.args[0]) if m and m.args else default


@contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Fail with ``pytest.fail`` if the block runs longer than ``seconds`` (main thread,
    POSIX; elsewhere the block runs unbounded)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        pytest.fail(f"HIL time-out: {what} ran over {seconds:.0f} s (--hil-timeout)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
