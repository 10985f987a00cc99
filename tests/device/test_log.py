"""tk.log: the console line format is an interface host tools parse."""

from __future__ import annotations

import re

import pytest

LINE = re.compile(r"^(\d+) ([DIWE]) ([^:]+): (.*)$")


def lines(out: str) -> list[tuple[int, str, str, str]]:
    res = []
    for line in out.splitlines():
        m = LINE.match(line)
        assert m, f"not a log line: {line!r}"
        res.append((int(m[1]), m[2], m[3], m[4]))
    return res


def test_format_and_default_level(mpy):
    out = mpy("""
        import time
        from tk.log import Logger
        log = Logger("mqtt")
        log.debug("not shown at info")
        log.info("connected to %s:%d", "127.0.0.1", 8883)
        time.sleep_ms(30)
        log.warn("slow")
        log.error("failed: %r", b"x")
    """)
    got = lines(out)
    assert [(lv, tag, msg) for _, lv, tag, msg in got] == [
        ("I", "mqtt", "connected to 127.0.0.1:8883"),
        ("W", "mqtt", "slow"),
        ("E", "mqtt", "failed: b'x'"),
    ]
    assert 0 <= got[0][0] < 2000
    assert got[1][0] - got[0][0] >= 30


def test_message_without_args_is_not_formatted(mpy):
    out = mpy("""
        from tk.log import Logger
        Logger("t").info("100% done")
    """)
    assert [m for *_, m in lines(out)] == ["100% done"]


def test_bad_format_args_do_not_raise(mpy):
    out = mpy("""
        from tk.log import Logger
        Logger("t").info("%d items", "many")
        Logger("t").info("%s and %s", 1)
    """)
    assert [m for *_, m in lines(out)] == ["%d items ('many',)", "%s and %s (1,)"]


@pytest.mark.parametrize(
    "level, shown",
    [
        ("debug", "DIWE"),
        ("info", "IWE"),
        ("warn", "WE"),
        ("error", "E"),
    ],
)
def test_levels_filter(mpy, level, shown):
    out = mpy(f"""
        from tk import log
        assert log.set_level("{level}") is True
        assert log.level_name() == "{level}"
        L = log.Logger("x")
        L.debug("d"); L.info("i"); L.warn("w"); L.error("e")
    """)
    assert "".join(lv for _, lv, _, _ in lines(out)) == shown


def test_unknown_level_refused_and_kept(mpy):
    r = mpy.one("""
        from tk import log
        from tkfakes import out
        log.set_level("warn")
        out([log.set_level("verbose"), log.set_level("INFO"), log.level_name()])
    """)
    assert r == [False, False, "warn"]


def test_exc_logs_error_and_traceback(mpy):
    out = mpy(
        """
        from tk.log import Logger
        def boom():
            raise ValueError("bad value")
        try:
            boom()
        except ValueError as e:
            Logger("device").exc(e, "device.run failed")
    """,
        allow_traceback=True,
    )
    first, *rest = out.splitlines()
    assert LINE.match(first).group(2, 3, 4) == (
        "E",
        "device",
        "device.run failed: ValueError('bad value',)",
    )
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad value"


def test_exc_silent_above_error(mpy):
    out = mpy("""
        from tk import log
        log._level = 50   # nothing is printed above error
        log.Logger("d").exc(ValueError("x"), "m")
    """)
    assert out == ""


def test_uptime_counts_from_import(mpy):
    r = mpy.one("""
        import time
        from tk import log
        from tkfakes import out
        a = log.uptime_ms()
        time.sleep_ms(50)
        out([a, log.uptime_ms()])
    """)
    assert 0 <= r[0] < 1000 and r[1] - r[0] >= 50


def test_uptime_runs_past_the_tick_wrap(mpy):
    # ESP32 ticks wrap at 2**30 ms and ticks_diff changes sign at 2**29 (6.2 days). A
    # stand-in ``time`` (the port's wrap arithmetic, ticks moved by the test) runs the
    # clock 30 days forward in 1-day steps, crossing the wrap and the sign change twice.
    r = mpy.one("""
        import sys
        import time as port
        class Ticks:
            now = (1 << 30) - 5000   # 5 s before the wrap at boot
            ticks_ms = staticmethod(lambda: Ticks.now)
            ticks_diff = staticmethod(port.ticks_diff)
            ticks_add = staticmethod(port.ticks_add)
        sys.modules["time"] = Ticks
        from tk import log
        from tkfakes import out
        seen = []
        for day in range(30):
            Ticks.now = port.ticks_add(Ticks.now, 86400000)
            seen.append(log.uptime_ms())
        out({"days": [u // 86400000 for u in seen], "exact": seen[-1] == 30 * 86400000,
             "ticks_below_2_30": Ticks.now < (1 << 30)})
    """)
    assert r["days"] == list(range(1, 31))
    assert r["exact"] is True
    assert r["ticks_below_2_30"] is True
