"""The operator's view of the bench: every message on the broker, and shadow reads.

Connects with the bench's operator identity (read-all), records each message with the
host time it arrived, and lets callers wait for one that matches::

    with Observer(bench) as obs:
        m = obs.wait(lambda m: m.topic == "thingkit/kit-1/status", timeout=10)
        doc = obs.shadow_get("kit-1")
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import paho.mqtt.client as mqtt

from host_tools.bench import clients
from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN


@dataclass(frozen=True)
class Message:
    t: float
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> object:
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def excerpt(self, n: int = 160) -> str:
        s = self.payload.decode(errors="replace")
        return s if len(s) <= n else s[: n - 3] + "..."


class Observer:
    """Record everything published on the bench broker."""

    def __init__(self, bench: Bench, client_id: str | None = None) -> None:
        self.bench = bench
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self.client = clients.make_client(
            bench.layout, OPERATOR_CN, client_id or f"operator-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # Subscribed on every connect: after a broker restart the observer is back, with
        # its subscriptions, within a second.
        self.client.reconnect_delay_set(0.1, 1)
        clients.connect_subscribed(
            self.client, self.bench.port, [("#", 1), ("$aws/#", 1)], 5, every_connect=True
        )

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        m = Message(time.time(), msg.topic, bytes(msg.payload), bool(msg.retain))
        with self._cond:
            self.messages.append(m)
            self._cond.notify_all()

    def find(self, pred: Callable[[Message], bool], since: float = 0.0) -> Message | None:
        with self._cond:
            for m in self.messages:
                if m.t >= since and pred(m):
                    return m
        return None

    def wait(
        self, pred: Callable[[Message], bool], timeout: float, since: float = 0.0
    ) -> Message | None:
        """The first message (arrived at or after ``since``) matching ``pred``, or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if m.t >= since and pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def publish(self, topic: str, payload: object, qos: int = 1, retain: bool = False) -> float:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        t = time.time()
        self.client.publish(topic, data, qos=qos, retain=retain).wait_for_publish(5)
        return t

    def shadow_request(
        self,
        thing: str,
        op: str,
        body: dict | None = None,
        shadow: str | None = None,
        timeout: float = 5.0,
    ) -> tuple[str, dict]:
        """Send a shadow request as the operator; return (reply suffix, document)."""
        base = f"$aws/things/{thing}/shadow/" + (f"name/{shadow}/" if shadow else "")
        token = uuid.uuid4().hex[:16]
        body = dict(body or {}, clientToken=token)
        since = self.publish(base + op, body)

        def mine(m: Message) -> bool:
            if not m.topic.startswith(base + op + "/"):
                return False
            d = m.json()
            return isinstance(d, dict) and d.get("clientToken") == token

        m = self.wait(mine, timeout, since=since - 0.001)
        if m is None:
            raise TimeoutError(f"no reply to shadow {op} of {thing}")
        return m.topic[len(base) :], m.json()  # type: ignore[return-value]

    def shadow_get(self, thing: str, shadow: str | None = None) -> dict | None:
        suffix, doc = self.shadow_request(thing, "get", shadow=shadow)
        if suffix == "get/accepted":
            return doc
        if doc.get("code") == 404:
            return None
        raise RuntimeError(f"shadow get rejected: {doc}")
