"""A TCP fault proxy on 127.0.0.1: the network between a kit and the broker, made to fail.

The kit's config ``port`` points at the proxy, the proxy forwards every connection to
the broker. Bytes pass through untouched (TLS, SNI and the certificate checks are the
kit's and the broker's business); the proxy only decides when, and whether, they move::

    with FaultProxy(bench.port) as proxy:
        kit = create_sim_kit(bench, root, "kit-1", port=proxy.port)
        kit.power_on()
        proxy.cut(refuse_s=3)        # close every connection, refuse new ones for 3 s
        proxy.stall()                # sockets stay open, nothing moves either way
        proxy.heal()
        proxy.delay(up_s=0.2)        # 200 ms added to every device -> broker byte
        proxy.drop("down")           # broker -> device blackholed: no PUBACK, no PINGRESP
        proxy.heal()
        print(proxy.stats())         # connections accepted, bytes each way, ...

Directions: ``up`` is device -> broker, ``down`` is broker -> device.

- ``cut(refuse_s=0, reset=True)``: close every connection now (RST by default, a FIN
  with ``reset=False``); for ``refuse_s`` seconds after, new connections are accepted
  and reset at once, as a broker that is down looks to a client.
- ``stall()``: keep every socket open and forward nothing, both ways, on existing and new
  connections; what arrives is held (up to 1 MiB per direction, then the proxy stops
  reading) and delivered in order by ``heal()``, FINs included. A device learns of a
  stall only from its own time-outs (a PINGRESP or PUBACK that does not come).
- ``delay(up_s, down_s)``: every chunk is held that long before it is forwarded.
- ``drop(direction)``: bytes in that direction (``up``, ``down`` or ``both``) are read
  and discarded, FINs too. A TLS stream that lost bytes is broken for good: after
  ``heal()`` its next record fails and the peers reconnect.
- ``heal()``: stalls, drops and delays end, a refusal window is cancelled.

The proxy is bounded: it runs in one daemon thread (or process, ``python -m
host_tools.faults.proxy``) that stops by itself after ``lifetime_s`` and closes every
socket it holds when it stops. ``control=True`` adds a line-based control listener on
127.0.0.1 (see :mod:`host_tools.faults.control`).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Self

UP, DOWN = "up", "down"
DIRECTIONS = (UP, DOWN)
HOLD_LIMIT = 1 << 20  # bytes held per direction before the proxy stops reading
CHUNK = 65536
DEFAULT_LIFETIME_S = 900.0
_EOF = b""


@dataclass
class Counters:
    """What the proxy has seen since it started."""

    accepted: int = 0  # connections accepted and forwarded to the broker
    refused: int = 0  # connections reset at once (refusal window)
    upstream_failed: int = 0  # connections reset because the broker did not answer
    active: int = 0  # connections open now
    cuts: int = 0  # connections closed by cut()
    bytes_up: int = 0  # forwarded device -> broker
    bytes_down: int = 0  # forwarded broker -> device
    dropped_up: int = 0
    dropped_down: int = 0
    held_up: int = 0  # read, not yet forwarded (stall, delay)
    held_down: int = 0


def _close(sock: socket.socket | None, reset: bool = False) -> None:
    if sock is None:
        return
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Pipe:
    """One direction of one connection: chunks read from ``src`` waiting for ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        self.src, self.dst, self.direction = src, dst, direction
        self.queue: deque[tuple[float, bytes]] = deque()  # (due, data); b"" is the FIN
        self.out = b""  # the head chunk, partly written
        self.held = 0
        self.read_eof = False  # src said FIN (or failed)
        self.done = False  # the FIN was passed on (or dropped)

    def ready(self, now: float) -> bool:
        if self.done:
            return False
        return bool(self.out) or bool(self.queue and self.queue[0][0] <= now)

    def next_due(self) -> float | None:
        if self.out:
            return 0.0
        return self.queue[0][0] if self.queue else None


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.pipes = (_Pipe(client, upstream, UP), _Pipe(upstream, client, DOWN))

    def finished(self) -> bool:
        return all(p.done for p in self.pipes)

    def close(self, reset: bool = False) -> None:
        _close(self.client, reset)
        _close(self.upstream, reset)


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``upstream_host:upstream_port``, with faults on demand.

    Args:
        upstream_port: the broker's port.
        upstream_host: the broker's address (127.0.0.1 by default).
        port: port to listen on (0: a free one, see :attr:`port`).
        lifetime_s: the proxy stops by itself this long after :meth:`start`.
        control: also listen for text commands (:attr:`control_port`).
        connect_timeout_s: how long the proxy waits for the broker to accept.
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        port: int = 0,
        lifetime_s: float = DEFAULT_LIFETIME_S,
        control: bool = False,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.lifetime_s = lifetime_s
        self.connect_timeout_s = connect_timeout_s
        self.counters = Counters()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._control: socket.socket | None = None
        if control:
            self._control = socket.socket()
            self._control.bind(("127.0.0.1", 0))
            self._control.listen(8)
            self._control.setblocking(False)
        self._ctl_clients: dict[socket.socket, bytearray] = {}
        self._conns: list[_Conn] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._calls: deque[tuple[Callable[[], Any], threading.Event, list]] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.stopped = threading.Event()
        # Fault state: touched only by the proxy's thread.
        self._stalled = False
        self._drop = {UP: False, DOWN: False}
        self._delay = {UP: 0.0, DOWN: 0.0}
        self._refuse_until = 0.0
        self._deadline = 0.0

    # -- lifecycle -------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port devices connect to."""
        return self._listener.getsockname()[1]

    @property
    def control_port(self) -> int | None:
        return self._control.getsockname()[1] if self._control is not None else None

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("fault proxy already started")
        self._deadline = time.monotonic() + self.lifetime_s
        self._thread = threading.Thread(
            target=self._run, name=f"fault-proxy:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and socket, end the thread (idempotent)."""
        self._stopping.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("fault proxy thread did not stop")
        elif self._thread is None:
            self._shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- controls (any thread) ---------------------------------------------------------
    def cut(self, refuse_s: float = 0.0, reset: bool = True) -> int:
        """Close every connection now; refuse new ones for ``refuse_s``. Returns how
        many connections were closed."""
        return self._call(lambda: self._do_cut(refuse_s, reset))

    def stall(self) -> None:
        """Forward nothing either way, keep every socket open (until :meth:`heal`)."""
        self._call(lambda: setattr(self, "_stalled", True))

    def delay(self, up_s: float = 0.0, down_s: float = 0.0) -> None:
        """Add latency per direction (seconds) to every chunk read from now on."""
        if up_s < 0 or down_s < 0:
            raise ValueError("delay must be >= 0")
        self._call(lambda: self._delay.update({UP: float(up_s), DOWN: float(down_s)}))

    def drop(self, direction: str = DOWN) -> None:
        """Blackhole ``up``, ``down`` or ``both`` directions (until :meth:`heal`)."""
        dirs = DIRECTIONS if direction == "both" else (direction,)
        if any(d not in DIRECTIONS for d in dirs):
            raise ValueError(f"direction must be up, down or both, not {direction!r}")
        self._call(lambda: self._drop.update({d: True for d in dirs}))

    def heal(self) -> None:
        """End every fault: forward again, no delay, no drop, no refusal."""
        self._call(self._do_heal)

    def stats(self) -> Counters:
        """A copy of the counters (with ``active`` and ``held_*`` up to date)."""
        return self._call(self._snapshot)

    def state(self) -> dict:
        """The faults in force now (for logs and the control interface)."""
        return self._call(
            lambda: {
                "stalled": self._stalled,
                "drop": dict(self._drop),
                "delay": dict(self._delay),
                "refusing_s": max(0.0, round(self._refuse_until - time.monotonic(), 3)),
            }
        )

    def _call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` in the proxy's thread (which owns every socket) and return its result."""
        if not self.is_running() or threading.current_thread() is self._thread:
            return fn()
        done, box = threading.Event(), []
        with self._lock:
            self._calls.append((fn, done, box))
        self._wake()
        if not done.wait(timeout):
            if not self.is_running():
                return fn()
            raise TimeoutError("fault proxy did not answer")
        if box and isinstance(box[0], BaseException):
            raise box[0]
        return box[0] if box else None

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- what the controls do (proxy thread) ------------------------------------------
    def _do_cut(self, refuse_s: float, reset: bool) -> int:
        n = len(self._conns)
        for c in self._conns:
            c.close(reset)
        self._conns.clear()
        self.counters.cuts += n
        self._refuse_until = time.monotonic() + refuse_s if refuse_s > 0 else 0.0
        return n

    def _do_heal(self) -> None:
        self._stalled = False
        self._drop = {UP: False, DOWN: False}
        self._delay = {UP: 0.0, DOWN: 0.0}
        self._refuse_until = 0.0

    def _snapshot(self) -> Counters:
        c = self.counters
        c.active = len(self._conns)
        c.held_up = sum(k.pipes[0].held for k in self._conns)
        c.held_down = sum(k.pipes[1].held for k in self._conns)
        return Counters(**asdict(c))

    # -- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping.is_set() and time.monotonic() < self._deadline:
                self._run_calls()
                self._step()
        finally:
            self._run_calls()
            self._shutdown()

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn, done, box = self._calls.popleft()
            try:
                box.append(fn())
            except BaseException as exc:  # noqa: BLE001  (handed to the caller)
                box.append(exc)
            done.set()

    def _shutdown(self) -> None:
        for c in self._conns:
            c.close(reset=True)
        self._conns.clear()
        for s in list(self._ctl_clients):
            _close(s)
        self._ctl_clients.clear()
        for s in (self._listener, self._control, self._wake_r, self._wake_w):
            _close(s)
        self.stopped.set()

    def _step(self) -> None:
        now = time.monotonic()
        rlist: list[socket.socket] = [self._wake_r, self._listener, *self._ctl_clients]
        if self._control is not None:
            rlist.append(self._control)
        wlist: list[socket.socket] = []
        timeout = min(1.0, max(0.0, self._deadline - now))
        for c in self._conns:
            for p in c.pipes:
                if not p.read_eof and p.held < HOLD_LIMIT:
                    rlist.append(p.src)
                if self._stalled:
                    continue
                if p.ready(now):
                    wlist.append(p.dst)
                else:
                    due = p.next_due()
                    if due is not None:
                        timeout = min(timeout, max(0.0, due - now))
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except (OSError, ValueError):
            self._reap(force=True)
            return
        for s in readable:
            if s is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            elif s is self._listener:
                self._accept()
            elif s is self._control:
                self._accept_control()
            elif s in self._ctl_clients:
                self._serve_control(s)
        now = time.monotonic()
        for c in list(self._conns):
            for p in c.pipes:
                if p.src in readable and not p.read_eof:
                    self._read(c, p, now)
                if p.dst in writable and not self._stalled:
                    self._write(c, p, now)
        self._reap()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                self.counters.refused += 1
                _close(client, reset=True)
                continue
            try:
                upstream = socket.create_connection(self.upstream, self.connect_timeout_s)
            except OSError:
                self.counters.upstream_failed += 1
                _close(client, reset=True)
                continue
            for s in (client, upstream):
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(_Conn(client, upstream))
            self.counters.accepted += 1

    def _read(self, c: _Conn, p: _Pipe, now: float) -> None:
        try:
            data = p.src.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = _EOF  # a reset reads as the end of the stream
        if data == _EOF:
            p.read_eof = True
        if self._drop[p.direction]:
            self._count("dropped_" + p.direction, len(data))
            if data == _EOF:
                p.done = True  # the FIN is dropped too: the peer never hears of it
            return
        p.queue.append((now + self._delay[p.direction], data))
        p.held += len(data)

    def _count(self, name: str, n: int) -> None:
        setattr(self.counters, name, getattr(self.counters, name) + n)

    def _write(self, c: _Conn, p: _Pipe, now: float) -> None:
        while True:
            if not p.out:
                if not p.queue or p.queue[0][0] > now:
                    return
                _, data = p.queue.popleft()
                if data == _EOF:
                    with contextlib.suppress(OSError):
                        p.dst.shutdown(socket.SHUT_WR)
                    p.done = True
                    return
                p.out = data
            try:
                n = p.dst.send(p.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # The other end is gone: nothing more can pass this connection.
                for q in c.pipes:
                    q.done = q.read_eof = True
                return
            p.out = p.out[n:]
            p.held -= n
            self._count("bytes_" + p.direction, n)
            if p.out:
                return

    def _reap(self, force: bool = False) -> None:
        keep = []
        for c in self._conns:
            bad = force and any(s.fileno() < 0 for s in (c.client, c.upstream))
            if c.finished() or bad:
                c.close()
            else:
                keep.append(c)
        self._conns = keep

    # -- control listener ------------------------------------------------------------------
    def _accept_control(self) -> None:
        assert self._control is not None
        try:
            s, _ = self._control.accept()
        except OSError:
            return
        s.setblocking(False)
        self._ctl_clients[s] = bytearray()

    def _serve_control(self, s: socket.socket) -> None:
        from host_tools.faults.control import execute  # the command table

        try:
            data = s.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._ctl_clients.pop(s, None)
            _close(s)
            return
        buf = self._ctl_clients[s]
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            reply = execute(self, line.decode(errors="replace"))
            try:
                s.setblocking(True)
                s.sendall(json.dumps(reply).encode() + b"\n")
                s.setblocking(False)
            except OSError:
                self._ctl_clients.pop(s, None)
                _close(s)
                return


if __name__ == "__main__":
    from host_tools.faults.control import main

    raise SystemExit(main())
