"""Tests for the bench's SNTP server: the reply packet, and the server on a UDP socket."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.bench.ntp_server import (
    NTP_TO_UNIX,
    SNTPServer,
    answer,
    read_control,
    write_control,
)

# A recognisable client transmit timestamp (seconds, fraction) the server must echo.
CLIENT_TX = struct.pack("!II", 0xE1234567, 0x89ABCDEF)


def request(version: int = 4, mode: int = 3, li: int = 0, tx: bytes = CLIENT_TX) -> bytes:
    """A 48-byte (S)NTP request with ``tx`` as its transmit timestamp."""
    return bytes([(li << 6) | (version << 3) | mode]) + bytes(39) + tx


def ts(b: bytes) -> float:
    secs, frac = struct.unpack("!II", b)
    return secs - NTP_TO_UNIX + frac / 2**32


# -- answer() ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", [3, 4])
def test_answer_fields(version: int) -> None:
    now = 1_700_000_000.25
    reply = answer(request(version=version), now)
    assert reply is not None and len(reply) == 48
    assert reply[0] >> 6 == 0  # leap indicator: no warning
    assert (reply[0] >> 3) & 7 == version  # version echoed
    assert reply[0] & 7 == 4  # mode 4: server
    assert reply[1] == 2  # stratum 2
    assert reply[12:16] == b"TKIT"
    assert reply[24:32] == CLIENT_TX  # origin = the request's transmit timestamp
    for field in (reply[16:24], reply[32:40], reply[40:48]):  # reference, receive, transmit
        assert abs(ts(field) - now) < 1e-6
    assert abs(ts(reply[40:48]) - now) < 1.0


def test_answer_transmit_time_tracks_now() -> None:
    for now in (946_684_800.0, 1_700_000_000.5, 2_000_000_000.999):
        reply = answer(request(), now)
        assert reply is not None
        assert abs(ts(reply[40:48]) - now) < 1e-6
        assert struct.unpack("!I", reply[40:44])[0] == int(now) + NTP_TO_UNIX


def test_answer_ignores_request_header_bits() -> None:
    # LI bits and trailing bytes beyond 48 (extension fields) do not change the reply.
    now = 1_700_000_000.0
    assert answer(request(li=3) + b"\x00" * 20, now) == answer(request(), now)


@pytest.mark.parametrize("mode", [0, 1, 2, 4, 5, 6, 7])
def test_answer_non_client_packet_is_none(mode: int) -> None:
    assert answer(request(mode=mode), 1_700_000_000.0) is None


@pytest.mark.parametrize("size", [0, 1, 47])
def test_answer_short_packet_is_none(size: int) -> None:
    assert answer(request()[:size], 1_700_000_000.0) is None


# -- control file -------------------------------------------------------------------------
def test_control_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "ntp.json"
    write_control(f, offset_s=-12.5, blocked=True)
    assert read_control(f) == {"offset_s": -12.5, "blocked": True}
    write_control(f)
    assert read_control(f) == {"offset_s": 0.0, "blocked": False}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ntp.json"]  # no temp file left


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", "42", '"x"', "\xff\xfe"])
def test_read_control_corrupt_is_empty(tmp_path: Path, content: str) -> None:
    f = tmp_path / "ntp.json"
    f.write_text(content, errors="surrogateescape")
    assert read_control(f) == {}


def test_read_control_missing_is_empty(tmp_path: Path) -> None:
    assert read_control(tmp_path / "nope.json") == {}


# -- SNTPServer on a real socket ----------------------------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Iterator[SNTPServer]:
    srv = SNTPServer(0, tmp_path / "ntp.json", tmp_path / "ntp.log")
    srv.start()
    yield srv
    srv.stop()  # the daemon thread ends within its 0.5 s poll (joined in test_server_stop_*)


@pytest.fixture
def client() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    yield s
    s.close()


def ask(client: socket.socket, port: int, packet: bytes | None = None) -> bytes:
    client.sendto(packet or request(), ("127.0.0.1", port))
    data, addr = client.recvfrom(512)
    assert addr == ("127.0.0.1", port)
    return data


def log_lines(srv: SNTPServer, n: int, timeout: float = 2.0) -> list[list[str]]:
    """The request log's lines (split), once it has ``n`` of them (it is written after the
    reply is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = [ln.split() for ln in srv.request_log.read_text().splitlines()]
        except FileNotFoundError:
            lines = []
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def log_actions(srv: SNTPServer, n: int) -> list[str]:
    return [f[2] for f in log_lines(srv, n)]


def test_server_binds_loopback(server: SNTPServer) -> None:
    host, port = server.sock.getsockname()
    assert host == "127.0.0.1" and port == server.port and port > 0


def test_server_answers_with_host_time(server: SNTPServer, client: socket.socket) -> None:
    reply = ask(client, server.port)
    assert len(reply) == 48 and reply[0] & 7 == 4
    assert reply[24:32] == CLIENT_TX
    assert abs(ts(reply[40:48]) - time.time()) < 1.0
    (line,) = log_lines(server, 1)
    assert abs(float(line[0]) - time.time()) < 2.0
    assert line[1] == f"127.0.0.1:{client.getsockname()[1]}" and line[2] == "answered"


def test_server_applies_offset(server: SNTPServer, client: socket.socket) -> None:
    write_control(server.control, offset_s=3600.0)
    assert abs(ts(ask(client, server.port)[40:48]) - (time.time() + 3600.0)) < 1.0
    write_control(server.control, offset_s=-86400.0)
    assert abs(ts(ask(client, server.port)[40:48]) - (time.time() - 86400.0)) < 1.0


def test_server_blocked_sends_nothing_then_recovers(
    server: SNTPServer, client: socket.socket
) -> None:
    write_control(server.control, blocked=True)
    client.settimeout(0.3)
    client.sendto(request(), ("127.0.0.1", server.port))
    with pytest.raises(TimeoutError):
        client.recvfrom(512)
    write_control(server.control, blocked=False)
    client.settimeout(2.0)
    assert ask(client, server.port)[24:32] == CLIENT_TX
    assert log_actions(server, 2) == ["blocked", "answered"]


def test_server_ignores_non_client_packets(server: SNTPServer, client: socket.socket) -> None:
    client.settimeout(0.3)
    client.sendto(request(mode=4), ("127.0.0.1", server.port))
    client.sendto(b"\x23" * 10, ("127.0.0.1", server.port))
    with pytest.raises(TimeoutError):
        client.recvfrom(512)
    # Still serving afterwards.
    client.settimeout(2.0)
    assert len(ask(client, server.port)) == 48
    assert log_actions(server, 3) == ["ignored", "ignored", "answered"]


def test_server_with_corrupt_control_answers_unskewed(
    server: SNTPServer, client: socket.socket
) -> None:
    server.control.write_text("{corrupt")
    assert abs(ts(ask(client, server.port)[40:48]) - time.time()) < 1.0


def test_server_stop_closes_port(tmp_path: Path, client: socket.socket) -> None:
    srv = SNTPServer(0, tmp_path / "ntp.json", tmp_path / "ntp.log")
    srv.start()
    port = srv.port
    assert len(ask(client, port)) == 48
    srv.stop()
    srv._thread.join(2)
    assert not srv._thread.is_alive()
    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
