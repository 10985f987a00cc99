"""tk.clock on the unix port, with the process clock moved by libfaketime."""

from __future__ import annotations

import calendar
import time

import pytest

CLOCK = """
from tk import clock
from tkfakes import out
out({"offset": clock.EPOCH_OFFSET, "plausible": clock.is_plausible(),
     "unix_s": clock.unix_s(), "unix_ms": clock.unix_ms(), "iso": clock.iso()})
"""


def test_real_time(mpy):
    before = time.time()
    r = mpy.one(CLOCK)
    after = time.time()
    # The ESP32 port counts from 2000-01-01 (image/port/time.py plays it on the kit).
    assert r["offset"] == 946684800
    assert r["plausible"] is True
    assert int(before) - 1 <= r["unix_s"] <= after + 1
    assert before * 1000 - 1000 <= r["unix_ms"] <= after * 1000 + 1000
    iso_s = calendar.timegm(time.strptime(r["iso"], "%Y-%m-%dT%H:%M:%SZ"))
    assert 0 <= iso_s - r["unix_s"] <= 1


def test_power_on_date_2000_is_not_plausible(mpy):
    r = mpy.one(CLOCK, faketime="@2000-01-01 00:00:00")
    assert r["offset"] == 946684800
    assert r["plausible"] is False
    assert 946684800 <= r["unix_s"] <= 946684800 + 5
    assert r["iso"].startswith("2000-01-01T00:00:0")


@pytest.mark.parametrize(
    "when, plausible",
    [
        ("@2024-12-31 23:59:57", False),
        ("@2025-01-01 00:00:00", True),
        ("@2038-01-19 03:14:10", True),  # past 32-bit time_t
    ],
)
def test_plausibility_threshold_is_2025(mpy, when, plausible):
    assert mpy.one(CLOCK, faketime=when)["plausible"] is plausible


def test_iso_and_port_tuple(mpy):
    r = mpy.one("""
        from tk import clock
        from tkfakes import out
        out([clock.iso(0), clock.iso(1735689600), clock.iso(1893456000.9),
             list(clock.port_tuple(951782400)[:6])])
    """)
    assert r == [
        "1970-01-01T00:00:00Z",
        "2025-01-01T00:00:00Z",
        "2030-01-01T00:00:00Z",
        [2000, 2, 29, 0, 0, 0],
    ]


def test_rtc_file_moves_the_clock_at_run_time(mpy, tmp_path):
    # sim_board.rtc_set writes the libfaketime file; the same process then reads the new time.
    rtc = tmp_path / "rtc"
    rtc.write_text("@2000-01-01 00:00:00\n")
    r = mpy.one(
        """
        import os
        import sim_board as sim
        from tk import clock
        from tkfakes import out
        a = [clock.is_plausible(), clock.unix_s()]
        sim.rtc_set(1893456000.7)
        b = [clock.is_plausible(), clock.unix_s()]
        out({"before": a, "after": b, "file": open(os.getenv("TK_SIM_RTC")).read()})
    """,
        faketime=rtc,
        env={"TK_SIM_RTC": str(rtc)},
    )
    assert r["before"][0] is False and 946684800 <= r["before"][1] < 946684800 + 5
    assert r["after"][0] is True and 1893456000 <= r["after"][1] < 1893456000 + 5
    assert r["file"] == "@2030-01-01 00:00:00\n"
