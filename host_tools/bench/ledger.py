"""A telemetry ledger: every App #2 message of one thing seen on the bench broker, by
(boot, seq), from a persistent-session subscriber that reconnects by itself, so a broker
restart loses nothing on the receiving side either.

Used by the HIL resilience tests and by ``thingkit validate`` (``lens.store_forward``)::

    with TelemetryLedger(bench, "kit-1") as led:
        ...
        assert led.wait_complete(boot, last_seq, 30) == []
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any, Self

import paho.mqtt.client as mqtt

from host_tools.bench import clients
from host_tools.bench.bench import Bench
from host_tools.bench.layout import OPERATOR_CN
from host_tools.bench.observer import Message


class TelemetryLedger:
    """Every App #2 message of ``thing`` seen on the broker, by (boot, seq).

    Subscribes at QoS 1 with a persistent session (clean_session=0) as the bench
    operator: while it is disconnected (broker restart) the broker keeps its
    subscription and queues what arrives, and the client reconnects within a second.
    """

    def __init__(self, bench: Bench, thing: str) -> None:
        self.bench = bench
        self.thing = thing
        self.topic = f"{bench.topic_prefix}/{thing}/telemetry"
        self.messages: list[Message] = []  # for the test's artifacts (messages.jsonl)
        self.seen: dict[str, Counter[int]] = {}  # boot -> seq -> times received
        self.order: list[tuple[str, int]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        cid = f"ledger-{uuid.uuid4().hex[:8]}"
        self.client = clients.make_client(bench.layout, OPERATOR_CN, cid, persistent=True)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self._subscribed.clear()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def __enter__(self) -> Self:
        clients.connect(self.client, self.bench.port)
        if not self.wait_subscribed(10):
            self.close()
            raise TimeoutError("telemetry ledger: no SUBACK")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the ledger is connected and subscribed (again, after a restart)."""
        return self._subscribed.wait(timeout)

    def _on_connect(self, c: mqtt.Client, userdata: object, *args: object) -> None:
        # The persistent session keeps the subscription; subscribing again is harmless
        # and tells us (SUBACK) that we are really back.
        c.subscribe(self.topic, qos=1)

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        m = Message(time.time(), msg.topic, bytes(msg.payload), bool(msg.retain))
        try:
            d = json.loads(m.payload)
            if "readings" not in d:
                raise KeyError("readings")  # not an App #2 reading
            key = (str(d["boot"]), int(d["seq"]))
        except (ValueError, KeyError, TypeError):
            key = None
        with self._cond:
            self.messages.append(m)
            if key is not None:
                self.seen.setdefault(key[0], Counter())[key[1]] += 1
                self.order.append(key)
            self._cond.notify_all()

    # -- questions -----------------------------------------------------------------------------
    def boots(self) -> list[str]:
        """Boot ids in the order their first message arrived."""
        with self._cond:
            out: list[str] = []
            for b, _ in self.order:
                if b not in out:
                    out.append(b)
            return out

    def last(self, boot: str) -> int:
        with self._cond:
            return max(self.seen.get(boot, {0: 0}))

    def missing(self, boot: str, last: int) -> list[int]:
        """Sequence numbers 1..``last`` of ``boot`` that never arrived."""
        with self._cond:
            got = self.seen.get(boot, Counter())
            return [s for s in range(1, last + 1) if s not in got]

    def duplicates(self) -> int:
        """Messages received more than once (at-least-once delivery allows them)."""
        with self._cond:
            return sum(n - 1 for c in self.seen.values() for n in c.values() if n > 1)

    def count(self) -> int:
        with self._cond:
            return len(self.order)

    def wait(self, pred: Any, timeout: float) -> bool:
        """Wait until ``pred(self)`` holds (checked on every message and every 0.5 s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wait_complete(self, boot: str, last: int, timeout: float) -> list[int]:
        """Wait until 1..``last`` of ``boot`` all arrived; return what is still missing."""
        self.wait(lambda s: not s.missing(boot, last), timeout)
        return self.missing(boot, last)
