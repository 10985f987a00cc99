"""Fixtures for device-module tests on the MicroPython unix port (see harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import FIRMWARE, MPY_HELPERS, MicroPython, umqtt_lib_dir


@pytest.fixture(scope="session")
def mpy_path() -> list[Path]:
    """MICROPYPATH entries (without .frozen): firmware, its lib, umqtt 1.3.4, fakes."""
    try:
        umqtt = umqtt_lib_dir()
    except Exception as e:  # host_tools.errors.UserError: not fetched and no network
        pytest.fail(f"umqtt.simple 1.3.4 unavailable: {e}", pytrace=False)
    return [FIRMWARE, FIRMWARE / "lib", umqtt, MPY_HELPERS]


@pytest.fixture
def mpy(tmp_path: Path, mpy_path: list[Path]):
    """Run a MicroPython snippet in tmp_path; returns stdout (see harness.MicroPython)."""
    m = MicroPython(tmp_path, mpy_path)
    yield m
    m.close()
