"""The fleet's observer: counts what the kits publish, as seen at the broker.

A background process subscribed (operator identity, persistent session, QoS 1) to
``<prefix>/#`` on the bench. It keeps, per thing, the last live status (online/offline)
and the telemetry (boot, seq) pairs it has seen, and writes a summary to ``stats.json``
every second:

- online: things whose last live status message says ``online``;
- message rates over the last 30 s (telemetry, and every device message);
- loss: per (thing, boot), the sequence numbers missing below the highest seen
  (App #2 numbers its messages from 1 on each boot); duplicates, which QoS 1 allows.

The session is persistent, so messages published while the observer reconnects (a broker
restart) are queued for it by mosquitto and not counted as lost. Retained messages
replayed on subscribe are not events and are ignored.

    python -m host_tools.fleet_sim.observer --bench-root B --things T.json --out S.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from host_tools.bench import clients
from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN

RATE_WINDOW_S = 30.0


class FleetCounter:
    """What the observer knows; fed one message at a time, summarised on demand."""

    def __init__(self, things: list[str], prefix: str = "thingkit", interval_s: float = 10.0):
        self.things = set(things)
        self.prefix = prefix
        self.interval_s = interval_s
        self.started = time.time()
        self.status: dict[str, str] = {}
        self.seqs: dict[tuple[str, str], set[int]] = {}
        self.last_telemetry: dict[str, float] = {}
        self.telemetry_total = 0
        self.duplicates = 0
        self.messages_total = 0
        self.bad = 0
        self._tele_times: collections.deque[float] = collections.deque()
        self._all_times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def feed(self, topic: str, payload: bytes, retained: bool, t: float | None = None) -> None:
        """Count one message (``retained``: replayed on subscribe, not an event)."""
        if retained:
            return
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix or parts[1] not in self.things:
            return
        t = time.time() if t is None else t
        thing, kind = parts[1], parts[2]
        with self._lock:
            self.messages_total += 1
            self._all_times.append(t)
            if kind == "status":
                doc = _json(payload)
                if isinstance(doc, dict) and doc.get("state") in ("online", "offline"):
                    self.status[thing] = doc["state"]
            elif kind == "telemetry":
                doc = _json(payload)
                if not isinstance(doc, dict) or not isinstance(doc.get("seq"), int):
                    self.bad += 1
                    return
                self.telemetry_total += 1
                self._tele_times.append(t)
                self.last_telemetry[thing] = t
                seen = self.seqs.setdefault((thing, str(doc.get("boot"))), set())
                if doc["seq"] in seen:
                    self.duplicates += 1
                seen.add(doc["seq"])

    def summary(self, now: float | None = None) -> dict:
        """The figures ``thingkit fleet status`` reports."""
        now = time.time() if now is None else now
        with self._lock:
            for q in (self._tele_times, self._all_times):
                while q and q[0] < now - RATE_WINDOW_S:
                    q.popleft()
            window = min(RATE_WINDOW_S, max(now - self.started, self.interval_s))
            lost_by: dict[str, int] = {}
            for (thing, _boot), seen in self.seqs.items():
                missing = max(seen) - len(seen)
                if missing:
                    lost_by[thing] = lost_by.get(thing, 0) + missing
            silent = sorted(
                t
                for t in self.things
                if now - self.last_telemetry.get(t, self.started) > 3 * self.interval_s
            )
            return {
                "t": now,
                "started": self.started,
                "things": len(self.things),
                "online": sum(1 for s in self.status.values() if s == "online"),
                "reporting": len(self.last_telemetry),
                "silent": len(silent),
                "silent_things": silent[:10],
                "telemetry": {
                    "total": self.telemetry_total,
                    "unique": sum(len(s) for s in self.seqs.values()),
                    "duplicates": self.duplicates,
                    "lost": sum(lost_by.values()),
                    "lost_by_thing": dict(sorted(lost_by.items())[:20]),
                    "rate_per_s": round(len(self._tele_times) / window, 2),
                    "expected_per_s": round(len(self.things) / self.interval_s, 2),
                    "malformed": self.bad,
                },
                "messages": {
                    "total": self.messages_total,
                    "rate_per_s": round(len(self._all_times) / window, 2),
                },
            }


def _json(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _forget_session(bench: Bench, client_id: str) -> None:
    """Drop the persistent session at the broker (a clean connect with the same id)."""
    c = clients.make_client(bench.layout, OPERATOR_CN, client_id)
    try:
        clients.connect(c, bench.port, timeout=5)
        c.disconnect()
    except Exception as exc:  # noqa: BLE001 - the broker may be gone: nothing to clean then
        print(f"observer: session not dropped: {exc}", flush=True)
    c.loop_stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-root", type=Path, required=True)
    ap.add_argument("--things", type=Path, required=True, help="JSON list of thing names")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--client-id", required=True)
    args = ap.parse_args(argv)
    bench = Bench(args.bench_root)
    counter = FleetCounter(json.loads(args.things.read_text()), bench.topic_prefix, args.interval)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready = args.out.with_name("observer.ready")
    ready.unlink(missing_ok=True)
    client = clients.make_client(bench.layout, OPERATOR_CN, args.client_id, persistent=True)
    client.reconnect_delay_set(min_delay=1, max_delay=2)

    def on_connect(c: mqtt.Client, userdata: object, flags, rc, props) -> None:
        c.subscribe(f"{bench.topic_prefix}/#", qos=1)

    def on_subscribe(c: mqtt.Client, userdata: object, mid, codes, props) -> None:
        ready.write_text("ready\n")

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        counter.feed(msg.topic, bytes(msg.payload), bool(msg.retain))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    clients.connect(client, bench.port)
    while not stop.wait(1.0):
        write_json(args.out, counter.summary())
    client.disconnect()
    client.loop_stop()
    write_json(args.out, counter.summary())
    _forget_session(bench, args.client_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
