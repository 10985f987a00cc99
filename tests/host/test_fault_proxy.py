"""The fault proxy with plain sockets: every control, the counters, the bounds."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from host_tools.errors import UserError
from host_tools.faults import FaultProxy
from host_tools.faults.control import command

T = 5.0  # generous: the machine is shared


class Upstream:
    """A TCP server on 127.0.0.1 standing in for the broker: keeps each accepted socket."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._cond = threading.Condition()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(T)
            with self._cond:
                self.conns.append(c)
                self._cond.notify_all()

    def conn(self, i: int = 0) -> socket.socket:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.conns) > i, T), "no connection upstream"
            return self.conns[i]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self._t.join(T)
        for c in self.conns:
            c.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.port, lifetime_s=60, control=True) as p:
        yield p
    assert not p.is_running()


def dial(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), T)
    s.settimeout(T)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = s.recv(n - len(buf))
        if not part:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += part
    return buf


def refused(proxy: FaultProxy) -> bool:
    """A connection to the proxy is reset at once (during connect or right after)."""
    try:
        s = dial(proxy)
    except (ConnectionResetError, ConnectionRefusedError):
        return True
    with s:
        return is_closed(s)


def nothing_arrives(s: socket.socket, wait: float = 0.6) -> bool:
    """True if ``s`` stays open and silent for ``wait`` seconds."""
    s.settimeout(wait)
    try:
        data = s.recv(100)
    except TimeoutError:
        return True
    finally:
        s.settimeout(T)
    raise AssertionError(f"expected silence, got {data!r}")


def is_closed(s: socket.socket) -> bool:
    """The peer closed (FIN or RST) within the timeout."""
    try:
        return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def wait_until(pred, timeout: float = T) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_forwards_both_ways_and_counts(proxy: FaultProxy, upstream: Upstream) -> None:
    c = dial(proxy)
    u = upstream.conn()
    c.sendall(b"hello broker")
    assert recv_exactly(u, 12) == b"hello broker"
    u.sendall(b"hello kit!")
    assert recv_exactly(c, 10) == b"hello kit!"
    big = bytes(range(256)) * 4096  # 1 MiB: several chunks, in order
    threading.Thread(target=c.sendall, args=(big,), daemon=True).start()
    assert recv_exactly(u, len(big)) == big
    st = proxy.stats()
    assert (st.accepted, st.active) == (1, 1)
    assert st.bytes_up == 12 + len(big) and st.bytes_down == 10
    # A FIN passes through: the broker sees the device close, and the proxy forgets it.
    c.shutdown(socket.SHUT_WR)
    assert u.recv(10) == b""
    u.close()
    assert is_closed(c)
    assert wait_until(lambda: proxy.stats().active == 0)


