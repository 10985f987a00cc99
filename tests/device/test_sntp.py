"""tk.sntp: the SNTP client against the bench's SNTP server and crafted replies."""

from __future__ import annotations

import os
import struct
import time

import pytest

from host_tools.bench.ntp_server import SNTPServer, write_control

from .harness import CraftedUDPServer

NTP_TO_UNIX = 2208988800
T_2030 = 1893456000  # 2030-01-01T00:00:00Z

QUERY = """
import time
from tk import sntp
from tkfakes import out, err
t0 = time.ticks_ms()
try:
    t = sntp.query("127.0.0.1", {port}, timeout_ms={timeout_ms})
    out({{"t": t, "int": isinstance(t, int), "ms": time.ticks_diff(time.ticks_ms(), t0)}})
except Exception as e:
    out({{"error": err(e), "ms": time.ticks_diff(time.ticks_ms(), t0)}})
"""


def query(mpy, port: int, timeout_ms: int = 1000) -> dict:
    return mpy.one(QUERY.format(port=port, timeout_ms=timeout_ms))


@pytest.fixture(scope="module")
def bench_ntp(tmp_path_factory):
    d = tmp_path_factory.mktemp("ntp")
    control = d / "ntp-control.json"
    write_control(control)
    srv = SNTPServer(0, control, d / "ntp-requests.log")
    srv._thread._tk_module_scoped = True  # stopped (and checked) at module teardown
    srv.start()
    yield srv, control
    srv.stop()
    srv._thread.join(timeout=2)
    assert not srv._thread.is_alive()


@pytest.fixture
def sntp_server(bench_ntp):
    srv, control = bench_ntp
    write_control(control)
    yield srv, control
    write_control(control)


def request_log(control) -> list[str]:
    try:
        return (control.parent / "ntp-requests.log").read_text().splitlines()
    except FileNotFoundError:
        return []


# -- against the bench server ------------------------------------------------------------
@pytest.mark.parametrize("offset_s", [0.0, 12345.5, -86400 * 400])
def test_query_returns_server_time(mpy, sntp_server, offset_s):
    srv, control = sntp_server
    write_control(control, offset_s=offset_s)
    seen = len(request_log(control))
    before = time.time()
    r = query(mpy, srv.port)
    after = time.time()
    assert "error" not in r, r
    assert r["int"] is True  # integer milliseconds: exact on ESP32's 32-bit floats
    t = r["t"] / 1000
    assert before + offset_s - 1 <= t <= after + offset_s + 1
    log = request_log(control)[seen:]
    assert len(log) == 1 and log[0].endswith(" answered")


def test_blocked_server_times_out_with_oserror(mpy, sntp_server):
    srv, control = sntp_server
    write_control(control, blocked=True)
    seen = len(request_log(control))
    r = query(mpy, srv.port, timeout_ms=300)
    assert r["error"][0] == "OSError"
    assert [line.split()[-1] for line in request_log(control)[seen:]] == ["blocked"]
    assert 280 <= r["ms"] < 1000


# -- crafted replies ----------------------------------------------------------------------
def ntp_reply(
    request: bytes,
    *,
    first: int = 0x24,
    stratum: int = 2,
    origin: bytes | None = None,
    tx: tuple[int, int] = (T_2030 + NTP_TO_UNIX, 1 << 31),
    length: int = 48,
) -> bytes:
    """A server reply to ``request``: LI/VN/mode byte, stratum, origin and transmit stamps."""
    head = struct.pack("!BBbb", first, stratum, 6, -20) + bytes(8) + b"TEST"
    ts = struct.pack("!II", *tx)
    org = request[40:48] if origin is None else origin
    pkt = head + ts + org + ts + ts
    assert len(pkt) == 48
    return pkt[:length] if length <= 48 else pkt + bytes(length - 48)


