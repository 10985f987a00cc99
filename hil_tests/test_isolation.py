"""Least privilege on the bench (IoT Lens BP 1.2): a thing's certificate reaches only its
own topics, shadow and jobs."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest

from host_tools.bench import clients

pytestmark = pytest.mark.slow


def _client_as_kit(bench, kit, tmp_path) -> mqtt.Client:
    c = clients.device_client(
        bench.layout,
        (kit.flash / "certs/device.crt.der").read_bytes(),
        (kit.flash / "certs/device.key.der").read_bytes(),
        kit.thing,
        tmp_path,
    )
    got = threading.Event()
    c.on_connect = lambda *a: got.set()
    c.connect("127.0.0.1", bench.port)
    c.loop_start()
    assert got.wait(5)
    return c


def test_thing_cannot_reach_another_things_topics(bench, make_kit, observer, tmp_path):
    a, b = make_kit(bench), make_kit(bench)
    ca = _client_as_kit(bench, a, tmp_path)
    received = []
    ca.on_message = lambda c, u, m: received.append(m.topic)
    try:
        subs = [
            f"thingkit/{b.thing}/#",
            f"$aws/things/{b.thing}/shadow/#",
            f"$aws/things/{b.thing}/jobs/#",
            f"thingkit/{a.thing}/#",
        ]
        for s in subs:
            ca.subscribe(s, 1)
        time.sleep(0.3)
        t0 = time.time()
        forged = [
            f"thingkit/{b.thing}/status",
            f"$aws/things/{b.thing}/shadow/update",
            f"$aws/things/{b.thing}/jobs/start-next",
        ]
        for topic in forged:
            ca.publish(topic, b'{"state":{"reported":{"connected":true}}}', qos=1).wait_for_publish(
                3
            )
        # Positive control: the same certificate may use its own topic.
        ca.publish(f"thingkit/{a.thing}/status", b'{"state":"test"}', qos=1).wait_for_publish(3)
        own = observer.wait(lambda m: m.topic == f"thingkit/{a.thing}/status", 5, since=t0)
        assert own is not None, "positive control failed: the kit's own topic was refused"
        # Things published by the operator into B's topics must not reach A.
        observer.publish(f"thingkit/{b.thing}/ping", {"id": "x"})
        time.sleep(1.0)
        for topic in forged:
            assert observer.find(lambda m, t=topic: m.topic == t, since=t0) is None, topic
        assert observer.shadow_get(b.thing) is None, "A created B's shadow"
        assert all(t.startswith(f"thingkit/{a.thing}/") for t in received), received
    finally:
        ca.disconnect()
        ca.loop_stop()
