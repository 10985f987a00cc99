"""AWS IoT lifecycle events on the bench: ``$aws/events/presence/connected|disconnected/<clientId>``.

AWS IoT Core publishes one JSON message on those topics whenever a client connects or
disconnects (fields as AWS documents them: ``clientId``, ``timestamp`` (ms),
``eventType``, ``sessionIdentifier``, ``principalIdentifier``, ``versionNumber``; plus
``ipAddress`` on connect, ``clientInitiatedDisconnect`` and ``disconnectReason`` on
disconnect). mosquitto has no such events, so the services process follows the broker's
connection log lines and publishes them. The principal is the certificate id (SHA-256
of the certificate, as AWS names certificates) registered for the client's identity,
else the identity itself.

What the bench cannot tell apart: mosquitto logs a dropped TCP connection and a
keepalive time-out differently, both mapped; other AWS reasons (THROTTLED, AUTH_ERROR
of a connected client, ...) never occur here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_CONNECTED = re.compile(
    r"New client connected from (?P<ip>[^ ]+?):\d+ as (?P<cid>\S+) \(p\d, c\d, k\d+, u'(?P<cn>[^']*)'\)"
)
# mosquitto line -> (AWS disconnectReason, clientInitiatedDisconnect)
_DISCONNECTED = (
    (re.compile(r"Client (?P<cid>\S+) disconnected\.$"), ("CLIENT_INITIATED_DISCONNECT", True)),
    (re.compile(r"Client (?P<cid>\S+) closed its connection\.$"), ("CONNECTION_LOST", False)),
    (re.compile(r"Client (?P<cid>\S+) has exceeded timeout"), ("MQTT_KEEP_ALIVE_TIMEOUT", False)),
    (re.compile(r"Client (?P<cid>\S+) already connected"), ("DUPLICATE_CLIENTID", False)),
    (re.compile(r"Client (?P<cid>\S+) disconnected: "), ("CLIENT_ERROR", False)),
    (re.compile(r"Socket error on client (?P<cid>\S+), disconnecting"), ("CONNECTION_LOST", False)),
)


class Lifecycle:
    """Turns broker log lines into lifecycle events (``feed(line)`` -> (topic, doc))."""

    def __init__(self, principal: Callable[[str], str]) -> None:
        self.principal = principal  # identity (certificate CN) -> principalIdentifier
        self.sessions: dict[str, tuple[str, str]] = {}  # clientId -> (session, principal)
        self.versions: dict[str, int] = {}

    def feed(self, line: str, now_ms: int | None = None) -> tuple[str, dict] | None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        m = _CONNECTED.search(line)
        if m:
            cid = m["cid"]
            sess = (uuid.uuid4().hex, self.principal(m["cn"]))
            self.sessions[cid] = sess
            v = self.versions[cid] = self.versions.get(cid, -1) + 1
            return f"$aws/events/presence/connected/{cid}", {
                "clientId": cid,
                "timestamp": now_ms,
                "eventType": "connected",
                "sessionIdentifier": sess[0],
                "principalIdentifier": sess[1],
                "ipAddress": m["ip"],
                "versionNumber": v,
            }
        for rx, (reason, by_client) in _DISCONNECTED:
            m = rx.search(line)
            if m and m["cid"] in self.sessions:
                cid = m["cid"]
                sess = self.sessions.pop(cid)
                return f"$aws/events/presence/disconnected/{cid}", {
                    "clientId": cid,
                    "timestamp": now_ms,
                    "eventType": "disconnected",
                    "sessionIdentifier": sess[0],
                    "principalIdentifier": sess[1],
                    "clientInitiatedDisconnect": by_client,
                    "disconnectReason": reason,
                    "versionNumber": self.versions.get(cid, 0),
                }
        return None


def registry_principal(registry: Path) -> Callable[[str], str]:
    """identity -> the certificate id registered for it in ``things.json`` (else the
    identity itself)."""

    def principal(cn: str) -> str:
        try:
            things = json.loads(registry.read_text()).get("things", {})
        except (OSError, ValueError):
            things = {}
        return (things.get(cn) or {}).get("fingerprint") or cn

    return principal


def follow(
    broker_log: Path, publish: Callable[[str, bytes], None], registry: Path, stop: threading.Event
) -> threading.Thread:
    """Follow ``broker_log`` from its current end in a thread; publish each event."""
    life = Lifecycle(registry_principal(registry))
    start = broker_log.stat().st_size if broker_log.exists() else 0  # before any later line

    def run() -> None:
        pos, part = start, b""
        while not stop.wait(0.1):
            try:
                size = broker_log.stat().st_size
                if size < pos:  # a new log file: start from its beginning
                    pos, part = 0, b""
                if size == pos:
                    continue
                with broker_log.open("rb") as f:
                    f.seek(pos)
                    data = f.read(size - pos)
                pos = size
            except OSError:
                continue
            *lines, part = (part + data).split(b"\n")
            for raw in lines:
                ev = life.feed(raw.decode(errors="replace").rstrip())
                if ev is not None:
                    try:
                        publish(ev[0], json.dumps(ev[1]).encode())
                    except Exception:
                        log.exception("lifecycle event not published")

    t = threading.Thread(target=run, daemon=True, name="lifecycle")
    t.start()
    return t
