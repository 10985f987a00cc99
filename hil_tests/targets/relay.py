"""Expose a bench that listens on 127.0.0.1 on the address real boards reach this host at.

The bench binds to loopback only; boards on Wi-Fi reach the test host at, say,
192.0.2.1. A :class:`TcpRelay` forwards each connection byte for byte (TLS passes
through untouched: the broker still checks the board's certificate); a :class:`UdpRelay`
forwards NTP requests and their answers.

    mqtt = TcpRelay(("192.0.2.1", 0), ("127.0.0.1", bench.port))
    ntp = UdpRelay(("192.0.2.1", 0), ("127.0.0.1", bench.ntp_port))
    ... mqtt.port, ntp.port go into the board's config ...
    mqtt.close(); ntp.close()
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class TcpRelay:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(listen)
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True, name="tcp-relay")
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the bench is down: the board sees a refused session
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._pipe, args=(client, upstream), daemon=True)
            t.start()
            self._threads.append(t)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._sock.close()


class UdpRelay:
    """Forward datagrams to ``target``; answers go back to whoever asked last."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(listen)
        self.port = self._front.getsockname()[1]
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.bind(("127.0.0.1", 0))
        self._client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="udp-relay")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._front, self._back], [], [], 0.2)
            for s in ready:
                with contextlib.suppress(OSError):
                    data, addr = s.recvfrom(2048)
                    if s is self._front:
                        self._client = addr
                        self._back.sendto(data, self.target)
                    elif self._client is not None:
                        self._front.sendto(data, self._client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._front.close()
        self._back.close()
