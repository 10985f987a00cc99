"""The bench's AWS IoT lifecycle events, made from mosquitto's connection log lines
(host_tools/bench/lifecycle.py): what ``validate --cloud remote`` reads on any cloud."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from host_tools.bench.lifecycle import Lifecycle, follow

CONNECT = (
    "2026-12-03T12:00:00: New client connected from 127.0.0.1:40522 as kit-1 "
    "(p2, c1, k30, u'kit-1')."
)


def test_connected_then_lost_as_aws_documents_them() -> None:
    life = Lifecycle(lambda cn: {"kit-1": "f" * 64}.get(cn, cn))
    topic, doc = life.feed(CONNECT, now_ms=1000)
    assert topic == "$aws/events/presence/connected/kit-1"
    assert doc["eventType"] == "connected" and doc["clientId"] == "kit-1"
    assert doc["principalIdentifier"] == "f" * 64 and doc["ipAddress"] == "127.0.0.1"
    assert doc["timestamp"] == 1000 and doc["versionNumber"] == 0
    topic, gone = life.feed("2026-12-03T12:00:09: Client kit-1 closed its connection.", 2000)
    assert topic == "$aws/events/presence/disconnected/kit-1"
    assert gone["sessionIdentifier"] == doc["sessionIdentifier"]
    assert (gone["disconnectReason"], gone["clientInitiatedDisconnect"]) == (
        "CONNECTION_LOST",
        False,
    )
    # a second session: a new session id, the next version
    _, again = life.feed(CONNECT, 3000)
    assert again["versionNumber"] == 1 and again["sessionIdentifier"] != doc["sessionIdentifier"]
    _, bye = life.feed("2026-12-03T12:00:19: Client kit-1 disconnected.", 4000)
    assert (bye["disconnectReason"], bye["clientInitiatedDisconnect"]) == (
        "CLIENT_INITIATED_DISCONNECT",
        True,
    )


def test_other_lines_and_unknown_clients_make_no_event() -> None:
    life = Lifecycle(lambda cn: cn)
    assert life.feed("2026-12-03T12:00:00: Client kit-9 closed its connection.") is None
    assert life.feed("2026-12-03T12:00:00: Sending PUBLISH to kit-1 (d0, q1, r0)") is None
    _, doc = life.feed(CONNECT)
    assert doc["principalIdentifier"] == "kit-1"  # not registered: the identity itself


def test_follow_publishes_lines_appended_to_the_log(tmp_path: Path) -> None:
    log, reg = tmp_path / "broker.log", tmp_path / "things.json"
    log.write_text("old line\n" + CONNECT + "\n")  # before follow starts: not replayed
    reg.write_text(json.dumps({"things": {"kit-1": {"fingerprint": "ab" * 32}}}))
    got: list[tuple[str, dict]] = []
    stop = threading.Event()
    t = follow(log, lambda topic, p: got.append((topic, json.loads(p))), reg, stop)
    try:
        with log.open("a") as f:
            f.write(CONNECT + "\n2026-12-03T12:00:05: Client kit-1 has exceeded ")
            f.flush()
            f.write("timeout, disconnecting.\n")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(5)
    assert [x[0] for x in got] == [
        "$aws/events/presence/connected/kit-1",
        "$aws/events/presence/disconnected/kit-1",
    ]
    assert got[0][1]["principalIdentifier"] == "ab" * 32
    assert got[1][1]["disconnectReason"] == "MQTT_KEEP_ALIVE_TIMEOUT"
