"""tk.timesync: setting the clock from NTP before TLS, on the virtual kit's RTC."""

from __future__ import annotations

import re
import textwrap
import time

import pytest

from host_tools.bench.ntp_server import SNTPServer, write_control

from .harness import parse_json_lines


@pytest.fixture
def ntp(tmp_path):
    control = tmp_path / "ntp-control.json"
    write_control(control)
    srv = SNTPServer(0, control, tmp_path / "ntp-requests.log")
    srv.start()
    yield srv, control
    srv.stop()
    srv._thread.join(timeout=2)
    assert not srv._thread.is_alive()


def test_sync_sets_sim_rtc_from_power_on(mpy, tmp_path, ntp):
    srv, control = ntp
    offset = 3 * 86400.0
    write_control(control, offset_s=offset)
    rtc = tmp_path / "rtc"
    rtc.write_text("@2000-01-01 00:00:00\n")
    before = time.time()
    out = mpy(
        f"""
        import sim_board as sim
        from tk import clock, timesync
        from tkfakes import out
        out({{"plausible": clock.is_plausible()}})
        how = timesync.sync(sim, ["127.0.0.1:notaport", "127.0.0.1:{srv.port}"], 1, 2)
        out({{"how": how, "plausible": clock.is_plausible(), "unix_s": clock.unix_s()}})
    """,
        faketime=rtc,
        env={"TK_SIM_RTC": str(rtc)},
    )
    after = time.time()
    first, second = parse_json_lines(out)
    assert first == {"plausible": False}
    assert second["how"] == "ntp" and second["plausible"] is True
    # The RTC file holds whole seconds: up to 1 s behind the server's time.
    assert before + offset - 2 <= second["unix_s"] <= after + offset + 1
    logs = [line for line in out.splitlines() if not line.startswith("JSON ")]
    assert re.fullmatch(r"\d+ W time: ntp 127\.0\.0\.1:notaport: ValueError\(.*\)", logs[0])
    assert re.fullmatch(
        rf"\d+ I time: clock set from 127\.0\.0\.1:{srv.port}: "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(was off by \d+ s\)",
        logs[1],
    )
    assert len(logs) == 2


FAKE_HAL = """
from tk import clock, timesync
from tkfakes import out, err
class Hal:
    sets = []
    @staticmethod
    def rtc_set(t):
        Hal.sets.append(t)
"""


def with_hal(snippet: str) -> str:
    """A snippet with a fake board layer (Hal.sets records rtc_set calls) in front."""
    return FAKE_HAL + textwrap.dedent(snippet)


def test_sync_once_tries_servers_in_turn(mpy, ntp):
    srv, control = ntp
    write_control(control, offset_s=-7200)
    r = mpy.one(
        with_hal(f"""
        from tk import clock
        got = timesync.sync_once(Hal, ["bad:port:x", "127.0.0.1:{srv.port}", "never.asked"], 500)
        out({{"got": got, "sets": Hal.sets, "now": clock.unix_s()}})
    """)
    )
    assert r["got"] == f"127.0.0.1:{srv.port}"
    [t] = r["sets"]
    assert isinstance(t, int)  # integer seconds: exact where floats are 32-bit (ESP32)
    assert abs(t - (r["now"] - 7200)) <= 1


def test_sync_once_returns_none_when_no_server_answers(mpy, ntp):
    srv, control = ntp
    write_control(control, blocked=True)
    r = mpy.one(
        with_hal(f"""
        import time
        t0 = time.ticks_ms()
        got = timesync.sync_once(Hal, ["127.0.0.1:{srv.port}", "x:y"], 200)
        out({{"got": got, "sets": Hal.sets, "ms": time.ticks_diff(time.ticks_ms(), t0)}})
    """)
    )
    assert r["got"] is None and r["sets"] == []
    assert 180 <= r["ms"] < 1000


def test_set_clock_used_after_max_rounds_without_ntp(mpy):
    out = mpy(
        with_hal("""
        out({"how": timesync.sync(Hal, ["127.0.0.1:nope"], 1, 2, max_rounds=3),
             "sets": Hal.sets})
    """)
    )
    assert parse_json_lines(out) == [{"how": "manual", "sets": []}]
    retries = [line for line in out.splitlines() if "time not synced" in line]
    assert len(retries) == 2
    assert all("(ntp unreachable)" in line for line in retries)
    assert re.search(r"W time: no NTP server answered; using the clock as set: 20\d\d-", out)


def test_never_set_clock_is_never_used(mpy):
    # With the clock at the power-on date and no server, sync() keeps trying. The server
    # list stops the test after 6 rounds by raising from its iterator.
    out = mpy(
        with_hal("""
        class Enough(Exception):
            pass
        class Servers:
            rounds = 0
            def __iter__(self):
                Servers.rounds += 1
                if Servers.rounds > 6:
                    raise Enough()
                return iter(["127.0.0.1:nope"])
        try:
            how = timesync.sync(Hal, Servers(), 1, 2, max_rounds=2)
            out({"how": how})
        except Enough:
            out({"rounds": Servers.rounds - 1, "sets": Hal.sets})
    """),
        faketime="@2000-01-01 00:00:00",
    )
    assert parse_json_lines(out) == [{"rounds": 6, "sets": []}]
    retries = [line for line in out.splitlines() if "time not synced" in line]
    assert len(retries) == 6 and all("(clock never set)" in line for line in retries)
    windows = [int(re.search(r"window (\d+) ms", line)[1]) for line in retries]
    assert windows == [1, 2, 2, 2, 2, 2]