@pytest.mark.parametrize(
    "secs, frac, want_ms",
    [
        # 2026-12-03 10:00:00.999 and one that a float32 (24-bit mantissa) would round by
        # up to 64 s: the result must be exact to the millisecond.
        (1796292000, 4290672329, 1796292000999),
        (1796292063, 0x80000000, 1796292063500),
        (4294967295 - NTP_TO_UNIX, 0, (4294967295 - NTP_TO_UNIX) * 1000),  # era 0's last second
    ],
)
def test_time_is_exact_integer_milliseconds(mpy, secs, frac, want_ms):
    with CraftedUDPServer(lambda req: ntp_reply(req, tx=(secs + NTP_TO_UNIX, frac))) as srv:
        r = query(mpy, srv.port)
    assert r["int"] is True, r
    # Half the round trip on loopback is a few ms at most.
    assert want_ms <= r["t"] <= want_ms + 20


def test_request_bytes_and_good_reply(mpy):
    with CraftedUDPServer(lambda req: ntp_reply(req)) as srv:
        r1 = query(mpy, srv.port)
        query(mpy, srv.port)
    assert "error" not in r1, r1
    # Transmit timestamp 2030-01-01 00:00:00.5, plus half the (tiny) round trip.
    assert T_2030 * 1000 + 500 <= r1["t"] < T_2030 * 1000 + 550
    assert len(srv.requests) == 2
    for req in srv.requests:
        assert len(req) == 48
        assert req[:40] == b"\x23" + bytes(39)  # LI 0, VN 4, mode 3; everything else zero
    # The transmit timestamp is a fresh nonce per request (echoed back as origin).
    assert srv.requests[0][40:] != srv.requests[1][40:]


def test_longer_reply_with_extension_is_accepted(mpy):
    with CraftedUDPServer(lambda req: ntp_reply(req, length=68)) as srv:
        r = query(mpy, srv.port)
    assert "error" not in r, r
    assert abs(r["t"] - (T_2030 * 1000 + 500)) < 50


@pytest.mark.parametrize(
    "reply, message",
    [
        (
            lambda q: ntp_reply(q, origin=os.urandom(8)),
            "origin timestamp does not match the request",
        ),
        (lambda q: ntp_reply(q, origin=bytes(8)), "origin timestamp does not match the request"),
        (lambda q: ntp_reply(q, stratum=0), "server not synchronised (stratum 0)"),
        (lambda q: ntp_reply(q, stratum=16), "server not synchronised (stratum 16)"),
        (lambda q: ntp_reply(q, first=0x23), "not a server reply (mode 3)"),
        (lambda q: ntp_reply(q, first=0x25), "not a server reply (mode 5)"),
        (lambda q: ntp_reply(q, length=47), "short reply"),
        (lambda q: ntp_reply(q, length=0), "short reply"),
        (lambda q: ntp_reply(q, tx=(0, 0)), "zero transmit timestamp"),
    ],
    ids=[
        "wrong-origin",
        "zero-origin",
        "stratum-0-kod",
        "stratum-16",
        "mode-3",
        "mode-5",
        "short-47",
        "empty",
        "zero-transmit",
    ],
)
def test_bad_replies_raise_sntp_error(mpy, reply, message):
    with CraftedUDPServer(reply) as srv:
        r = query(mpy, srv.port)
    assert r.get("error") == ["SNTPError", message]


def test_leap_indicator_alarm_is_refused(mpy):
    with CraftedUDPServer(lambda q: ntp_reply(q, first=0xE4)) as srv:  # LI 3, VN 4, mode 4
        r = query(mpy, srv.port)
    assert r.get("error", [None])[0] == "SNTPError"


# -- parse_server ------------------------------------------------------------------------
def test_parse_server(mpy):
    r = mpy.one("""
        from tk import sntp
        from tkfakes import out, err
        res = {}
        for spec in ["pool.ntp.org", "127.0.0.1:12300", "time.example.com:123", "10.0.0.1"]:
            res[spec] = list(sntp.parse_server(spec))
        try:
            sntp.parse_server("host:ntp")
        except ValueError as e:
            res["bad"] = "ValueError"
        out(res)
    """)
    assert r == {
        "pool.ntp.org": ["pool.ntp.org", 123],
        "127.0.0.1:12300": ["127.0.0.1", 12300],
        "time.example.com:123": ["time.example.com", 123],
        "10.0.0.1": ["10.0.0.1", 123],
        "bad": "ValueError",
    }