def test_cut_closes_every_connection_and_refuses_for_a_while(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    a, b = dial(proxy), dial(proxy)
    ua, ub = upstream.conn(0), upstream.conn(1)
    assert proxy.cut(refuse_s=1.0) == 2
    for s in (a, b, ua, ub):
        assert is_closed(s)
    # During the refusal window the TCP handshake completes, then the proxy resets.
    t0 = time.monotonic()
    assert refused(proxy)
    assert proxy.stats().refused >= 1 and len(upstream.conns) == 2, "refused reached upstream"
    # After it, connections go through again.
    time.sleep(max(0.0, 1.1 - (time.monotonic() - t0)))
    c = dial(proxy)
    c.sendall(b"x")
    assert recv_exactly(upstream.conn(2), 1) == b"x"
    st = proxy.stats()
    assert st.cuts == 2 and st.accepted == 3


def test_cut_with_fin_and_heal_ends_refusal(proxy: FaultProxy, upstream: Upstream) -> None:
    c = dial(proxy)
    upstream.conn()
    proxy.cut(refuse_s=30, reset=False)
    assert c.recv(10) == b""  # an orderly FIN, not a reset
    proxy.heal()  # the refusal window ends at once
    d = dial(proxy)
    d.sendall(b"y")
    assert recv_exactly(upstream.conn(1), 1) == b"y"


def test_stall_keeps_sockets_open_and_holds_bytes_until_heal(
    proxy: FaultProxy, upstream: Upstream
) -> None:
    c = dial(proxy)
    u = upstream.conn()
    proxy.stall()
    c.sendall(b"PINGREQ")
    u.sendall(b"PUBACK")
    assert nothing_arrives(u) and nothing_arrives(c)
    assert wait_until(lambda: proxy.stats().held_up == 7 and proxy.stats().held_down == 6)
    # A connection made during the stall is stalled too.
    c2 = dial(proxy)
    u2 = upstream.conn(1)
    c2.sendall(b"CONNECT")
    assert nothing_arrives(u2)
    before = proxy.stats()
    assert before.bytes_up == 0 and before.bytes_down == 0
    proxy.heal()
    assert recv_exactly(u, 7) == b"PINGREQ"
    assert recv_exactly(c, 6) == b"PUBACK"
    assert recv_exactly(u2, 7) == b"CONNECT"
    assert proxy.stats().held_up == 0


def test_stall_holds_a_fin_too(proxy: FaultProxy, upstream: Upstream) -> None:
    c = dial(proxy)
    u = upstream.conn()
    proxy.stall()
    c.sendall(b"last words")
    c.close()  # the device gives up during the stall
    assert nothing_arrives(u), "the broker heard of it during the stall"
    proxy.heal()
    assert recv_exactly(u, 10) == b"last words"
    assert u.recv(10) == b""


def test_delay_per_direction(proxy: FaultProxy, upstream: Upstream) -> None:
    c = dial(proxy)
    u = upstream.conn()
    proxy.delay(up_s=0.4, down_s=0.0)
    t0 = time.monotonic()
    c.sendall(b"slow")
    assert recv_exactly(u, 4) == b"slow"
    up = time.monotonic() - t0
    t0 = time.monotonic()
    u.sendall(b"fast")
    assert recv_exactly(c, 4) == b"fast"
    down = time.monotonic() - t0
    assert up >= 0.39, up
    assert down < 0.3, down
    proxy.delay(0, 0.3)
    t0 = time.monotonic()
    u.sendall(b"now slow")
    assert recv_exactly(c, 8) == b"now slow"
    assert time.monotonic() - t0 >= 0.29
    proxy.heal()
    t0 = time.monotonic()
    u.sendall(b"z")
    assert recv_exactly(c, 1) == b"z"
    assert time.monotonic() - t0 < 0.25
    with pytest.raises(ValueError):
        proxy.delay(-1)


def test_drop_down_blackholes_broker_to_device_only(proxy: FaultProxy, upstream: Upstream) -> None:
    c = dial(proxy)
    u = upstream.conn()
    proxy.drop("down")
    u.sendall(b"PUBACK")
    c.sendall(b"PUBLISH")
    assert recv_exactly(u, 7) == b"PUBLISH"  # up still flows
    assert nothing_arrives(c)  # down does not, and the socket stays open
    assert wait_until(lambda: proxy.stats().dropped_down == 6)
    proxy.heal()
    u.sendall(b"later")
    assert recv_exactly(c, 5) == b"later"  # what was dropped is gone for good
    st = proxy.stats()
    assert st.bytes_down == 5 and st.dropped_up == 0


def test_drop_up_and_both(proxy: FaultProxy, upstream: Upstream) -> None:
    c = dial(proxy)
    u = upstream.conn()
    proxy.drop("up")
    c.sendall(b"lost")
    u.sendall(b"kept")
    assert recv_exactly(c, 4) == b"kept"
    assert nothing_arrives(u)
    proxy.drop("both")
    u.sendall(b"gone")
    assert nothing_arrives(c)
    st = proxy.stats()
    assert st.dropped_up == 4 and st.dropped_down == 4
    with pytest.raises(ValueError):
        proxy.drop("sideways")


def test_broker_down_resets_the_device() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FaultProxy(port, lifetime_s=30) as p:
        assert refused(p)
        assert wait_until(lambda: p.stats().upstream_failed == 1)


def test_stops_by_itself_after_its_lifetime(upstream: Upstream) -> None:
    p = FaultProxy(upstream.port, lifetime_s=0.5).start()
    c = dial(p)
    upstream.conn()
    assert p.stopped.wait(T), "proxy outlived its lifetime"
    assert not p.is_running()
    assert is_closed(c)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), 1).close()
    p.stop()  # idempotent


def test_stop_leaves_no_thread(upstream: Upstream) -> None:
    before = set(threading.enumerate())
    with FaultProxy(upstream.port) as p:
        c = dial(p)
        upstream.conn()
        assert p.is_running()
    assert not (set(threading.enumerate()) - before)
    assert is_closed(c)


def test_control_port_commands(proxy: FaultProxy, upstream: Upstream) -> None:
    port = proxy.control_port
    assert port
    c = dial(proxy)
    u = upstream.conn()
    command(port, "stall")
    assert command(port, "state")["stalled"] is True
    c.sendall(b"abc")
    assert nothing_arrives(u)
    command(port, "heal")
    assert recv_exactly(u, 3) == b"abc"
    command(port, "delay 0.2 0.1")
    assert command(port, "state")["delay"] == {"up": 0.2, "down": 0.1}
    command(port, "drop both")
    assert command(port, "cut 0.5")["closed"] == 1
    st = command(port, "stats")
    assert st["accepted"] == 1 and st["bytes_up"] == 3 and st["cuts"] == 1
    with pytest.raises(UserError, match="unknown command"):
        command(port, "explode")
    with pytest.raises(UserError, match="direction"):
        command(port, "drop sideways")


def test_runs_as_a_process_with_a_control_interface(upstream: Upstream) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "host_tools.faults.proxy", "--upstream", str(upstream.port)]
        + ["--lifetime", "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        info = json.loads(p.stdout.readline())
        c = socket.create_connection(("127.0.0.1", info["port"]), T)
        u = upstream.conn()
        c.sendall(b"via process")
        assert recv_exactly(u, 11) == b"via process"
        assert command(info["control_port"], "cut")["closed"] == 1
        assert is_closed(c)
        command(info["control_port"], "quit")
        assert p.wait(T) == 0
        last = json.loads(p.stdout.read().strip().splitlines()[-1])
        assert last["stopped"] and last["accepted"] == 1 and last["cuts"] == 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(T)


def test_process_stops_after_its_lifetime(upstream: Upstream) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "host_tools.faults.proxy", "--upstream", str(upstream.port)]
        + ["--lifetime", "0.5"],
        stdout=subprocess.DEVNULL,
    )
    try:
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(T)
