"""Fixtures for device-module tests on the MicroPython unix port (see harness.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from host_tools.errors import UserError
from host_tools.paths import SIM_IMAGE

from .harness import FIRMWARE, MPY_HELPERS, MicroPython, umqtt_lib_dir


@pytest.fixture(scope="session")
def mpy_path() -> list[Path]:
    """MICROPYPATH entries (without .frozen): firmware, its lib, umqtt 1.3.4, fakes, and
    the virtual kit's image: the ESP32 port's ``time`` (30-bit ticks close to their wrap,
    the 2000 epoch) and the sim board layer. The path is the one firmware/main.py leaves:
    the device's libraries before the image's frozen modules."""
    try:
        umqtt = umqtt_lib_dir()
    except UserError as e:  # not fetched yet and no network, or a hash mismatch
        pytest.fail(f"umqtt.simple 1.3.4 unavailable: {e}", pytrace=False)
    return [FIRMWARE, FIRMWARE / "lib", umqtt, MPY_HELPERS, SIM_IMAGE / "port", SIM_IMAGE]


@pytest.fixture
def mpy(tmp_path: Path, mpy_path: list[Path]):
    """Run a MicroPython snippet in tmp_path; returns stdout (see harness.MicroPython)."""
    m = MicroPython(tmp_path, mpy_path)
    yield m
    m.close()


@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every thread a test starts (SNTP and scripted servers) is stopped by its end.

    Module-scoped servers are checked when their own fixture ends, not here.
    """
    before = set(threading.enumerate())
    yield
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    left = [t for t in left if not getattr(t, "_tk_module_scoped", False)]
    assert not left, f"threads still running after the test: {left}"
