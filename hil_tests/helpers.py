"""Small observation tools shared by HIL tests."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid

from host_tools.bench.observer import Message, Observer

RETRY_RX = re.compile(
    r"^(\d+) I device: reconnect in (\d+) ms \(attempt (\d+), window (\d+) ms\)", re.MULTILINE
)
CONNECTING_RX = re.compile(r"^(\d+) I device: connecting to", re.MULTILINE)


def reported(m: Message) -> dict:
    d = m.json()
    return d.get("state", {}).get("reported", {}) if isinstance(d, dict) else {}


def ping(obs: Observer, thing: str, timeout: float = 5.0) -> Message | None:
    """Ping the kit through App #1 with a fresh id; its pong with that id, or None."""
    nonce = uuid.uuid4().hex
    t = obs.publish(f"thingkit/{thing}/ping", {"id": nonce})
    topic = f"thingkit/{thing}/pong"
    return obs.wait(
        lambda m: m.topic == topic and (m.json() or {}).get("id") == nonce, timeout, since=t
    )


def wait_connected(
    obs: Observer, thing: str, value: bool, timeout: float, since: float = 0.0
) -> Message | None:
    """The first update/accepted of ``thing`` that sets reported.connected to ``value``."""
    topic = f"$aws/things/{thing}/shadow/update/accepted"
    return obs.wait(
        lambda m: m.topic == topic and reported(m).get("connected") is value, timeout, since=since
    )


class ConnectRecorder:
    """A TCP listener on 127.0.0.1:port that records when each connection arrives and
    closes it at once: what a device's retries look like from the network."""

    def __init__(self, port: int) -> None:
        self.times: list[float] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.times.append(time.monotonic())
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


def wait_shadow_connected(obs: Observer, thing: str, value: bool, timeout: float) -> dict | None:
    """Poll the shadow until reported.connected is ``value``; return the document or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = obs.shadow_get(thing)
        if doc and doc.get("state", {}).get("reported", {}).get("connected") is value:
            return doc
        time.sleep(0.2)
    return None
